"""`bench compare`: the side-by-side table (golden) and the PNG plots."""

from __future__ import annotations

from llmfleet.bench.compare import compare_report, compare_table, fingerprint_differences, plot_runs
from llmfleet.bench.store import Run, Step


def step(exp: str, conc: int, ttft: float, out_tps: float, errors: int = 0) -> Step:
    return Step(
        exp,
        conc,
        256 if exp == "short" else 1024,
        64,
        {
            "mean_ttft_ms": ttft,
            "p99_ttft_ms": ttft * 2,
            "mean_e2el_ms": ttft + 1000.0,
            "mean_tpot_ms": 50.0 + conc,
            "mean_itl_ms": 50.0 + conc,
            "input_throughput": out_tps * 4,
            "output_throughput": out_tps,
            "request_throughput": out_tps / 64,
            "errors": errors,
        },
    )


def run(run_id: str, label: str, argv: list[str], steps: list[Step]) -> Run:
    return Run(
        id=run_id,
        created_at="2026-11-23T12:00:00Z",
        label=label,
        status="complete",
        profile_name="cpu-small",
        profile={},
        target="gateway",
        base_url="http://127.0.0.1:8000/v1",
        model="m",
        fingerprint={"vllm_version": "0.32.0", "vllm_argv": [argv], "loadavg_at_start": [1.0, 1.0, 1.0]},
        steps=steps,
    )


A = run(
    "run-a", "seqs=4", ["--max-num-seqs", "4"], [step("short", 1, 120.0, 30.0), step("short", 4, 400.0, 80.0)]
)
B = run(
    "run-b",
    "seqs=16",
    ["--max-num-seqs", "16"],
    [step("short", 1, 110.0, 31.0), step("short", 4, 380.5, 95.25, errors=1), step("long", 1, 900.0, 20.0)],
)

GOLDEN = """\
| experiment | conc. | metric | seqs=4 (run-a) | seqs=16 (run-b) |
|---|---|---|---|---|
| short (256 in / 64 out) | 1 | TTFT mean (ms) | 120.0 | **110.0** |
| short (256 in / 64 out) | 1 | TTFT p99 (ms) | 240.0 | **220.0** |
| short (256 in / 64 out) | 1 | latency mean (ms) | 1120.0 | **1110.0** |
| short (256 in / 64 out) | 1 | TPOT mean (ms) | 51.0 | 51.0 |
| short (256 in / 64 out) | 1 | ITL mean (ms) | 51.0 | 51.0 |
| short (256 in / 64 out) | 1 | input tok/s | 120.0 | **124.0** |
| short (256 in / 64 out) | 1 | output tok/s | 30.0 | **31.0** |
| short (256 in / 64 out) | 1 | requests/s | 0.47 | **0.48** |
| short (256 in / 64 out) | 1 | errors | 0 | 0 |
| short (256 in / 64 out) | 4 | TTFT mean (ms) | 400.0 | **380.5** |
| short (256 in / 64 out) | 4 | TTFT p99 (ms) | 800.0 | **761.0** |
| short (256 in / 64 out) | 4 | latency mean (ms) | 1400.0 | **1380.5** |
| short (256 in / 64 out) | 4 | TPOT mean (ms) | 54.0 | 54.0 |
| short (256 in / 64 out) | 4 | ITL mean (ms) | 54.0 | 54.0 |
| short (256 in / 64 out) | 4 | input tok/s | 320.0 | **381.0** |
| short (256 in / 64 out) | 4 | output tok/s | 80.0 | **95.2** |
| short (256 in / 64 out) | 4 | requests/s | 1.25 | **1.49** |
| short (256 in / 64 out) | 4 | errors | **0** | 1 |
| long (1024 in / 64 out) | 1 | TTFT mean (ms) | - | 900.0 |
| long (1024 in / 64 out) | 1 | TTFT p99 (ms) | - | 1800.0 |
| long (1024 in / 64 out) | 1 | latency mean (ms) | - | 1900.0 |
| long (1024 in / 64 out) | 1 | TPOT mean (ms) | - | 51.0 |
| long (1024 in / 64 out) | 1 | ITL mean (ms) | - | 51.0 |
| long (1024 in / 64 out) | 1 | input tok/s | - | 80.0 |
| long (1024 in / 64 out) | 1 | output tok/s | - | 20.0 |
| long (1024 in / 64 out) | 1 | requests/s | - | 0.31 |
| long (1024 in / 64 out) | 1 | errors | - | 0 |
"""


def test_compare_table_golden():
    assert compare_table([A, B]) == GOLDEN


def test_report_names_what_differs_between_the_runs():
    diffs = fingerprint_differences([A, B])
    assert len(diffs) == 1 and diffs[0].startswith("- `vllm_argv` differs")
    report = compare_report([A, B])
    assert "**seqs=4 (run-a)**" in report and GOLDEN in report


def test_plots_are_pngs(tmp_path):
    paths = plot_runs([A, B], tmp_path)
    assert sorted(p.name for p in paths) == ["throughput.png", "ttft.png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
