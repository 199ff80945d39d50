"""`llmfleet sweep`: knobs, SLOs, the winner, what is written, and the undeploy that always runs.

The playbook and the benchmark are replaced by recorders here; the real sweep runs on this machine
(docs/bench.md) and in tests/e2e/test_bench_local.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmfleet.bench import sweep
from llmfleet.bench.errors import SweepError
from llmfleet.bench.store import Run, Step

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "bench" / "profiles" / "smoke.yaml"
MODEL = "smollm2-135m-instruct"


def test_vary_parses_a_grid_of_tunable_knobs():
    vary = sweep.parse_vary(["max_num_seqs=4,16", "instances=1,2"])
    assert vary == {"max_num_seqs": [4, 16], "instances": [1, 2]}
    assert sweep.candidates(vary) == [
        {"max_num_seqs": 4, "instances": 1},
        {"max_num_seqs": 4, "instances": 2},
        {"max_num_seqs": 16, "instances": 1},
        {"max_num_seqs": 16, "instances": 2},
    ]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("dtype=1,2", "changes what the model outputs"),
        ("max_model_len=1024,2048", "--max-model-len sets the context length"),
        ("kv_cache_dtype=1,2", "fixed per model"),
        ("colour=1,2", "not a tunable knob"),
        ("max_num_seqs", "expected KNOB=V1,V2"),
        ("max_num_seqs=4,x", "whole numbers"),
        ("max_num_seqs=4,4", "distinct"),
        ("instances=0,1", "at least 1"),
    ],
)
def test_vary_refuses_with_the_reason(item, message):
    with pytest.raises(SweepError, match=message):
        sweep.parse_vary([item])


def test_candidate_vars_map_knobs_to_inventory_variables_or_vllm_arguments():
    assert sweep.candidate_vars({"max_num_seqs": 4, "instances": 2, "max_num_batched_tokens": 256}) == {
        "deployment_plan_max_num_seqs": 4,
        "deployment_plan_instances": 2,
        "deployment_plan_extra_args": ["--max-num-batched-tokens", "256"],
    }


def test_sweep_vars_are_isolated_from_the_live_deployment_and_e2e():
    v = sweep.SWEEP_VARS
    assert (v["gateway_listen_port"], v["gateway_metrics_port"], v["deployment_plan_base_port"]) == (
        38000,
        38404,
        38100,
    )
    for key in ("state_dir", "config_dir", "log_dir", "runtime_dir"):
        assert str(v[f"llmfleet_common_{key}"]).endswith("llmfleet-sweep")
    assert v["model_weights_store_dir"] == "/var/lib/llmfleet/store"


def test_slo_and_objective_parsing():
    slo = sweep.parse_slo("p95_ttft_ms<2000")
    assert slo.holds({"p95_ttft_ms": 1999.0}) and not slo.holds({"p95_ttft_ms": 2000.0})
    assert not slo.holds({"p95_ttft_ms": None})
    assert sweep.parse_slo("error_rate <= 0").holds({"error_rate": 0.0})
    assert sweep.parse_objective("max:output_throughput") == ("max", "output_throughput")
    assert sweep.parse_objective("output_throughput") == ("max", "output_throughput")
    assert sweep.parse_objective("min:mean_e2el_ms") == ("min", "mean_e2el_ms")
    with pytest.raises(SweepError, match="unknown metric"):
        sweep.parse_slo("p95_ttft<2000")
    with pytest.raises(SweepError, match="expected"):
        sweep.parse_slo("p95_ttft_ms=2000")
    with pytest.raises(SweepError, match="max:METRIC"):
        sweep.parse_objective("best:output_throughput")


def fake_run(run_id: str, steps: list[tuple[int, float, float]]) -> Run:
    """steps: (concurrency, p95 TTFT ms, output tok/s)."""
    return Run(
        id=run_id, created_at="", label="", status="complete", profile_name="p", profile={}, target="gateway",
        base_url="", model=MODEL, fingerprint={},
        steps=[
            Step("e", c, 128, 32, {"completed": 4, "p95_ttft_ms": ttft, "output_throughput": tps})
            for c, ttft, tps in steps
        ],
    )  # fmt: skip


def test_the_winner_is_the_best_step_that_meets_the_slo():
    slo = [sweep.parse_slo("p95_ttft_ms<2000")]
    fast_but_slow_ttft = fake_run("r1", [(2, 900.0, 10.0), (8, 5000.0, 30.0)])  # 30 tok/s breaks the SLO
    steady = fake_run("r2", [(2, 800.0, 11.0), (8, 1900.0, 20.0)])
    best, scores = sweep.pick_winner(
        [({"k": 1}, fast_but_slow_ttft), ({"k": 2}, steady)], "max", "output_throughput", slo
    )
    assert (best, scores) == (1, [10.0, 20.0])
    # Without the SLO the high-concurrency step of r1 wins.
    assert (
        sweep.pick_winner(
            [({"k": 1}, fast_but_slow_ttft), ({"k": 2}, steady)], "max", "output_throughput", []
        )[0]
        == 0
    )
    # Nothing meets a tight SLO: no winner.
    tight = [sweep.parse_slo("p95_ttft_ms<100")]
    assert sweep.pick_winner(
        [({"k": 1}, fast_but_slow_ttft), ({"k": 2}, None)], "max", "output_throughput", tight
    ) == (
        None,
        [None, None],
    )


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []
        self.deploy_rc = 0
        self.runs: list[Run] = []


@pytest.fixture
def rec(monkeypatch, tmp_path):
    """Replace the playbook and the benchmark; keep the sweep's supervisord config in tmp_path."""
    from llmfleet.bench import runner

    r = Recorder()
    monkeypatch.setattr(
        sweep, "SWEEP_VARS", {**sweep.SWEEP_VARS, "llmfleet_common_config_dir": str(tmp_path / "etc")}
    )

    def playbook(name, vars_file, model, log, timeout):  # type: ignore[no-untyped-def]
        r.calls.append((name, yaml.safe_load(Path(vars_file).read_text())))
        return r.deploy_rc if name == "deploy-model.yml" else 0

    def run_profile(profile, resolved, store, registry_dir, label="", extra_vars=None, quiet=False):  # type: ignore[no-untyped-def]
        run = r.runs[len([c for c in r.calls if c[0] == "deploy-model.yml"]) - 1]
        run.label = label
        store.start_run(run)
        return run

    monkeypatch.setattr(sweep, "_playbook", playbook)
    monkeypatch.setattr(runner, "resolve_target", lambda *a, **k: None)
    monkeypatch.setattr(runner, "run_profile", run_profile)
    return r


