"""``llmfleet sweep``: deploy each candidate configuration, benchmark it, keep the best under an SLO.

Candidates vary only tunable knobs (seed 002's rule: placement and speed, never what the model outputs).
Every candidate is deployed through the real playbook with the sweep's own extra-vars: its own ports
(gateway 38000, metrics 38404, instances from 38100), directories and supervisord, and the shared model
store, so the live deployment (port 8000) and end-to-end tests are not touched. The sweep deployment is
undeployed and its supervisord stopped at the end, also when a deploy, a benchmark or the operator
(Ctrl-C) stops the sweep early.
"""

from __future__ import annotations

import itertools
import operator
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmfleet.bench.errors import SweepError
from llmfleet.bench.metrics import metric_names
from llmfleet.bench.store import Run, Step, new_run_id
from llmfleet.catalog.models import FIXED_ARGS, TUNABLE_ARGS
from llmfleet.paths import REPO_ROOT

REPO = REPO_ROOT

SWEEP_VARS: dict[str, object] = {
    "llmfleet_common_state_dir": "/var/lib/llmfleet-sweep",
    "llmfleet_common_config_dir": "/etc/llmfleet-sweep",
    "llmfleet_common_log_dir": "/var/log/llmfleet-sweep",
    "llmfleet_common_runtime_dir": "/run/llmfleet-sweep",
    "llmfleet_common_gateway_url": "http://127.0.0.1:38000",
    "gateway_listen_port": 38000,
    "gateway_metrics_port": 38404,
    "deployment_plan_base_port": 38100,
    # The store is content-addressed and import is idempotent: sharing it skips the conversion.
    "model_weights_store_dir": "/var/lib/llmfleet/store",
}

# knob -> (inventory variable, vLLM option it becomes). Only these may be varied.
KNOBS: dict[str, tuple[str | None, str | None]] = {
    "max_num_seqs": ("deployment_plan_max_num_seqs", "--max-num-seqs"),
    "instances": ("deployment_plan_instances", None),
    "kv_cache_gib": ("deployment_plan_kv_cache_gib", None),
    "max_num_batched_tokens": (None, "--max-num-batched-tokens"),
    "tensor_parallel_size": (None, "--tensor-parallel-size"),
    "pipeline_parallel_size": (None, "--pipeline-parallel-size"),
}
assert all(flag is None or flag in TUNABLE_ARGS for _, flag in KNOBS.values())

_COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


