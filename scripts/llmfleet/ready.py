"""The readiness gate: an instance is ready only when it lists the model AND generates a token.

A port that accepts connections, or even ``/health``, goes green before the model can serve
(seed 000: probes sent traffic to half-started instances). We ask for one real token instead.
"""

from __future__ import annotations

import json
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


def _log_tail(log_file: Path | None, lines: int = 40) -> str:
    """The end of the instance's log without traceback frames, so the error itself shows."""
    if log_file is None or not log_file.exists():
        return ""
    text = log_file.read_text(errors="replace").splitlines()
    useful = [line for line in text if not line.lstrip().startswith(("File ", "^", "~"))]
    return f"\nlast lines of {log_file}:\n" + "\n".join(useful[-lines:])