def _run_sweep(tmp_path: Path, **kw):  # type: ignore[no-untyped-def]
    return sweep.run_sweep(
        model=MODEL, vary=["max_num_seqs=4,16"], profile_path=PROFILE, objective="max:output_throughput",
        slos=["p95_ttft_ms<2000"], db=tmp_path / "r.sqlite", write_to=tmp_path / "sweeps" / f"{MODEL}.yml",
        report_dir=tmp_path / "report", **kw,
    )  # fmt: skip


def test_each_candidate_is_deployed_with_isolated_vars_then_undeployed_and_the_winner_written(rec, tmp_path):
    rec.runs = [
        fake_run("run-4", [(2, 500.0, 9.0), (8, 2500.0, 14.0)]),
        fake_run("run-16", [(2, 450.0, 9.5)]),
    ]
    outcome = _run_sweep(tmp_path)
    assert [name for name, _ in rec.calls] == ["deploy-model.yml", "deploy-model.yml", "undeploy-model.yml"]
    for (_, extra), seqs in zip(rec.calls[:2], (4, 16), strict=True):
        assert extra["deployment_plan_max_num_seqs"] == seqs
        assert extra["gateway_listen_port"] == 38000 and extra["deployment_plan_base_port"] == 38100
    assert outcome.winner == {"max_num_seqs": 16}  # run-4's 14 tok/s step breaks the SLO; 9.5 > 9.0
    written = yaml.safe_load((tmp_path / "sweeps" / f"{MODEL}.yml").read_text())
    assert written["deployment_plan_max_num_seqs"] == 16
    evidence = written["llmfleet_sweep"]
    assert evidence["winner"] == {"knobs": {"max_num_seqs": 16}, "run_id": "run-16"}
    assert [c["run_id"] for c in evidence["candidates"]] == ["run-4", "run-16"]
    assert evidence["slos"] == ["p95_ttft_ms<2000"]
    assert (tmp_path / "report" / "compare.md").exists() and (tmp_path / "report" / "ttft.png").exists()
    assert "(winner)" in outcome.summary
    # The written files pass the repository's own yamllint rules (`yamllint --strict .` lints them).
    for path in (tmp_path / "sweeps" / f"{MODEL}.yml", tmp_path / "report" / "sweep.yml"):
        lint = subprocess.run(
            [sys.executable, "-m", "yamllint", "--strict", "-c", str(REPO / ".yamllint"), str(path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert lint.returncode == 0, lint.stdout
        assert "&id" not in path.read_text()


def test_a_failed_deploy_stops_the_sweep_and_still_undeploys(rec, tmp_path):
    rec.deploy_rc = 2
    with pytest.raises(SweepError, match="deploy failed"):
        _run_sweep(tmp_path)
    assert [name for name, _ in rec.calls] == ["deploy-model.yml", "undeploy-model.yml"]
    assert not (tmp_path / "sweeps").exists()


def test_with_keep_going_a_failed_deploy_is_skipped_and_nothing_meets_the_slo(rec, tmp_path):
    rec.deploy_rc = 2
    outcome = _run_sweep(tmp_path, keep_going=True)
    assert [name for name, _ in rec.calls] == ["deploy-model.yml", "deploy-model.yml", "undeploy-model.yml"]
    assert outcome.winner is None and "No candidate met the SLO" in outcome.summary
    assert not (tmp_path / "sweeps").exists()


def test_a_bad_request_is_refused_before_any_deploy(rec, tmp_path):
    with pytest.raises(SweepError, match="fixed per model"):
        sweep.run_sweep(
            model=MODEL, vary=["dtype=1,2"], profile_path=PROFILE, objective="max:output_throughput", slos=[],
            db=tmp_path / "r.sqlite", report_dir=tmp_path / "report",
        )  # fmt: skip
    assert rec.calls == []


def test_ctrl_c_keeps_the_measured_runs_undeploys_and_writes_no_winner(rec, tmp_path, monkeypatch):
    from llmfleet.bench import runner

    rec.runs = [fake_run("run-4", [(2, 500.0, 9.0)])]
    measured = runner.run_profile

    def interrupt_second(*args, **kwargs):  # type: ignore[no-untyped-def]
        if len([c for c in rec.calls if c[0] == "deploy-model.yml"]) == 2:
            raise KeyboardInterrupt
        return measured(*args, **kwargs)

    monkeypatch.setattr(runner, "run_profile", interrupt_second)
    outcome = _run_sweep(tmp_path)
    assert [name for name, _ in rec.calls] == ["deploy-model.yml", "deploy-model.yml", "undeploy-model.yml"]
    assert outcome.winner is None and "Interrupted; not measured: max_num_seqs=16" in outcome.summary
    assert not (tmp_path / "sweeps").exists()
    evidence = yaml.safe_load((tmp_path / "report" / "sweep.yml").read_text())
    assert evidence["interrupted"] is True and evidence["candidates"][0]["run_id"] == "run-4"
