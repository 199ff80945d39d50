"""`llmfleet preflight gpu`: the plan against the host (count, model, free memory, NUMA placement).

The host is a hand-written fixture (tests/fixtures/nvidia/README.md: NOT captured); the plans are real
outputs of the capacity planner.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmfleet.hosts.gpucompat import check_plan, load_compat, node_from_plan, preflight
from llmfleet.hosts.topology import gather

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "nvidia"
DGX = FIXTURES / "dgx-h100-8gpu"
PCIE = FIXTURES / "pcie-l40s-2socket"
QWEN72 = REPO / "tests" / "data" / "hf-configs" / "Qwen--Qwen2.5-72B"
QWEN7 = REPO / "tests" / "data" / "hf-configs" / "Qwen--Qwen2.5-7B-Instruct"


def llmfleet(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmfleet", *args], capture_output=True, text=True, input=stdin, timeout=120
    )


def capacity_plan(config: Path, gpu: str, gpus: int, *extra: str) -> dict:
    proc = llmfleet(
        "capacity", "plan", "--config", str(config), "--gpu", gpu, "--gpus-per-node", str(gpus),
        "--max-model-len", "8192", "--json", *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def dgx_plan() -> dict:
    """Qwen2.5-72B as two TP=4 instances on an 8 x H100 node with two NUMA nodes."""
    return capacity_plan(QWEN72, "H100-80GB", 8, "--tp", "4", "--numa-nodes", "2", "--cpus-per-node", "224")


def test_placement_from_the_plan_stays_on_one_numa_node(dgx_plan: dict):
    """Each planned GPU set sits on one NUMA node; the container gets exactly that node's CPUs and memory."""
    topo = gather(fixture_dir=DGX)
    result = preflight(topo, load_compat(), "v0.6.6", dgx_plan)
    places = result["placements"]
    assert sorted(places) == ["qwen2.5-72b-0", "qwen2.5-72b-1"]
    for inst in dgx_plan["nodes"][0]["instances"]:
        place = places[inst["name"]]
        nodes = {topo.gpu(g).numa_node for g in inst["gpus"]}
        assert nodes == {place["numa_node"]}
        numa = next(n for n in topo.numa_nodes if n.node == place["numa_node"])
        assert place["cpuset_mems"] == str(numa.node)
        assert place["cpuset_cpus"] == {0: "0-55,112-167", 1: "56-111,168-223"}[numa.node]
        assert place["nvlink"] is True
    # The planner numbers CPUs contiguously (0-111 for node 0); the host's node 0 is 0-55,112-167. Noted, and
    # the container is pinned from the host's topology.
    assert any("planned CPUs 56-111 are not on NUMA node 0" in n for n in result["notes"])


def test_busy_gpu_refused_with_free_memory_and_the_fix(dgx_plan: dict):
    result = preflight(gather(fixture_dir=DGX), load_compat(), "v0.6.6", dgx_plan)
    assert result["ok"] is False
    assert [r["check"] for r in result["refusals"]] == ["gpu_memory"]
    msg = result["refusals"][0]["message"]
    assert "GPU 5 needs 73403 MiB (0.90 of 81559 MiB)" in msg and "has 41002 MiB free" in msg
    assert "--gpu-memory-utilization 0.49" in msg


def test_an_instance_running_now_keeps_the_memory_it_holds(dgx_plan: dict):
    # A redeploy that keeps or replaces qwen2.5-72b-1 in place: the 40 GB used on GPU 5 may be its own,
    # so its share is not asked for again; its placement is still checked and returned.
    node = dgx_plan["nodes"][0]
    marked = {**node, "instances": [{**i, "running": i["name"].endswith("-1")} for i in node["instances"]]}
    result = preflight(gather(fixture_dir=DGX), load_compat(), "v0.6.6", {"gpu": dgx_plan["gpu"], **marked})
    assert result["ok"] is True, result["refusals"]
    assert sorted(result["placements"]) == ["qwen2.5-72b-0", "qwen2.5-72b-1"]


def test_plan_that_fits_passes_on_the_pcie_box():
    plan = capacity_plan(QWEN7, "L40S-48GB", 4, "--numa-nodes", "2", "--gpu-memory-utilization", "0.9")
    topo = gather(fixture_dir=PCIE)
    _, node = node_from_plan(plan, None)
    assert check_plan(topo, plan["gpu"]["name"], node) == []
    for inst in node["instances"]:
        assert {topo.gpu(g).numa_node for g in inst["gpus"]} == {inst["numa_node"]}


def test_wrong_card_and_too_few_gpus_are_refused(dgx_plan: dict):
    topo = gather(fixture_dir=PCIE)
    refusals = check_plan(topo, dgx_plan["gpu"]["name"], dgx_plan["nodes"][0])
    checks = {r.check: r.message for r in refusals}
    assert "GPUs [4, 5, 6, 7] are missing" in checks["gpu_count"]
    assert "--gpus-per-node 4" in checks["gpu_count"]
    assert "the plan is for H100-80GB but GPU 0 is 'NVIDIA L40S' (L40S-48GB)" in checks["gpu_model"]
    assert "--gpu L40S-48GB" in checks["gpu_model"]


def test_instance_spanning_sockets_is_refused():
    topo = gather(fixture_dir=PCIE)
    node = {
        "host": "x",
        "instances": [
            {"name": "m-0", "gpus": [1, 2], "numa_node": 0, "gpu_memory_utilization": 0.5, "cpus": []}
        ],
    }
    [refusal] = check_plan(topo, "L40S-48GB", node)
    assert refusal.check == "numa" and "instance m-0: GPUs [1, 2] span NUMA nodes" in refusal.message


def test_plan_numa_node_disagreeing_with_sysfs_is_refused():
    topo = gather(fixture_dir=PCIE)
    node = {
        "host": "x",
        "instances": [
            {"name": "m-0", "gpus": [2, 3], "numa_node": 0, "gpu_memory_utilization": 0.5, "cpus": []}
        ],
    }
    [refusal] = check_plan(topo, "L40S-48GB", node)
    assert "sysfs says node 1" in refusal.message and "--numa-nodes 2" in refusal.message


def test_cli_exit_codes_and_json(dgx_plan: dict, tmp_path: Path):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(dgx_plan))
    bad = llmfleet("preflight", "gpu", "--image-version", "v0.6.6", "--plan-json", str(plan_file),
                   "--fixture", str(DGX))  # fmt: skip
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["ok"] is False
    assert "refused (gpu_memory): GPU 5 needs" in bad.stderr
    good = llmfleet("preflight", "gpu", "--image-version", "v0.6.6", "--fixture", str(DGX))
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["ok"] is True
    old = llmfleet("preflight", "gpu", "--image-version", "v0.9.2", "--fixture", str(PCIE))
    assert old.returncode == 1 and "CUDA 12.8 needs >= 570.26" in old.stderr
    unknown = llmfleet("preflight", "gpu", "--image-version", "nope", "--fixture", str(PCIE))
    assert unknown.returncode == 12 and "Traceback" not in unknown.stderr


def test_gpu_facts_cli():
    proc = llmfleet("gpu-facts", "--fixture", str(DGX))
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["nvlink_islands"] == [list(range(8))]
    assert [n["gpus"] for n in facts["numa_nodes"]] == [[0, 1, 2, 3], [4, 5, 6, 7]]
