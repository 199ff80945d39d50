from __future__ import annotations

import importlib.util
import io
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from llmfleet.deploy.ready import Probe, confirm_alive, exercise, probe_instance, request_shapes, wait_ready
from llmfleet.errors import NotReadyError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_ready_after_some_failures():
    clock = FakeClock()
    answers = iter([Probe(False, "starting"), Probe(False, "starting"), Probe(True, "ok")])
    took = wait_ready(
        "http://x",
        "m",
        60,
        interval_s=2,
        probe=lambda _u, _m, _t: next(answers),
        clock=clock,
        sleep=clock.sleep,
    )
    assert took == 4


def test_not_ready_reports_the_last_reason_and_the_log_tail(tmp_path):
    log = tmp_path / "vllm.log"
    log.write_text("\n".join(f"line {i}" for i in range(100)) + "\nRuntimeError: out of memory\n")
    clock = FakeClock()
    with pytest.raises(NotReadyError) as err:
        wait_ready(
            "http://x",
            "m",
            10,
            interval_s=2,
            log_file=log,
            probe=lambda _u, _m, _t: Probe(False, "connection refused"),
            clock=clock,
            sleep=clock.sleep,
        )
    message = str(err.value)
    assert "connection refused" in message
    assert "RuntimeError: out of memory" in message
    assert "line 50" not in message


class _Half(BaseHTTPRequestHandler):
    """Lists the model, but completions fail: a server that is up but cannot serve yet."""

    complete = False

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"data": [{"id": "m"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).complete:
            self._send(200, {"usage": {"completion_tokens": 1}})
        else:
            self._send(503, {"error": "loading"})


def test_probe_needs_a_token_not_just_a_listing():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Half)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert not probe_instance(url, "m", timeout=5).ok
        assert "not 'other'" in probe_instance(url, "other", timeout=5).reason
        _Half.complete = True
        assert probe_instance(url, "m", timeout=5).ok
    finally:
        _Half.complete = False
        server.shutdown()


def test_a_crash_loop_stops_the_gate_early_with_the_error_not_the_traceback(tmp_path):
    log = tmp_path / "vllm.log"
    log.write_text(
        "INFO starting\n"
        "Traceback (most recent call last):\n"
        '  File "/x/vllm/worker.py", line 1, in main\n'
        "    ^^^^^^^^\n"
        "ImportError: libnuma.so.1: cannot open shared object file\n"
    )
    clock = FakeClock()
    pids = iter([101, 101, 102, 102, 103, 104, 105])
    with pytest.raises(NotReadyError) as err:
        wait_ready("http://x", "m", 900, interval_s=2, log_file=log, probe=lambda *_: Probe(False, "refused"),
                   clock=clock, sleep=clock.sleep, main_pid=lambda: next(pids), max_restarts=2)  # fmt: skip
    message = str(err.value)
    assert "crash-looping" in message
    assert "restarted it 3 times" in message
    assert clock.now < 60, "the gate should stop long before its timeout"
    assert "libnuma.so.1" in message
    assert 'File "/x/vllm/worker.py"' not in message


def test_one_restart_while_starting_is_tolerated():
    clock = FakeClock()
    pids = iter([101, 102, 102])
    answers = iter([Probe(False, "starting"), Probe(False, "starting"), Probe(True, "ok")])
    took = wait_ready("http://x", "m", 900, interval_s=2, probe=lambda *_: next(answers),
                      clock=clock, sleep=clock.sleep, main_pid=lambda: next(pids))  # fmt: skip
    assert took == 4


# --- the request shapes the gate sends once the probe passes ------------------------------------------

_BACKEND = Path(__file__).parent / "backends" / "fake_openai_backend.py"
_spec = importlib.util.spec_from_file_location("fake_openai_backend", _BACKEND)
fake_backend = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_backend)


class _Breaking(fake_backend.FakeOpenAIHandler):
    """The stdlib backend, except that a request matching ``breaks`` gets what vLLM's API server
    answered when its engine died compiling the logprobs kernel: HTTP 500."""

    model = "m"
    backend_id = "m-0"
    chunks = 2
    chunk_seconds = 0.0
    breaks: ClassVar[Callable[[str, dict], bool]] = staticmethod(lambda path, body: False)
    drops: ClassVar[str] = ""  # a field the server leaves out of its answers

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        body = json.loads(raw)
        if type(self).breaks(self.path, body):
            self._send_json(500, {"error": {"message": "EngineCore encountered an issue", "code": 500}})
            return
        if type(self).drops:
            body.pop(type(self).drops, None)
        self.rfile = io.BytesIO(json.dumps(body).encode())
        self.headers.replace_header("Content-Length", str(len(json.dumps(body))))
        super().do_POST()


