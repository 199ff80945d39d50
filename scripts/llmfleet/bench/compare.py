"""Runs side by side: a table like seed 002's, and PNG plots against concurrency (one line per run)."""

from __future__ import annotations

import json
from pathlib import Path

from llmfleet.bench.store import Run

# (metric key, row name, better): the columns of seed 002's table, per experiment and concurrency.
TABLE_METRICS = (
    ("mean_ttft_ms", "TTFT mean (ms)", "low"),
    ("p99_ttft_ms", "TTFT p99 (ms)", "low"),
    ("mean_e2el_ms", "latency mean (ms)", "low"),
    ("mean_tpot_ms", "TPOT mean (ms)", "low"),
    ("mean_itl_ms", "ITL mean (ms)", "low"),
    ("input_throughput", "input tok/s", "high"),
    ("output_throughput", "output tok/s", "high"),
    ("request_throughput", "requests/s", "high"),
    ("errors", "errors", "low"),
)


def run_title(run: Run) -> str:
    return f"{run.label} ({run.id})" if run.label else run.id


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def _steps(runs: list[Run]) -> list[tuple[str, int, int, int]]:
    """(experiment, concurrency, input, output) in the order the first run that has them measured them."""
    seen: list[tuple[str, int, int, int]] = []
    for run in runs:
        for step in run.steps:
            key = (step.experiment, step.concurrency, step.input_tokens, step.output_tokens)
            if key not in seen:
                seen.append(key)
    return seen


def fingerprint_differences(runs: list[Run]) -> list[str]:
    """Fingerprint fields whose values differ between the runs (load average and host aside)."""
    skip = {"loadavg_at_start", "registry_record"}
    keys = sorted({k for run in runs for k in run.fingerprint} - skip)
    lines = []
    for key in keys:
        values = [json.dumps(run.fingerprint.get(key), sort_keys=True) for run in runs]
        argvs = [run.fingerprint.get(key) for run in runs]
        if key == "vllm_argv" and len(set(values)) > 1 and all(isinstance(a, list) and a for a in argvs):
            # Show where the command lines part: the first instance's argv from the first difference on.
            firsts = [[str(x) for x in a[0]] for a in argvs]  # type: ignore[index]
            start = next((i for i, parts in enumerate(zip(*firsts, strict=False)) if len(set(parts)) > 1), 0)
            counts = ", ".join(str(len(a)) for a in argvs)  # type: ignore[arg-type]
            shown = " / ".join("`... " + " ".join(f[max(start - 1, 0) :]) + "`" for f in firsts)
            lines.append(f"- `vllm_argv` differs (instances: {counts}): {shown}")
            continue
        if len(set(values)) > 1:
            lines.append(
                f"- `{key}` differs: " + " / ".join(v if len(v) < 200 else v[:197] + "..." for v in values)
            )
    return lines


def compare_table(runs: list[Run]) -> str:
    """A Markdown table: one row per experiment, concurrency and metric; one column per run; the best
    value of each row in bold (when more than one run has it)."""
    header = ["experiment", "conc.", "metric", *(run_title(r) for r in runs)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for exp, conc, itok, otok in _steps(runs):
        by_run = []
        for run in runs:
            step = next((s for s in run.steps if (s.experiment, s.concurrency) == (exp, conc)), None)
            by_run.append(step.metrics if step else None)
        for key, name, better in TABLE_METRICS:
            values = [m.get(key) if m else None for m in by_run]
            present = [v for v in values if isinstance(v, int | float)]
            best = None
            if len(present) > 1 and len(set(present)) > 1:
                best = min(present) if better == "low" else max(present)
            cells = [f"**{_fmt(v)}**" if v is not None and v == best else _fmt(v) for v in values]
            lines.append(f"| {exp} ({itok} in / {otok} out) | {conc} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _load(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(f"{float(x):.2f}" for x in value)
    return str(value)


def compare_report(runs: list[Run]) -> str:
    parts = ["# Benchmark comparison", ""]
    for run in runs:
        fp = run.fingerprint
        parts.append(
            f"- **{run_title(run)}**: profile `{run.profile_name}`, target {run.target} `{run.base_url}`, "
            f"status {run.status}, vLLM {fp.get('vllm_version')}, {fp.get('instances')} instance(s), "
            f"git {str((fp.get('git') or {}).get('commit'))[:12]}, "
            f"load at start {_load(fp.get('loadavg_at_start'))}"  # type: ignore[union-attr]
        )
    diffs = fingerprint_differences(runs)
    parts += ["", "What differs between the runs:" if diffs else "The fingerprints agree.", *diffs, ""]
    parts.append(compare_table(runs))
    return "\n".join(parts)


def plot_runs(runs: list[Run], out_dir: Path) -> list[Path]:
    """``ttft.png`` and ``throughput.png``: one panel per experiment, concurrency on x, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experiments = list(dict.fromkeys(s.experiment for run in runs for s in run.steps))
    written = []
    for filename, key, ylabel in (
        ("ttft.png", "mean_ttft_ms", "TTFT mean (ms)"),
        ("throughput.png", "output_throughput", "output tokens/s"),
    ):
        fig, axes = plt.subplots(
            1, max(len(experiments), 1), figsize=(5 * max(len(experiments), 1), 4), squeeze=False
        )
        for ax, exp in zip(axes[0], experiments, strict=False):
            for run in runs:
                points = sorted((s.concurrency, s.metrics.get(key)) for s in run.steps if s.experiment == exp)
                points = [(c, v) for c, v in points if v is not None]
                if points:
                    ax.plot([c for c, _ in points], [v for _, v in points], marker="o", label=run_title(run))
            ax.set_title(exp)
            ax.set_xlabel("concurrency")
            ax.set_ylabel(ylabel)
            ax.set_xscale("log", base=2)
            ax.grid(True, alpha=0.3)
            if ax.get_lines():
                ax.legend(fontsize=7)
        fig.tight_layout()
        path = Path(out_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