class _YamlDumper(yaml.SafeDumper):
    """Indents lists under their key, as yamllint's default (and this repository's .yamllint) wants."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data: object) -> bool:
        return True  # the winner's knobs repeat a candidate's: write them out, not as &id001 / *id001


def _dump(data: object) -> str:
    return yaml.dump(data, Dumper=_YamlDumper, sort_keys=False, default_flow_style=False, width=120)


@dataclass(frozen=True)
class Slo:
    metric: str
    op: str
    bound: float

    def holds(self, metrics: dict[str, float | int | None]) -> bool:
        value = metrics.get(self.metric)
        return value is not None and _COMPARATORS[self.op](float(value), self.bound)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


def parse_slo(text: str) -> Slo:
    match = re.fullmatch(r"\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*([0-9.eE+-]+)\s*", text)
    if not match:
        raise SweepError(f"--slo {text!r}: expected METRIC<VALUE, e.g. 'p95_ttft_ms<2000'")
    metric, op, bound = match.groups()
    if metric not in metric_names():
        raise SweepError(f"--slo {text!r}: unknown metric {metric!r}; one of: {', '.join(metric_names())}")
    return Slo(metric, op, float(bound))


def parse_objective(text: str) -> tuple[str, str]:
    direction, _, metric = text.partition(":") if ":" in text else ("max", ":", text)
    if direction not in ("max", "min") or metric not in metric_names():
        raise SweepError(
            f"--objective {text!r}: expected max:METRIC or min:METRIC, "
            f"METRIC one of: {', '.join(metric_names())}"
        )
    return direction, metric


def parse_vary(items: list[str]) -> dict[str, list[int]]:
    """``["max_num_seqs=4,16", "instances=1,2"]`` -> ``{"max_num_seqs": [4, 16], "instances": [1, 2]}``.
    Refuses a knob that changes what the model outputs, with the reason."""
    out: dict[str, list[int]] = {}
    for item in items:
        knob, sep, values = item.partition("=")
        knob = knob.strip().replace("-", "_")
        if not sep or not values.strip():
            raise SweepError(f"--vary {item!r}: expected KNOB=V1,V2")
        flag = "--" + knob.replace("_", "-")
        if flag in FIXED_ARGS:
            raise SweepError(
                f"--vary {knob}: {flag} sets {FIXED_ARGS[flag]}, which changes what the model outputs; "
                "it is fixed per model in catalog/models.yml (seed 002's rule) and a sweep cannot vary it"
            )
        if knob not in KNOBS:
            raise SweepError(f"--vary {knob}: not a tunable knob; one of: {', '.join(KNOBS)}")
        if knob in out:
            raise SweepError(f"--vary {knob} given twice")
        try:
            parsed = [int(v) for v in values.split(",")]
        except ValueError:
            raise SweepError(f"--vary {item!r}: values must be whole numbers") from None
        if any(v < 1 for v in parsed) or len(set(parsed)) != len(parsed):
            raise SweepError(f"--vary {item!r}: values must be distinct and at least 1")
        out[knob] = parsed
    return out


def candidates(vary: dict[str, list[int]]) -> list[dict[str, int]]:
    knobs = list(vary)
    return [dict(zip(knobs, combo, strict=True)) for combo in itertools.product(*(vary[k] for k in knobs))]


def candidate_vars(candidate: dict[str, int]) -> dict[str, object]:
    """The extra-vars that deploy ``candidate`` (on top of SWEEP_VARS)."""
    out: dict[str, object] = {}
    extra: list[str] = []
    for knob, value in candidate.items():
        var, flag = KNOBS[knob]
        if var:
            out[var] = value
        else:
            extra += [str(flag), str(value)]
    if extra:
        out["deployment_plan_extra_args"] = extra
    return out


def describe(candidate: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in candidate.items())


def score(run: Run, direction: str, metric: str, slos: list[Slo]) -> tuple[float | None, list[Step]]:
    """The best value of ``metric`` over the run's steps that meet every SLO (and completed requests),
    with those steps. ``None`` when no step qualifies."""
    feasible = [
        s
        for s in run.steps
        if (s.metrics.get("completed") or 0) > 0 and all(slo.holds(s.metrics) for slo in slos)
    ]
    values = [float(v) for s in feasible if (v := s.metrics.get(metric)) is not None]
    if not values:
        return None, feasible
    return (max(values) if direction == "max" else min(values)), feasible


def pick_winner(
    runs: list[tuple[dict[str, int], Run | None]], direction: str, metric: str, slos: list[Slo]
) -> tuple[int | None, list[float | None]]:
    scores = [score(run, direction, metric, slos)[0] if run else None for _, run in runs]
    best: int | None = None
    for i, value in enumerate(scores):
        if value is None:
            continue
        if best is None or (value > scores[best] if direction == "max" else value < scores[best]):  # type: ignore[operator]
            best = i
    return best, scores


@dataclass
class SweepOutcome:
    sweep_id: str
    winner: dict[str, int] | None
    summary: str
    runs: list[tuple[dict[str, int], Run | None]] = field(default_factory=list)


def _playbook(name: str, vars_file: Path, model: str, log: Path, timeout: float) -> int:
    cmd = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        "inventories/local/hosts.yml",
        name,
        "-e",
        f"@{vars_file}",
        "-e",
        f"model={model}",
    ]
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.run(
                cmd,
                cwd=REPO,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
            )
        except subprocess.TimeoutExpired:
            fh.write(f"\n(timed out after {timeout:g} s)\n")
            return 124
    return proc.returncode


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_sweep(
    model: str,
    vary: list[str],
    profile_path: Path,
    objective: str,
    slos: list[str],
    db: Path,
    write_to: Path | None = None,
    report_dir: Path | None = None,
    deploy_timeout_s: float = 1800.0,
    keep_going: bool = False,
) -> SweepOutcome:
    from llmfleet.bench.compare import compare_report, plot_runs
    from llmfleet.bench.profile import load_profile
    from llmfleet.bench.runner import resolve_target, run_profile
    from llmfleet.bench.store import ResultStore
    from llmfleet.catalog.models import load_catalog

    # Everything that can be wrong with the request is checked before the first deploy.
    load_catalog().get(model)
    profile = load_profile(profile_path)
    direction, metric = parse_objective(objective)
    slo_list = [parse_slo(s) for s in slos]
    cands = candidates(parse_vary(vary))
    sweep_id = "sweep-" + new_run_id()
    report_dir = Path(report_dir or REPO / "bench" / "results" / sweep_id)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_to = Path(write_to or REPO / "inventories" / "local" / "sweeps" / f"{model}.yml")
    registry = Path(str(SWEEP_VARS["llmfleet_common_state_dir"])) / "deployments"
    log_file = report_dir / "ansible.log"

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    started = time.monotonic()
    results: list[tuple[dict[str, int], Run | None]] = []
    notes: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="llmfleet-sweep."))
    base_vars = tmp / "sweep-vars.yml"
    base_vars.write_text(yaml.safe_dump(SWEEP_VARS, sort_keys=True))
    say(f"{sweep_id}: {len(cands)} candidate(s) of {model}: " + "; ".join(describe(c) for c in cands))
    interrupted = False
    try:
        with ResultStore(db) as store:
            for i, cand in enumerate(cands):
                vars_file = tmp / f"candidate-{i}.yml"
                extra = {**SWEEP_VARS, **candidate_vars(cand)}
                vars_file.write_text(yaml.safe_dump(extra, sort_keys=True))
                say(f"[{i + 1}/{len(cands)}] deploying {describe(cand)} (log {log_file})")
                t0 = time.monotonic()
                rc = _playbook("deploy-model.yml", vars_file, model, log_file, deploy_timeout_s)
                if rc != 0:
                    msg = (
                        f"{describe(cand)}: deploy failed (exit {rc}); "
                        f"last lines of {log_file}:\n{_tail(log_file)}"
                    )
                    if not keep_going:
                        raise SweepError(msg)
                    say(msg)
                    notes.append(f"- {describe(cand)}: deploy failed (exit {rc}), not measured")
                    results.append((cand, None))
                    continue
                say(f"[{i + 1}/{len(cands)}] deployed in {time.monotonic() - t0:.0f} s; benchmarking")
                resolved = resolve_target(model, "gateway", profile.api, registry)
                run = run_profile(
                    profile, resolved, store, registry, label=f"{describe(cand)}", extra_vars=extra
                )
                results.append((cand, run))
                say(f"[{i + 1}/{len(cands)}] run {run.id} ({run.status})")
    except KeyboardInterrupt:
        # Ctrl-C: keep what was measured (the report shows it), undeploy, and name no winner.
        interrupted = True
        say("interrupted: keeping the runs measured so far; no winner is written")
    finally:
        say("undeploying the sweep deployment and stopping its supervisord")
        _playbook("undeploy-model.yml", base_vars, model, log_file, 900)
        conf = f"{SWEEP_VARS['llmfleet_common_config_dir']}/supervisor/supervisord.conf"
        if Path(conf).exists():
            subprocess.run(
                ["/opt/llmfleet/supervisor-venv/bin/supervisorctl", "-c", conf, "shutdown"],
                capture_output=True,
                timeout=120,
                check=False,
            )

    best, scores = pick_winner(results, direction, metric, slo_list)
    if interrupted:
        best = None
    winner = results[best][0] if best is not None else None
    duration = time.monotonic() - started
    measured = [run for _, run in results if run is not None]
    if measured:
        (report_dir / "compare.md").write_text(compare_report(measured))
        plot_runs(measured, report_dir)

    evidence = {
        "id": sweep_id,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model,
        "profile": str(profile_path),
        "objective": f"{direction}:{metric}",
        "slos": [str(s) for s in slo_list],
        "results_db": str(db),
        "duration_s": round(duration),
        "interrupted": interrupted,
        "candidates": [
            {
                "knobs": cand,
                "run_id": run.id if run else None,
                "score": None if scores[i] is None else round(float(scores[i]), 3),  # type: ignore[arg-type]
                "meets_slo": scores[i] is not None,
            }
            for i, (cand, run) in enumerate(results)
        ],
        "winner": None if best is None else {"knobs": winner, "run_id": results[best][1].id},  # type: ignore[union-attr]
    }
    lines = [
        f"{sweep_id}: {model}, objective {direction}:{metric}, "
        f"SLO {', '.join(map(str, slo_list)) or 'none'}, {duration / 60:.1f} min",
        "",
        f"| candidate | run | {metric} (best step meeting the SLO) |",
        "|---|---|---|",
    ]
    for i, (cand, run) in enumerate(results):
        mark = " (winner)" if i == best else ""
        value = "-" if scores[i] is None else f"{scores[i]:.3f}"
        lines.append(f"| {describe(cand)}{mark} | {run.id if run else 'not measured'} | {value} |")
    lines += notes
    if interrupted:
        untried = [describe(c) for c in cands[len(results) :]]
        lines.append(
            f"\nInterrupted; not measured: {', '.join(untried) or 'none'}. Nothing written to the inventory."
        )
    elif winner is None:
        lines.append("\nNo candidate met the SLO; nothing written to the inventory.")
    else:
        write_to.parent.mkdir(parents=True, exist_ok=True)
        shown = write_to.relative_to(REPO) if write_to.is_relative_to(REPO) else write_to
        header = (
            f"# Written by `llmfleet sweep` ({sweep_id}): the winner's tunable settings for {model}.\n"
            f"# Apply with: ansible-playbook deploy-model.yml -e model={model} \\\n#   -e @{shown}\n"
            "# llmfleet_sweep is the evidence: every candidate, its benchmark run id and score.\n"
        )
        body = {**candidate_vars(winner), "llmfleet_sweep": evidence}
        write_to.write_text(header + "---\n" + _dump(body))
        lines.append(
            f"\nWinner: {describe(winner)} (run {evidence['winner']['run_id']}); written to {write_to}"
        )  # type: ignore[index]
    (report_dir / "sweep.yml").write_text("---\n" + _dump(evidence))
    lines.append(f"Report: {report_dir}")
    return SweepOutcome(sweep_id=sweep_id, winner=winner, summary="\n".join(lines) + "\n", runs=results)