@pytest.fixture
def backend(serve):
    handler = type("Configured", (_Breaking,), {})
    return handler, serve(handler)


def test_the_gate_sends_every_chat_shape_and_each_must_be_answered(backend):
    _, url = backend
    done = exercise(url, "m", "chat", timeout=10)
    names = [d["shape"] for d in done]
    assert names == [s.name for s in request_shapes("m", "chat")]
    bodies = [s.body for s in request_shapes("m", "chat")]
    assert any(b.get("stream") for b in bodies if "messages" in b)
    assert any(b.get("stream") for b in bodies if "prompt" in b)
    assert any(b.get("logprobs") for b in bodies if "messages" in b)
    assert any(b.get("logprobs") for b in bodies if "prompt" in b)
    assert any(b.get("prompt_logprobs") for b in bodies), "the golden check's teacher-forcing request"
    assert any(b.get("temperature", 0) > 0 for b in bodies), "a sampled request, not only greedy ones"


def test_embedding_shapes_want_one_vector_per_input(backend):
    _, url = backend
    done = exercise(url, "m", "embedding", timeout=10)
    assert [d["shape"] for d in done] == [
        "embedding of one input",
        "embeddings of a batch",
        "embedding as base64",
    ]


def test_an_instance_that_dies_on_a_logprobs_request_fails_the_gate_naming_the_shape(backend, tmp_path):
    handler, url = backend
    handler.breaks = staticmethod(lambda path, body: bool(body.get("logprobs")))
    log = tmp_path / "vllm.log"
    log.write_text(
        "Traceback (most recent call last):\n"
        '  File "/x/torch/_inductor/cpp_builder.py", line 1, in get_cpp_compiler\n'
        "torch._inductor.exc.InductorError: InvalidCxxCompiler: No working C++ compiler found\n"
    )
    with pytest.raises(NotReadyError) as err:
        exercise(url, "m", "chat", timeout=10, log_file=log)
    message = str(err.value)
    assert "chat completion, sampled, with logprobs" in message
    assert "HTTP 500" in message
    assert "InvalidCxxCompiler" in message
    assert "cpp_builder.py" not in message


def test_an_instance_that_ignores_logprobs_does_not_pass_for_one_that_serves_them(backend):
    handler, url = backend
    handler.drops = "logprobs"
    with pytest.raises(NotReadyError, match="carries no logprobs"):
        exercise(url, "m", "chat", timeout=10)


def test_a_stream_that_ends_without_done_fails_the_gate(backend, monkeypatch):
    _, url = backend
    real = fake_backend.FakeOpenAIHandler._write_chunk

    def cut(self, data: bytes) -> None:
        if data != b"data: [DONE]\n\n":
            real(self, data)

    monkeypatch.setattr(fake_backend.FakeOpenAIHandler, "_write_chunk", cut)
    with pytest.raises(NotReadyError, match=r"chat completion, streamed .*without \[DONE\]"):
        exercise(url, "m", "chat", timeout=10)


def test_confirm_alive_refuses_an_instance_whose_process_changed_during_the_gate(tmp_path):
    ok = lambda *_: Probe(True, "ok")  # noqa: E731
    confirm_alive("http://x", "m", "chat", 101, main_pid=lambda: 101, probe=ok)
    with pytest.raises(NotReadyError, match=r"process changed \(pid 101, now 102\)"):
        confirm_alive("http://x", "m", "chat", 101, main_pid=lambda: 102, probe=ok)
    with pytest.raises(NotReadyError, match="stopped answering"):
        confirm_alive("http://x", "m", "chat", None, probe=lambda *_: Probe(False, "refused"))


def test_llmfleet_ready_reports_each_shape_and_first_token_only_skips_them(backend, capsys):
    from llmfleet.cli import main

    _, url = backend
    assert main(["ready", "--url", url, "--model", "m", "--timeout", "10"]) == 0
    shapes = json.loads(capsys.readouterr().out)["shapes"]
    assert [s["shape"] for s in shapes] == [s.name for s in request_shapes("m", "chat")]
    assert main(["ready", "--url", url, "--model", "m", "--timeout", "10", "--first-token-only"]) == 0
    assert "shapes" not in json.loads(capsys.readouterr().out)


def test_the_log_tail_names_recent_errors_not_those_of_an_earlier_run(tmp_path):
    from llmfleet.deploy.ready import _log_tail

    log = tmp_path / "vllm.log"
    old = "ImportError: libnuma.so.1: cannot open shared object file"
    noise = "\n".join(f"INFO serving request {i}" for i in range(1000))
    log.write_text(f"{old}\n{noise}\nRuntimeError: Worker failed with error 'InvalidCxxCompiler'\n")
    errors = _log_tail(log).split("last lines of")[0]
    assert "InvalidCxxCompiler" in errors
    assert "libnuma" not in errors
