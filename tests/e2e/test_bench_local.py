"""End to end: `llmfleet sweep` on this machine with real vLLM and HAProxy, then its benchmark runs checked.

Two candidates (max_num_seqs 2 and 8) are deployed through the real playbook on the sweep's own ports and
directories (gateway 38000, instances from 38100, /var/lib/llmfleet-sweep ...), benchmarked with
bench/profiles/smoke.yaml through the gateway, and undeployed. Nothing here asserts a time: it checks that
vLLM's own usage confirms the exact prompt and output lengths, that every request succeeded, that the
winner and its evidence were written, and that the sweep deployment is gone afterwards.
Run: .venv/bin/python -m pytest -m e2e tests/e2e/test_bench_local.py (about 10 minutes on 2 cores).
Do not run it while another `llmfleet sweep` runs: both use port 38000.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmfleet.bench.profile import load_profile
from llmfleet.bench.store import ResultStore

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "smollm2-135m-instruct"
PROFILE = REPO / "bench" / "profiles" / "smoke.yaml"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    proc = subprocess.run(
        [str(BIN / "llmfleet"), "sweep", "--model", MODEL, "--vary", "max_num_seqs=2,8",
         "--profile", str(PROFILE), "--objective", "max:output_throughput", "--slo", "error_rate<=0",
         "--db", str(tmp / "r.sqlite"),
         "--write-to", str(tmp / "winner.yml"), "--report-dir", str(tmp / "report")],
        cwd=REPO, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    return proc, tmp


def test_the_sweep_picks_a_winner_and_writes_it_with_evidence(swept):
    proc, tmp = swept
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    written = yaml.safe_load((tmp / "winner.yml").read_text())
    assert written["deployment_plan_max_num_seqs"] in (2, 8)
    evidence = written["llmfleet_sweep"]
    assert len(evidence["candidates"]) == 2 and all(c["run_id"] for c in evidence["candidates"])
    assert evidence["winner"]["run_id"] in {c["run_id"] for c in evidence["candidates"]}
    for name in ("compare.md", "ttft.png", "throughput.png", "sweep.yml"):
        assert (tmp / "report" / name).stat().st_size > 0


def test_vllm_usage_confirms_exact_lengths_and_no_request_failed(swept):
    proc, tmp = swept
    assert proc.returncode == 0
    profile = load_profile(PROFILE)
    (exp,) = profile.experiments
    with ResultStore(tmp / "r.sqlite") as store:
        for run_id in store.run_ids():
            run = store.load_run(run_id)
            assert run.status == "complete"
            assert "--max-num-seqs" in run.fingerprint["vllm_argv"][0]
            assert run.fingerprint["vllm_version"]
            for conc in exp.concurrency:
                requests = store.load_requests(run_id, exp.name, conc)
                assert len(requests) == exp.requests
                assert all(r.ok for r in requests), [r.error for r in requests]
                assert {r.prompt_tokens for r in requests} == {exp.input_tokens}
                assert {r.output_tokens for r in requests} == {exp.output_tokens}
                assert all(len(r.itl) == exp.output_tokens - 1 for r in requests)


def test_the_sweep_deployment_is_gone(swept):
    assert not (Path("/var/lib/llmfleet-sweep/deployments") / f"{MODEL}.json").exists()
    assert not port_open(38000) and not port_open(38100)
