"""The readiness gate: an instance is ready only when it lists the model AND generates a token,
and then serves every request shape its users will send without dying.

A port that accepts connections, or even ``/health``, goes green before the model can serve
(seed 000: probes sent traffic to half-started instances). We ask for one real token instead.

One token is not enough either. vLLM's CPU build compiles kernels with torch inductor while it serves,
even under ``--enforce-eager``: a request that asks for logprobs runs a ``torch.compile``d sampler op,
and on a host without a C++ compiler that request kills the engine (InvalidCxxCompiler), after a
one-token probe had passed. So once the probe passes, ``exercise`` sends each shape of request the
service will see (chat and plain completions, streamed and not, sampled, with logprobs and with the
``prompt_logprobs`` the golden check sends; for embeddings one input, a batch and base64), and
``confirm_alive`` checks afterwards that the same process still answers.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmfleet.errors import NotReadyError


@dataclass(frozen=True)
class Probe:
    ok: bool
    reason: str


def _get_json(url: str, timeout: float) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def _post_json(url: str, body: dict[str, object], timeout: float) -> object:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.load(resp)


def probe_instance(base_url: str, model: str, task: str = "chat", timeout: float = 30.0) -> Probe:
    """One check: /v1/models lists ``model``, and it does its job once: a one-token completion returns
    a token (chat), or an input returns a vector (embedding)."""
    try:
        listed = _get_json(f"{base_url}/v1/models", timeout)
        ids = [m.get("id") for m in listed.get("data", [])] if isinstance(listed, dict) else []
        if model not in ids:
            return Probe(False, f"/v1/models lists {ids}, not {model!r}")
        if task == "embedding":
            done = _post_json(f"{base_url}/v1/embeddings", {"model": model, "input": "Hello"}, timeout)
            data = done.get("data", []) if isinstance(done, dict) else []
            if not data or not data[0].get("embedding"):
                return Probe(False, f"embedding returned no vector: {json.dumps(done)[:300]}")
            dims = len(data[0]["embedding"])
            return Probe(True, f"lists the model and returned a {dims}-dimensional vector")
        done = _post_json(
            f"{base_url}/v1/completions",
            {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0},
            timeout,
        )
        usage = done.get("usage", {}) if isinstance(done, dict) else {}
        if not usage.get("completion_tokens"):
            return Probe(False, f"completion returned no token: {json.dumps(done)[:300]}")
        return Probe(True, "lists the model and generated a token")
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError, OSError) as exc:
        return Probe(False, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")


@dataclass(frozen=True)
class Shape:
    """One kind of request the service will see, and what its answer must carry."""

    name: str
    path: str
    body: dict[str, object]
    stream: bool = False
    # The choice must carry logprobs, or the reply prompt_logprobs: a server that dropped the option
    # would not have run the code path this shape is here to run.
    wants: str = ""


_PROMPT = "The capital of France is"
_MESSAGES = [{"role": "user", "content": "Say hello."}]


def request_shapes(model: str, task: str = "chat") -> list[Shape]:
    """The requests the gate sends once the probe passes: each path a client can take through vLLM."""
    if task == "embedding":
        return [
            Shape("embedding of one input", "/v1/embeddings", {"model": model, "input": "Hello"}),
            Shape(
                "embeddings of a batch", "/v1/embeddings",
                {"model": model, "input": ["Hello", "Bonjour", "Hallo"]},
            ),
            Shape(
                "embedding as base64", "/v1/embeddings",
                {"model": model, "input": "Hello", "encoding_format": "base64"},
            ),
        ]  # fmt: skip
    chat = {"model": model, "messages": _MESSAGES, "max_tokens": 4, "temperature": 0}
    plain = {"model": model, "prompt": _PROMPT, "max_tokens": 4, "temperature": 0}
    sampled = {"temperature": 0.8, "top_p": 0.9, "top_k": 20, "seed": 1}
    usage = {"stream": True, "stream_options": {"include_usage": True}}
    return [
        Shape("chat completion", "/v1/chat/completions", chat),
        Shape("chat completion, streamed", "/v1/chat/completions", {**chat, **usage}, stream=True),
        Shape(
            "chat completion, sampled, with logprobs", "/v1/chat/completions",
            {**chat, **sampled, "logprobs": True, "top_logprobs": 2}, wants="logprobs",
        ),
        Shape("completion", "/v1/completions", plain),
        Shape("completion, streamed", "/v1/completions", {**plain, **usage}, stream=True),
        Shape(
            "completion, sampled, with logprobs", "/v1/completions",
            {**plain, **sampled, "logprobs": 2}, wants="logprobs",
        ),
        # What the golden check sends when vLLM's greedy tokens part from the reference's.
        Shape(
            "completion with prompt_logprobs", "/v1/completions",
            {**plain, "max_tokens": 1, "prompt_logprobs": 1}, wants="prompt_logprobs",
        ),
    ]  # fmt: skip


def _post_stream(url: str, body: dict[str, object], timeout: float) -> list[dict[str, object]]:
    """The events of a server-sent event stream, which must end with ``[DONE]``."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    events: list[dict[str, object]] = []
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        for raw in resp:
            line = raw.decode(errors="replace").strip()
            if not line.startswith("data:"):
                continue
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                return events
            event = json.loads(data)
            if isinstance(event, dict) and "error" in event:
                raise ValueError(f"the stream carried an error: {json.dumps(event)[:300]}")
            events.append(event)
    raise ValueError(f"the stream ended after {len(events)} events without [DONE]")


