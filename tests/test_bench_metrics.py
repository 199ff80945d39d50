"""The metrics math on constructed timings: percentiles, TTFT, TPOT, ITL, latency and throughput."""

from __future__ import annotations

import pytest

from llmfleet.bench.metrics import RequestResult, metric_names, percentile, summarize


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 90, 3.7),  # rank 2.7: 3 + 0.7 * (4 - 3)
        ([4.0, 1.0, 3.0, 2.0], 0, 1.0),  # order does not matter
        ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
        ([7.0], 99, 7.0),
        ([0.0, 10.0], 95, 9.5),
    ],
)
def test_percentile_interpolates_linearly_like_numpy(values, pct, expected):
    assert percentile(values, pct) == pytest.approx(expected)


def test_percentile_refuses_no_values_and_out_of_range():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def ok(start: float, ttft: float, itl: list[float], prompt: int = 100) -> RequestResult:
    return RequestResult(
        ok=True,
        start=start,
        ttft=ttft,
        latency=ttft + sum(itl),
        itl=itl,
        prompt_tokens=prompt,
        output_tokens=len(itl) + 1,
    )


def test_tpot_is_time_after_the_first_token_per_further_token():
    r = ok(0.0, 0.5, [0.1, 0.2, 0.3])  # 4 tokens; 0.6 s after the first
    assert r.latency == pytest.approx(1.1)
    assert r.tpot == pytest.approx(0.2)
    assert ok(0.0, 0.5, []).tpot is None  # one output token: no TPOT
    assert RequestResult(ok=False, error="HTTP 500").tpot is None


def test_summarize_on_constructed_timings():
    results = [
        ok(0.0, 0.100, [0.1] * 9),  # 10 tokens, latency 1.0, TPOT 0.1
        ok(0.0, 0.300, [0.2] * 9),  # 10 tokens, latency 2.1, TPOT 0.2
        RequestResult(ok=False, error="HTTP 500: boom"),
    ]
    m = summarize(results, duration_s=2.0)
    assert (m["requests"], m["completed"], m["errors"]) == (3, 2, 1)
    assert m["error_rate"] == pytest.approx(1 / 3)
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["p50_ttft_ms"] == pytest.approx(200.0)
    assert m["p99_ttft_ms"] == pytest.approx(100 + 200 * 0.99)
    assert m["mean_tpot_ms"] == pytest.approx(150.0)
    assert m["mean_itl_ms"] == pytest.approx(150.0)  # 9 gaps of 0.1 and 9 of 0.2, pooled
    assert m["p90_itl_ms"] == pytest.approx(200.0)
    assert m["mean_e2el_ms"] == pytest.approx(1550.0)
    assert m["total_input_tokens"] == 200
    assert m["total_output_tokens"] == 20
    assert m["output_throughput"] == pytest.approx(10.0)  # 20 tokens / 2 s; the failed request adds none
    assert m["input_throughput"] == pytest.approx(100.0)
    assert m["request_throughput"] == pytest.approx(1.0)
    assert set(metric_names()) <= set(m)


def test_summarize_with_every_request_failed_has_no_timings():
    m = summarize([RequestResult(ok=False, error="x")], duration_s=1.0)
    assert m["completed"] == 0 and m["errors"] == 1
    assert m["mean_ttft_ms"] is None and m["p99_tpot_ms"] is None
    assert m["output_throughput"] == 0


def test_summarize_refuses_a_zero_duration():
    with pytest.raises(ValueError, match="positive"):
        summarize([], duration_s=0)
