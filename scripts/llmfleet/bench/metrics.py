"""Per-request timings and their summary: TTFT, TPOT, inter-token latency, end-to-end latency, throughput.

The definitions follow ``vllm bench serve`` (vLLM 0.32, ``vllm/benchmarks/serve.py``) so the two can be
compared number for number:

- TTFT: from sending the request to the first streamed chunk that carries generated tokens.
- end-to-end latency: from sending the request to the last chunk that carries generated tokens.
- TPOT (per request): (latency - TTFT) / (output tokens - 1); requests with one output token have none.
- ITL: the gaps between consecutive token-carrying chunks, pooled over all requests.
- throughput: tokens (from the server's usage) of the completed requests / wall time of the whole step.
- percentiles: linear interpolation between closest ranks (numpy's default method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PERCENTILES = (50, 90, 95, 99)
TIMED_METRICS = ("ttft", "tpot", "itl", "e2el")


@dataclass
class RequestResult:
    """One request as the load generator saw it. Times are seconds; ``start`` is relative to the step."""

    ok: bool
    start: float = 0.0
    ttft: float | None = None
    latency: float | None = None
    itl: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None

    @property
    def tpot(self) -> float | None:
        if not self.ok or self.ttft is None or self.latency is None or not self.output_tokens:
            return None
        if self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile of ``values`` with linear interpolation (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile {pct} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _stats_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    out: dict[str, float | None] = {"mean": 1000 * sum(values) / len(values)}
    for p in PERCENTILES:
        out[f"p{p}"] = 1000 * percentile(values, p)
    return out


def summarize(results: list[RequestResult], duration_s: float) -> dict[str, float | int | None]:
    """Flat metrics for one step (one experiment at one concurrency): ``mean_ttft_ms``, ``p99_tpot_ms``,
    ``output_throughput`` (tokens/s) and so on. Failed requests count only as errors."""
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    done = [r for r in results if r.ok]
    series = {
        "ttft": [r.ttft for r in done if r.ttft is not None],
        "tpot": [t for r in done if (t := r.tpot) is not None],
        "itl": [gap for r in done for gap in r.itl],
        "e2el": [r.latency for r in done if r.latency is not None],
    }
    input_tokens = sum(r.prompt_tokens or 0 for r in done)
    output_tokens = sum(r.output_tokens or 0 for r in done)
    metrics: dict[str, float | int | None] = {
        "requests": len(results),
        "completed": len(done),
        "errors": len(results) - len(done),
        "error_rate": (len(results) - len(done)) / len(results) if results else 0.0,
        "duration_s": duration_s,
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": len(done) / duration_s,
        "input_throughput": input_tokens / duration_s,
        "output_throughput": output_tokens / duration_s,
        "total_token_throughput": (input_tokens + output_tokens) / duration_s,
    }
    for name in TIMED_METRICS:
        for stat, value in _stats_ms(series[name]).items():
            metrics[f"{stat}_{name}_ms"] = value
    return metrics


# Names a --slo or --objective may use: every key summarize() returns.
def metric_names() -> list[str]:
    names = [
        "requests",
        "completed",
        "errors",
        "error_rate",
        "duration_s",
        "total_input_tokens",
        "total_output_tokens",
        "request_throughput",
        "input_throughput",
        "output_throughput",
        "total_token_throughput",
    ]
    for name in TIMED_METRICS:
        names += [f"{stat}_{name}_ms" for stat in ("mean", *(f"p{p}" for p in PERCENTILES))]
    return names
