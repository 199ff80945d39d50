"""The load generator against the stdlib fake backend (tests/backends/fake_openai_backend.py).

The fake streams N chunks with a fixed pause between them and reports usage. The checks are on structure
and counts (every request measured once, N-1 gaps, tokens from usage, errors and deadlines counted), plus
lower bounds that causality guarantees however loaded the machine is: a stream whose server slept 4 x 20
ms between chunks cannot have finished in less than 80 ms. No upper bound on any time is asserted.
With --vllm-chunks the fake streams as vLLM 0.32 does with --enable-force-include-usage (a role-only
first chat chunk whose content is "", usage in every chunk, a usage-only last chunk); the load
generator must time the first chunk with content as the first token and take the tokens from the last
usage.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from llmfleet.bench.errors import BenchError
from llmfleet.bench.loadgen import Target, check_loopback, run_step
from llmfleet.bench.metrics import summarize

FAKE_BACKEND = Path(__file__).parent / "backends" / "fake_openai_backend.py"
CHUNKS, CHUNK_MS = 5, 20


def start_fake(chunks: int, chunk_ms: int, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, str(FAKE_BACKEND), "--model", "fake-model", "--backend-id", "b1",
         "--chunks", str(chunks), "--chunk-ms", str(chunk_ms), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["port"]
    return proc, port


@pytest.fixture(scope="module")
def fake_url():
    proc, port = start_fake(CHUNKS, CHUNK_MS)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_every_request_is_measured_with_tokens_from_usage(fake_url, api):
    target = Target(base_url=fake_url, model="fake-model", api=api, api_key="sk-test")
    prompts = [f"prompt {i}" for i in range(7)]
    results, duration = asyncio.run(run_step(target, prompts, CHUNKS, concurrency=3, step_timeout_s=120))
    assert len(results) == 7
    assert all(r.ok for r in results), [r.error for r in results]
    for r in results:
        assert r.output_tokens == CHUNKS  # the usage the fake reports, not a count of chunks
        assert r.prompt_tokens and r.prompt_tokens > 0
        assert len(r.itl) == CHUNKS - 1  # one gap between each two token-carrying chunks
        assert r.ttft is not None and r.latency is not None
        assert r.latency == pytest.approx(r.ttft + sum(r.itl))
        assert r.latency >= (CHUNKS - 1) * CHUNK_MS / 1000  # causality: the server slept that long
        assert 0 <= r.start <= duration
    m = summarize(results, duration)
    assert (m["completed"], m["errors"], m["total_output_tokens"]) == (7, 0, 7 * CHUNKS)
    assert m["mean_tpot_ms"] is not None and m["mean_itl_ms"] is not None
    assert duration >= 3 * (CHUNKS - 1) * CHUNK_MS / 1000  # 7 requests, 3 at a time: 3 rounds at least


@pytest.fixture(scope="module")
def vllm_fake_url():
    """The fake streaming as vLLM 0.32 does with --enable-force-include-usage (--vllm-chunks)."""
    proc, port = start_fake(CHUNKS, CHUNK_MS, "--vllm-chunks")
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=10)


def stream_events(url: str, body: dict[str, object]) -> list[dict[str, object]]:
    events = []
    with httpx.stream("POST", url, json=body, timeout=60, trust_env=False) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                events.append(json.loads(line[5:]))
    return events


def test_the_vllm_shaped_fake_opens_with_the_role_only_chunk_and_puts_usage_in_every_chunk(vllm_fake_url):
    # The premise of the test below: what vLLM's chat stream looks like, checked on the fake itself.
    body = Target(base_url=vllm_fake_url, model="fake-model", api="chat").payload("hi", CHUNKS, True, 0.0)
    events = stream_events(f"{vllm_fake_url}/chat/completions", body)
    assert len(events) == 1 + CHUNKS + 1  # the role chunk, one per token, the usage-only chunk
    assert events[0]["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    assert [e["usage"]["completion_tokens"] for e in events] == [0, *range(1, CHUNKS + 1), CHUNKS]
    assert all(e["choices"][0]["delta"]["content"] for e in events[1:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "length" and events[-1]["choices"] == []


@pytest.mark.parametrize(
    "api",
    ["chat", "completions"],
)
def test_a_vllm_shaped_stream_is_timed_from_its_first_content_chunk_with_tokens_from_the_last_usage(
    vllm_fake_url, api
):
    target = Target(base_url=vllm_fake_url, model="fake-model", api=api, api_key="sk-test")
    prompts = [f"prompt {i}" for i in range(4)]
    results, duration = asyncio.run(run_step(target, prompts, CHUNKS, concurrency=2, step_timeout_s=120))
    assert len(results) == 4
    assert all(r.ok for r in results), [r.error for r in results]
    for r in results:
        # The last usage (the usage-only chunk), not a running count from an earlier chunk.
        assert r.output_tokens == CHUNKS
        assert r.prompt_tokens and r.prompt_tokens > 0
        # Gaps between the CHUNKS content chunks only: the role chunk is not a token.
        assert len(r.itl) == CHUNKS - 1
        assert r.ttft is not None and r.latency is not None
        assert r.latency == pytest.approx(r.ttft + sum(r.itl))
        if api == "chat":
            # Causality: the fake sent the role chunk at once and the first content one pause later.
            assert r.ttft >= CHUNK_MS / 1000
            assert r.latency >= CHUNKS * CHUNK_MS / 1000
        else:
            assert r.latency >= (CHUNKS - 1) * CHUNK_MS / 1000
    m = summarize(results, duration)
    assert (m["completed"], m["errors"], m["total_output_tokens"]) == (4, 0, 4 * CHUNKS)


def test_http_errors_are_counted_with_their_status(fake_url):
    target = Target(base_url=fake_url, model="not-served", api="chat")
    results, _ = asyncio.run(run_step(target, ["a", "b"], 4, concurrency=2, step_timeout_s=60))
    assert [r.ok for r in results] == [False, False]
    assert all(r.error and r.error.startswith("HTTP 404") for r in results)
    assert summarize(results, 1.0)["errors"] == 2


def test_a_step_stops_at_its_deadline_and_counts_what_it_cut():
    proc, port = start_fake(chunks=5, chunk_ms=400)  # each stream takes at least 1.6 s
    try:
        target = Target(base_url=f"http://127.0.0.1:{port}/v1", model="fake-model")
        results, _ = asyncio.run(run_step(target, ["x"] * 6, 5, concurrency=2, step_timeout_s=0.3))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert len(results) == 6
    assert not any(r.ok for r in results)
    assert all("deadline" in (r.error or "") for r in results)


def test_a_refused_connection_is_an_error_not_a_crash():
    target = Target(base_url="http://127.0.0.1:9/v1", model="m")  # port 9 (discard): nothing listens
    results, _ = asyncio.run(run_step(target, ["x"], 4, concurrency=1, step_timeout_s=30))
    assert not results[0].ok and "Error" in (results[0].error or "")


@pytest.mark.parametrize("url", ["http://10.0.0.5:8000/v1", "http://example.com/v1", "http://192.168.1.2/v1"])
def test_only_loopback_targets_are_load_tested(url):
    with pytest.raises(BenchError, match="loopback"):
        check_loopback(url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "http://localhost:8100/v1", "http://[::1]:8000/v1"]
)
def test_loopback_targets_pass(url):
    check_loopback(url)


def test_payload_asks_for_usage_and_exact_length():
    body = Target(base_url="http://127.0.0.1/v1", model="m").payload("hi", 7, True, 0.0)
    assert body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["max_tokens"] == 7 and body["prompt"] == "hi"
    chat = Target(base_url="http://127.0.0.1/v1", model="m", api="chat").payload("hi", 7, False, 0.0)
    assert chat["messages"] == [{"role": "user", "content": "hi"}] and "ignore_eos" not in chat