def _judge(shape: Shape, reply: object) -> str:
    """Why ``reply`` is not a proper answer to ``shape``, or "" when it is."""
    if shape.stream:
        chunks = reply if isinstance(reply, list) else []
        if not any(isinstance(c, dict) and c.get("choices") for c in chunks):
            return f"the stream carried no choice ({len(chunks)} events)"
        if not any(isinstance(c, dict) and (c.get("usage") or {}).get("completion_tokens") for c in chunks):
            return "the stream reported no completion tokens in its usage"
        return ""
    if not isinstance(reply, dict):
        return f"answered {str(reply)[:200]}"
    if shape.path == "/v1/embeddings":
        inputs = shape.body["input"]
        data = reply.get("data") or []
        if len(data) != (len(inputs) if isinstance(inputs, list) else 1) or not all(
            d.get("embedding") for d in data
        ):
            return f"expected one vector per input: {json.dumps(reply)[:300]}"
        return ""
    choices = reply.get("choices") or []
    if not choices or not (reply.get("usage") or {}).get("completion_tokens"):
        return f"no choice or no completion tokens: {json.dumps(reply)[:300]}"
    if shape.wants == "logprobs" and not choices[0].get("logprobs"):
        return "the choice carries no logprobs"
    if shape.wants == "prompt_logprobs" and not (
        reply.get("prompt_logprobs") or choices[0].get("prompt_logprobs")
    ):
        return "the reply carries no prompt_logprobs"
    return ""


def exercise(
    base_url: str, model: str, task: str = "chat", timeout: float = 300.0, log_file: Path | None = None
) -> list[dict[str, object]]:
    """Send every shape of ``request_shapes`` once; return each one's name and seconds.

    The first shape that fails stops the gate: NotReadyError names it, what came back, and the log's
    error lines. The timeout is per request and generous: the first request of a shape may compile a
    kernel, which takes tens of seconds on a small CPU.
    """
    done: list[dict[str, object]] = []
    for shape in request_shapes(model, task):
        started = time.monotonic()
        try:
            url = f"{base_url}{shape.path}"
            reply = (
                _post_stream(url, shape.body, timeout)
                if shape.stream
                else _post_json(url, shape.body, timeout)
            )
            wrong = _judge(shape, reply)
        except urllib.error.HTTPError as exc:
            wrong = f"HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError, OSError) as exc:
            wrong = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if wrong:
            raise NotReadyError(
                f"{base_url} ({model!r}) passed its first probe but failed a {shape.name} request "
                f"(POST {shape.path}): {wrong}{_log_tail(log_file)}"
            )
        done.append({"shape": shape.name, "seconds": round(time.monotonic() - started, 2)})
    return done


