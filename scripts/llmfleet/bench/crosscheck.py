"""Cross-check this load generator against ``vllm bench serve`` on the same deployment and workload.

Both send ``requests`` streamed completions of exactly ``input_tokens`` prompt tokens and ``output_tokens``
generated tokens (ignore_eos), ``concurrency`` at a time, after one warm-up request; the two run one after
the other (never together), ours first. TTFT (mean), TPOT (mean) and output throughput must agree within
``tolerance``. The machine's load average is recorded before and after each, since another process
competing for the CPUs moves every figure.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from llmfleet.bench.errors import BenchError
from llmfleet.bench.profile import Experiment, Profile
from llmfleet.bench.runner import resolve_target, run_profile
from llmfleet.bench.store import ResultStore
from llmfleet.paths import REPO_ROOT

REPO = REPO_ROOT
SHIM = REPO / "bench" / "vllm_bench_serve.py"
COMPARED = (
    ("mean_ttft_ms", "TTFT mean (ms)"),
    ("mean_tpot_ms", "TPOT mean (ms)"),
    ("output_throughput", "output throughput (tok/s)"),
)
# Our metric name -> the key in vllm bench serve's result JSON, where they differ.
VLLM_NAMES = {"p50_ttft_ms": "median_ttft_ms"}
INFORMATIVE = (
    ("p50_ttft_ms", "TTFT p50 (ms)"),
    ("mean_itl_ms", "ITL mean (ms)"),
    ("mean_e2el_ms", "latency mean (ms)"),
    ("request_throughput", "requests/s"),
    ("total_input_tokens", "input tokens (server usage)"),
    ("total_output_tokens", "output tokens (server usage)"),
)


@dataclass
class CrosscheckResult:
    agree: bool
    report: str
    ours: dict[str, float]
    vllm: dict[str, float]
    run_id: str


def _uptime() -> str:
    return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def vllm_bench_command(
    vllm_python: str,
    base_url: str,
    model: str,
    tokenizer: Path,
    input_tokens: int,
    output_tokens: int,
    concurrency: int,
    requests: int,
    result_dir: Path,
    seed: int = 0,
) -> list[str]:
    root = base_url.rstrip("/").removesuffix("/v1")
    return [
        vllm_python,
        str(SHIM),
        "--backend",
        "vllm",
        "--base-url",
        root,
        "--endpoint",
        "/v1/completions",
        "--model",
        model,
        "--tokenizer",
        str(tokenizer),
        "--dataset-name",
        "random",
        "--random-input-len",
        str(input_tokens),
        "--random-output-len",
        str(output_tokens),
        "--random-range-ratio",
        "0",
        "--num-prompts",
        str(requests),
        "--max-concurrency",
        str(concurrency),
        "--ignore-eos",
        "--temperature",
        "0",
        "--num-warmups",
        "1",
        "--seed",
        str(seed),
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,90,99",
        "--disable-tqdm",
        "--save-result",
        "--result-dir",
        str(result_dir),
        "--result-filename",
        "vllm.json",
    ]


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def crosscheck(
    model: str,
    target: str,
    registry_dir: Path,
    db: Path,
    input_tokens: int = 128,
    output_tokens: int = 64,
    concurrency: int = 4,
    requests: int = 16,
    vllm_python: str = "/opt/llmfleet/vllm-venv/bin/python",
    tolerance: float = 0.10,
    out: Path | None = None,
    rounds: int = 2,
) -> CrosscheckResult:
    """Alternate the two tools ``rounds`` times in ABBA order (ours, vllm, vllm, ours, ...), so a load
    that drifts steadily over the run weighs on both alike; compare the means of each tool's passes."""
    if rounds < 1:
        raise BenchError("--rounds must be at least 1")
    resolved = resolve_target(model, target, "completions", registry_dir)
    profile = Profile(
        name="crosscheck",
        description="the workload of `llmfleet bench crosscheck`",
        warmup_requests=1,
        request_timeout_s=600,
        step_timeout_s=1800,
        run_timeout_s=1800,
        experiments=[
            Experiment(
                name="crosscheck",
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                concurrency=[concurrency],
                requests=requests,
            )
        ],
    )
    out_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="llmfleet-crosscheck."))
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if resolved.target.api_key:
        env["OPENAI_API_KEY"] = resolved.target.api_key

    passes: list[tuple[str, str, dict[str, float], str, str, float]] = []  # tool, id, metrics, load, load, s

    def ours_pass() -> None:
        before, started = _uptime(), time.time()
        with ResultStore(db) as store:
            run = run_profile(profile, resolved, store, registry_dir, label="crosscheck-ours", quiet=True)
        metrics = {k: float(v) for k, v in run.steps[0].metrics.items() if isinstance(v, int | float)}
        passes.append(("llmfleet bench", f"run {run.id}", metrics, before, _uptime(), time.time() - started))

    def vllm_pass(index: int) -> None:
        result_dir = out_dir / f"vllm-{index}"
        cmd = vllm_bench_command(
            vllm_python, resolved.target.base_url, model, resolved.tokenizer_dir, input_tokens, output_tokens,
            concurrency, requests, result_dir,
        )  # fmt: skip
        before, started = _uptime(), time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, check=False)
        after, took = _uptime(), time.time() - started
        result_dir.mkdir(parents=True, exist_ok=True)
        (result_dir / "vllm-bench-serve.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not (result_dir / "vllm.json").exists():
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise BenchError(f"vllm bench serve failed (exit {proc.returncode}):\n{tail}")
        data = json.loads((result_dir / "vllm.json").read_text())
        if data.get("failed"):
            raise BenchError(f"vllm bench serve had {data['failed']} failed request(s); see {result_dir}")
        metrics = {k: float(v) for k, v in data.items() if isinstance(v, int | float)}
        for ours_key, theirs in VLLM_NAMES.items():
            metrics[ours_key] = metrics.get(theirs, 0.0)
        passes.append(("vllm bench serve", str(result_dir / "vllm.json"), metrics, before, after, took))
        commands.append(shlex.join(cmd))

    commands: list[str] = []
    vllm_index = 0
    for r in range(rounds):
        order = ("ours", "vllm") if r % 2 == 0 else ("vllm", "ours")
        for tool in order:
            if tool == "ours":
                ours_pass()
            else:
                vllm_pass(vllm_index)
                vllm_index += 1

    def mean_of(tool: str, key: str) -> float:
        values = [m.get(key, 0.0) for t, _, m, *_ in passes if t == tool]
        return sum(values) / len(values)

    rows, agree = [], True
    for key, name in COMPARED + INFORMATIVE:
        a, b = mean_of("llmfleet bench", key), mean_of("vllm bench serve", key)
        ratio = _ratio(a, b)
        compared = (key, name) in COMPARED
        ok = abs(ratio - 1) <= tolerance
        if compared:
            agree &= ok
        verdict = ("yes" if ok else "NO") if compared else "(not compared)"
        rows.append(f"| {name} | {a:.2f} | {b:.2f} | {ratio:.3f} | {verdict} |")
    pass_rows = [
        f"| {i + 1} | {tool} | {m['mean_ttft_ms']:.1f} | {m['mean_tpot_ms']:.1f} "
        f"| {m['output_throughput']:.2f} | {took:.0f} s | {before} | {after} | {ident} |"
        for i, (tool, ident, m, before, after, took) in enumerate(passes)
    ]
    our_cmd = (
        f".venv/bin/llmfleet bench crosscheck --model {model} --target {target} "
        f"--input-tokens {input_tokens} --output-tokens {output_tokens} --concurrency {concurrency} "
        f"--requests {requests} --rounds {rounds} --tolerance {tolerance}"
    )
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report = "\n".join(
        [
            f"# Cross-check: llmfleet bench against vllm bench serve ({when})",
            "",
            f"Workload: {requests} requests, {input_tokens} tokens in, {output_tokens} out (ignore_eos), "
            f"concurrency {concurrency}, one warm-up request per pass; target {target} "
            f"{resolved.target.base_url}. {rounds} round(s) in ABBA order; each tool's passes averaged.",
            "",
            "| metric (mean of passes) | llmfleet bench | vllm bench serve | ratio "
            f"| within {tolerance:.0%} |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"Result: {'AGREE' if agree else 'DISAGREE'} within {tolerance:.0%}.",
            "",
            "| pass | tool | TTFT mean (ms) | TPOT mean (ms) | output tok/s | took | load before "
            "| load after | result |",
            "|---|---|---|---|---|---|---|---|---|",
            *pass_rows,
            "",
            "Commands:",
            "",
            "```",
            our_cmd,
            "# whose vllm bench serve passes ran:",
            *(
                ("OPENAI_API_KEY=... " if resolved.target.api_key else "") + "HF_HUB_OFFLINE=1 " + c
                for c in commands
            ),
            "```",
            "",
        ]
    )
    (out_dir / "crosscheck.md").write_text(report)
    ours_means = {k: mean_of("llmfleet bench", k) for k, _ in COMPARED}
    vllm_means = {k: mean_of("vllm bench serve", k) for k, _ in COMPARED}
    run_ids = [ident for tool, ident, *_ in passes if tool == "llmfleet bench"]
    return CrosscheckResult(
        agree=agree, report=report, ours=ours_means, vllm=vllm_means, run_id=", ".join(run_ids)
    )
