from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmfleet.errors import NotReadyError
from llmfleet.ready import Probe, probe_instance, wait_ready


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