def confirm_alive(
    base_url: str,
    model: str,
    task: str,
    pid_before: int | None,
    main_pid: Callable[[], int | None] | None = None,
    log_file: Path | None = None,
    probe: Callable[[str, str, str], Probe] = probe_instance,
) -> None:
    """After the gate's requests: the same process still runs (its supervisor did not restart it), and
    it still answers. An engine that died on one of them may have answered that request first."""
    pid_after = main_pid() if main_pid is not None else None
    if pid_before is not None and pid_after != pid_before:
        raise NotReadyError(
            f"{base_url} ({model!r}) answered the gate's requests but its process changed "
            f"(pid {pid_before}, now {pid_after or 'none'}): it died while serving them{_log_tail(log_file)}"
        )
    last = probe(base_url, model, task)
    if not last.ok:
        raise NotReadyError(
            f"{base_url} ({model!r}) stopped answering after the gate's requests: {last.reason}"
            f"{_log_tail(log_file)}"
        )


def wait_ready(
    base_url: str,
    model: str,
    timeout_s: float,
    task: str = "chat",
    interval_s: float = 2.0,
    log_file: Path | None = None,
    probe: Callable[[str, str, str], Probe] = probe_instance,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    main_pid: Callable[[], int | None] | None = None,
    max_restarts: int = 2,
) -> float:
    """Poll until ready; return the seconds it took. Raise NotReadyError with the log's tail otherwise.

    With ``main_pid`` (the service manager's view of the instance), an instance that its supervisor
    restarts more than ``max_restarts`` times while starting is crash-looping: stop at once rather
    than wait out the whole timeout.
    """
    start = clock()
    last = Probe(False, "not probed")
    pids: list[int] = []
    while clock() - start < timeout_s:
        last = probe(base_url, model, task)
        if last.ok:
            return clock() - start
        pid = main_pid() if main_pid is not None else None
        if pid is not None and pid not in pids:
            pids.append(pid)
        if len(pids) > max_restarts + 1:
            raise NotReadyError(
                f"{base_url} ({model!r}) is crash-looping: its supervisor restarted it {len(pids) - 1} times "
                f"while it was starting; last probe: {last.reason}{_log_tail(log_file)}"
            )
        sleep(interval_s)
    waited = f"{base_url} did not become ready for {model!r} in {timeout_s:.0f} s"
    raise NotReadyError(f"{waited}: {last.reason}{_log_tail(log_file)}")


# vLLM's processes prefix each line: "(EngineCore pid=21309) ERROR 12-03 17:06:22 [core.py:1512] ".
_VLLM_PREFIX = re.compile(r"^\(\w+ pid=\d+\)\s+(?:[A-Z]+\s+\d\d-\d\d \d\d:\d\d:\d\d \[[^\]]*\]\s?)?")


def _log_tail(log_file: Path | None, lines: int = 40) -> str:
    """The errors the instance's log names, then its end without traceback frames, so the error itself
    shows even when shutdown noise follows it."""
    if log_file is None or not log_file.exists():
        return ""
    text = [_VLLM_PREFIX.sub("", line) for line in log_file.read_text(errors="replace").splitlines()]
    useful = [line for line in text if line.strip() and not line.lstrip().startswith(("File ", "^", "~"))]
    # Only the recent part: instance logs are appended across restarts, and an error of an earlier run
    # must not be named as this one's.
    recent = useful[-_ERROR_SCAN_LINES:]
    errors = list(dict.fromkeys(line.strip() for line in recent if _ERROR_LINE.match(line.strip())))
    named = "".join(f"\n  {line[:300]}" for line in errors[-3:])
    head = f"\nerrors in {log_file}:{named}" if named else ""
    return f"{head}\nlast lines of {log_file}:\n" + "\n".join(useful[-lines:])


# A Python exception's own line: "RuntimeError: Worker failed ...", "torch._inductor.exc.InductorError: ...".
_ERROR_LINE = re.compile(r"^[\w.]*(?:Error|Exception)\b: ")
# How far back from the log's end errors are looked for (one crash's traceback and shutdown fit).
_ERROR_SCAN_LINES = 400
