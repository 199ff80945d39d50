"""The load generator: streamed OpenAI requests at a fixed concurrency, bounded in count and time.

Each step sends ``requests`` requests with at most ``concurrency`` in flight (a closed loop, like
``vllm bench serve --max-concurrency`` at an infinite request rate). Token counts come from the server's
``usage`` (vLLM streams it; this project runs vLLM with --enable-force-include-usage), never from the text.
A step stops launching requests at its deadline and cancels what is still in flight; those requests are
counted as errors ("cancelled at the step deadline"), so a bound never hides as a fast result.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx

from llmfleet.bench.errors import BenchError
from llmfleet.bench.metrics import RequestResult

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def check_loopback(base_url: str) -> None:
    """Load tests go to loopback only (field notes, "Load tests")."""
    host = urlparse(base_url).hostname or ""
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise BenchError(
            f"refusing to load-test {base_url}: only loopback targets "
            "(127.0.0.0/8, localhost, ::1) are allowed"
        )


@dataclass(frozen=True)
class Target:
    base_url: str  # ends in /v1
    model: str
    api: str = "completions"
    api_key: str | None = None

    @property
    def url(self) -> str:
        path = "chat/completions" if self.api == "chat" else "completions"
        return f"{self.base_url.rstrip('/')}/{path}"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def payload(
        self, prompt: str, max_tokens: int, ignore_eos: bool, temperature: float
    ) -> dict[str, object]:
        body: dict[str, object] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if ignore_eos:
            body["ignore_eos"] = True
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body


def _carries_tokens(choice: dict[str, object]) -> bool:
    """A chunk carries generated tokens if it has completion text or chat content (even empty text:
    a special token decodes to ""). The chat API's first chunk carries none: vLLM sends it with the
    role and an empty content (``{"role": "assistant", "content": ""}``) before any token."""
    if "text" in choice:
        return choice["text"] is not None
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return False
    if "role" in delta and not delta.get("content") and not delta.get("reasoning_content"):
        return False
    return delta.get("content") is not None or delta.get("reasoning_content") is not None


async def one_request(
    client: httpx.AsyncClient, target: Target, body: dict[str, object], timeout: float, t0: float
) -> RequestResult:
    """Send one streamed request; time every token-carrying chunk."""
    start = time.perf_counter()
    result = RequestResult(ok=False, start=start - t0)
    last = start
    try:
        async with client.stream(
            "POST", target.url, json=body, headers=target.headers(), timeout=timeout
        ) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:300]
                result.error = f"HTTP {response.status_code}: {text}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                now = time.perf_counter()
                choices = event.get("choices") or []
                if choices and _carries_tokens(choices[0]):
                    if result.ttft is None:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
                usage = event.get("usage")
                if usage:
                    result.prompt_tokens = usage.get("prompt_tokens")
                    result.output_tokens = usage.get("completion_tokens")
                if "error" in event:
                    result.error = f"stream error: {json.dumps(event['error'])[:300]}"
                    return result
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
        return result
    if result.ttft is None:
        result.error = "the stream carried no tokens"
        return result
    if result.output_tokens is None:
        result.error = "the stream carried no usage (is vLLM run with --enable-force-include-usage?)"
        return result
    result.latency = last - start
    result.ok = True
    return result


Progress = Callable[[int, int, int], None]  # done, total, errors


def stderr_progress(label: str) -> Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, every 10% otherwise)."""
    tty = sys.stderr.isatty()
    shown = {"last": -1}

    def update(done: int, total: int, errors: int) -> None:
        width = 24
        filled = width * done // max(total, 1)
        line = f"{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} errors {errors}"
        if tty:
            sys.stderr.write("\r" + line + ("\n" if done == total else ""))
            sys.stderr.flush()
        elif done == total or 10 * done // max(total, 1) != shown["last"]:
            shown["last"] = 10 * done // max(total, 1)
            sys.stderr.write(line + "\n")

    return update


async def run_step(
    target: Target,
    prompts: list[str],
    output_tokens: int,
    concurrency: int,
    *,
    ignore_eos: bool = True,
    temperature: float = 0.0,
    request_timeout_s: float = 300.0,
    step_timeout_s: float = 600.0,
    progress: Progress | None = None,
) -> tuple[list[RequestResult], float]:
    """Send one request per prompt, ``concurrency`` at a time. Returns the results and the step's wall
    time."""
    check_loopback(target.base_url)
    total = len(prompts)
    results: list[RequestResult | None] = [None] * total
    queue = list(range(total))
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=request_timeout_s, trust_env=False) as client:
        t0 = time.perf_counter()
        deadline = t0 + step_timeout_s

        async def worker() -> None:
            nonlocal errors
            while queue and time.perf_counter() < deadline:
                index = queue.pop(0)
                body = target.payload(prompts[index], output_tokens, ignore_eos, temperature)
                result = await one_request(client, target, body, request_timeout_s, t0)
                results[index] = result
                errors += not result.ok
                if progress:
                    progress(sum(r is not None for r in results), total, errors)

        tasks = [asyncio.create_task(worker()) for _ in range(min(concurrency, total))]
        _done, pending = await asyncio.wait(tasks, timeout=max(deadline - time.perf_counter(), 0.001))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        duration = time.perf_counter() - t0
    out = []
    for result in results:
        if result is None:
            result = RequestResult(ok=False, error=f"cancelled at the step deadline ({step_timeout_s:g} s)")
        out.append(result)
    return out, duration
