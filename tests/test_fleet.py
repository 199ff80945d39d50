"""Fleet placement: the golden placement of a mixed fleet, its invariants, and each change (scale, drain,
remove, add a node) keeping what runs where it is and touching only the nodes it changes.

Refresh the golden file after a deliberate change with:
UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_fleet.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmfleet.catalog.gpus import load_gpu_catalog
from llmfleet.catalog.models import load_catalog
from llmfleet.cli import main
from llmfleet.errors import FleetError
from llmfleet.fleet.place import FleetPlacement, place_fleet
from llmfleet.fleet.render import PLACEMENT_FILE, model_changes, read_previous, render_placement
from llmfleet.fleet.spec import FleetSpec, load_spec

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "fleet" / "mixed"
CATALOG = load_catalog()
GPUS = load_gpu_catalog()
SMOLLM = "smollm2-135m-instruct"


def place(spec: FleetSpec, previous=None, rebalance: bool = False) -> FleetPlacement:
    return place_fleet(spec, CATALOG, GPUS, GOLDEN, previous=previous, rebalance=rebalance)


def instances(placement: FleetPlacement) -> dict[str, tuple[str, list[int], int | None]]:
    """Every instance by name: its node, GPUs and port."""
    return {i.name: (node, i.gpus, i.port) for node, n in placement.nodes.items() for i in n.instances}


def two_l4s(**models: int) -> FleetSpec:
    return FleetSpec.model_validate(
        {
            "nodes": {
                "l4-01": {"gpu": "L4-24GB", "gpus": 4, "cpus": 16},
                "l4-02": {"gpu": "L4-24GB", "gpus": 4},
            },
            "models": {name.replace("_", "-"): {"replicas": n} for name, n in models.items()},
        }
    )


def test_the_golden_fleet_places_as_recorded():
    text = render_placement(place(load_spec(GOLDEN / "fleet.yml")))
    if os.environ.get("UPDATE_GOLDEN"):
        (GOLDEN / PLACEMENT_FILE).write_text(text)
    assert text == (GOLDEN / PLACEMENT_FILE).read_text(), (
        "re-render with UPDATE_GOLDEN=1 after a deliberate change"
    )


def test_the_golden_facts_file_is_what_gpu_facts_reads_from_the_fixture():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmfleet.cli",
            "gpu-facts",
            "--fixture",
            "tests/fixtures/nvidia/dgx-h100-8gpu",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == json.loads((GOLDEN / "dgx-h100-gpu-facts.json").read_text())


def test_another_process_places_the_same_bytes_and_keeps_them(tmp_path):
    """`fleet place --check` in a fresh process: the golden file is current, read back as the previous
    placement it changes nothing (what runs stays), and the same input gives the same bytes."""
    env = tmp_path / "env"
    shutil.copytree(GOLDEN, env)
    for name in ("fleet.yml",):
        spec = (env / name).read_text().replace("../../../data/", f"{REPO}/tests/data/")
        (env / name).write_text(spec)
    proc = subprocess.run(
        [sys.executable, "-m", "llmfleet.cli", "fleet", "place", "--check", "--inventory", str(env)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "not written; no instance changed" in proc.stdout


def test_invariants_hold_on_the_golden_fleet():
    spec = load_spec(GOLDEN / "fleet.yml")
    placement = place(spec)
    names = [i.name for n in placement.nodes.values() for i in n.instances]
    assert len(names) == len(set(names)), "instance names repeat across the fleet"
    for model, want in spec.models.items():
        assert placement.replicas(model) == want.replicas
    for node, plan in placement.nodes.items():
        ports = [i.port for i in plan.instances if i.port is not None]
        assert len(ports) == len(set(ports)), f"{node}: two instances on one port"
        gpus = [g for i in plan.instances for g in i.gpus]
        assert len(gpus) == len(set(gpus)), f"{node}: GPU sets overlap"
        assert len(gpus) + plan.gpus_free == plan.gpu_count
        for rendered in placement.rendered.get(node, []):
            args = rendered.vllm_args
            assert args[args.index("--port") + 1] == str(rendered.port)
            assert rendered.cuda_visible_devices == ",".join(map(str, rendered.gpus))
    # The DGX's GPUs 0-3 sit on NUMA node 0 and 4-7 on node 1 (the fixture): an instance stays on one.
    for inst in placement.rendered["dgx-01"]:
        assert len({g // 4 for g in inst.gpus}) == 1
        assert inst.numa_node == inst.gpus[0] // 4


def test_the_placement_is_an_inventory_ansible_reads(tmp_path):
    (tmp_path / PLACEMENT_FILE).write_text((GOLDEN / PLACEMENT_FILE).read_text())
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-inventory"), "-i", str(tmp_path), "--host", "l4-01"],
        capture_output=True,
        text=True,
        check=True,
    )
    host = json.loads(proc.stdout)
    assert host["llmfleet_common_profile"] == "gpu"
    assert [i["name"] for i in host["llmfleet_capacity_instances"]] == [f"{SMOLLM}-{n}" for n in range(4)]
    assert host["llmfleet_capacity_instances"][0]["port"] == 9000  # l4-01's base_port
    # vLLM listens on the node's private address (fleet.yml's, else the inventory's ansible_host).
    assert host["llmfleet_fleet_address"] == "10.0.1.14"
    assert (
        host["vllm_container_listen_host"]
        == host["deployment_plan_url_host"]
        == "{{ llmfleet_fleet_address }}"
    )
    assert host["host_firewall_instance_ports"] == "9000-9099", (
        "the firewall covers the node's instance ports"
    )


def test_binpack_fills_one_node_and_spread_uses_both():
    binpack = place(two_l4s(smollm2_135m_instruct=4))
    assert {node for node, _, _ in instances(binpack).values()} == {"l4-01"}
    spread = place(two_l4s(smollm2_135m_instruct=4).model_copy(update={"policy": "spread"}))
    nodes = [node for node, _, _ in instances(spread).values()]
    assert nodes.count("l4-01") == nodes.count("l4-02") == 2


def test_scaling_up_keeps_what_runs_and_touches_only_the_node_that_gains():
    before = place(two_l4s(smollm2_135m_instruct=4))
    previous = {n: p.instances for n, p in before.nodes.items()}
    after = place(two_l4s(smollm2_135m_instruct=6), previous=previous)
    old, new = instances(before), instances(after)
    assert {k: new[k] for k in old} == old
    assert sorted(set(new) - set(old)) == [f"{SMOLLM}-4", f"{SMOLLM}-5"]
    assert model_changes(previous, after) == {SMOLLM: {"deploy": ["l4-02"], "undeploy": []}}


def test_scaling_down_drops_the_highest_numbered_instances():
    before = place(two_l4s(smollm2_135m_instruct=6))
    previous = {n: p.instances for n, p in before.nodes.items()}
    after = place(two_l4s(smollm2_135m_instruct=3), previous=previous)
    assert sorted(instances(after)) == [f"{SMOLLM}-0", f"{SMOLLM}-1", f"{SMOLLM}-2"]
    assert {k: instances(before)[k] for k in instances(after)} == instances(after)


def test_draining_a_node_moves_only_its_instances():
    spec = two_l4s(smollm2_135m_instruct=5)
    before = place(spec)
    previous = {n: p.instances for n, p in before.nodes.items()}
    drained = spec.model_copy(
        update={"nodes": {**spec.nodes, "l4-01": spec.nodes["l4-01"].model_copy(update={"drained": True})}}
    )
    with pytest.raises(FleetError) as refused:
        place(drained, previous=previous)
    message = str(refused.value)
    assert "smollm2-135m-instruct: instance 5 of 5 fits no node" in message
    assert "l4-01 (4 x L4-24GB: drained)" in message
    assert "l4-02 (4 x L4-24GB: needs 1 free GPU(s) on one NUMA node, has 0 free)" in message
    after = place(
        drained.model_copy(
            update={"models": {SMOLLM: spec.models[SMOLLM].model_copy(update={"replicas": 4})}}
        ),
        previous=previous,
    )
    assert after.nodes["l4-01"].instances == []
    assert instances(after)[f"{SMOLLM}-4"] == instances(before)[f"{SMOLLM}-4"]  # it was on l4-02: stays
    assert model_changes(previous, after)[SMOLLM] == {"deploy": ["l4-02"], "undeploy": ["l4-01"]}


def test_rebalance_places_afresh_and_without_it_nothing_moves_back():
    spec = two_l4s(smollm2_135m_instruct=2).model_copy(update={"policy": "spread"})
    spread = place(spec)
    previous = {n: p.instances for n, p in spread.nodes.items()}
    binpack = spec.model_copy(update={"policy": "binpack"})
    assert instances(place(binpack, previous=previous)) == instances(spread)
    assert {n for n, _, _ in instances(place(binpack, previous=previous, rebalance=True)).values()} == {
        "l4-01"
    }


def test_a_model_no_node_can_hold_is_refused_with_the_nearest_fit():
    spec = FleetSpec.model_validate(
        {
            "nodes": {
                "l4-01": {"gpu": "L4-24GB", "gpus": 2},
                "cpu-01": {"profile": "cpu", "cpus": 2, "memory_gib": 4},
            },
            "models": {SMOLLM: {"replicas": 5}},
        }
    )
    with pytest.raises(FleetError) as refused:
        place(spec)
    message = str(refused.value)
    assert "instance 5 of 5 fits no node" in message
    assert "cpu-01 (CPU node, 2 CPUs, 4 GiB: needs 1.3 GiB, 0.7 GiB of its budget left)" in message
    assert "Lower models.smollm2-135m-instruct.replicas to 4" in message


FLEET_YML = """\
nodes:
  l4-01: {gpu: L4-24GB, gpus: 2}
models:
  smollm2-135m-instruct: {replicas: 2}
"""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_one_command_scales_writes_both_files_and_prints_the_playbook_run(tmp_path, capsys):
    (tmp_path / "fleet.yml").write_text(FLEET_YML)
    rc, out, _ = run(capsys, "fleet", "place", "--inventory", str(tmp_path))
    assert rc == 0 and "nodes changed: l4-01" in out
    rc, out, err = run(capsys, "fleet", "scale", "--inventory", str(tmp_path), SMOLLM, "3")
    assert rc == 14 and "instance 3 of 3 fits no node" in err
    assert yaml.safe_load((tmp_path / "fleet.yml").read_text())["models"][SMOLLM]["replicas"] == 2, (
        "a refused change must leave fleet.yml as it was"
    )
    rc, out, _ = run(
        capsys, "fleet", "add-node", "--inventory", str(tmp_path), "l4-02", "--gpu", "L4-24GB", "--gpus", "1"
    )
    assert rc == 0 and "no node needs a playbook run" in out  # a new empty node changes no instance
    rc, out, _ = run(capsys, "fleet", "scale", "--inventory", str(tmp_path), SMOLLM, "3")
    assert rc == 0
    assert f"deploy-model.yml -e model={SMOLLM} --limit 'l4-02,gateways'" in out
    previous, _ = read_previous(tmp_path)
    assert [i.name for i in previous["l4-02"]] == [f"{SMOLLM}-2"]
    rc, out, _ = run(capsys, "fleet", "remove", "--inventory", str(tmp_path), SMOLLM)
    assert rc == 0 and f"undeploy-model.yml -e model={SMOLLM} --limit 'l4-01,l4-02,gateways'" in out
    assert read_previous(tmp_path)[0] == {"l4-01": [], "l4-02": []}


def test_a_fleet_file_next_to_a_capacity_render_is_refused(tmp_path, capsys):
    (tmp_path / "fleet.yml").write_text(FLEET_YML)
    (tmp_path / "capacity-hosts.yml").write_text("---\n")
    rc, _, err = run(capsys, "fleet", "place", "--inventory", str(tmp_path))
    assert rc == 14 and "capacity-hosts.yml" in err
    assert not (tmp_path / PLACEMENT_FILE).exists()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("nodes: {l4-01: {gpu: L4-24GB}}\n", "nodes.l4-01: Value error, gpu and gpus go together"),
        ("nodes: {x: {gpu: NOPE, gpus: 1}}\n", "nodes.x.gpu 'NOPE' is not in catalog/gpus.yml"),
        ("nodes: {c: {profile: cpu, cpus: 2}}\n", "a CPU node needs cpus and memory_gib"),
        ("nodes: {t: {gpu: L4-24GB, gpus: 1}}\nmodels: {nope: {replicas: 1}}\n", "unknown model 'nope'"),
        (
            "nodes: {t: {gpu: L4-24GB, gpus: 1}}\nmodels: {x: {replica: 1}}\n",
            "models.x.replica: unknown field",
        ),
    ],
)
def test_a_wrong_fleet_file_is_one_error_naming_the_field(tmp_path, capsys, text, named):
    (tmp_path / "fleet.yml").write_text(text)
    rc, _, err = run(capsys, "fleet", "place", "--inventory", str(tmp_path))
    assert rc in (4, 14), err
    assert named in err
    assert "Traceback" not in err


def test_a_catalog_model_is_planned_at_the_catalog_dtype_so_a_gpu_without_it_is_refused():
    spec = FleetSpec.model_validate(
        {"nodes": {"t4-01": {"gpu": "T4-16GB", "gpus": 4}}, "models": {SMOLLM: {"replicas": 1}}}
    )
    with pytest.raises(FleetError) as refused:
        place(spec)
    assert "t4-01 (4 x T4-16GB: does not fit a 4 x T4-16GB node: T4-16GB has no bfloat16 support" in str(
        refused.value
    )


def test_the_host_planner_deploys_what_the_placement_says_under_its_names():
    """The contract with deploy-model.yml: a node's placement variables, as the deployment_plan role passes
    them, give the host plan the placement's instances, GPUs, ports and fleet-wide names."""
    from llmfleet.deploy.plan import DeploymentSettings, plan_model
    from llmfleet.fleet.render import host_vars
    from llmfleet.hosts.facts import HostFacts

    spec = FleetSpec.model_validate(
        {
            "nodes": {
                "l4-01": {"gpu": "L4-24GB", "gpus": 2, "cpus": 8},
                "cpu-01": {"profile": "cpu", "cpus": 4, "memory_gib": 16},
            },
            "models": {SMOLLM: {"replicas": 3}},
        }
    )
    placement = place(spec)
    own = host_vars(placement)
    gpu_host = HostFacts(hostname="l4-01", cpus=list(range(8)), memory_bytes=64 * 1024**3, gpu_count=2)
    names = [i["name"] for i in own["l4-01"]["llmfleet_fleet_instances"]]
    gpu = DeploymentSettings(
        profile="gpu",
        capacity_instances=own["l4-01"]["llmfleet_capacity_instances"],
        instance_names=names,
    )
    plan = plan_model(SMOLLM, CATALOG.get(SMOLLM), gpu_host, gpu)
    assert [(i.name, i.gpus, i.port) for i in plan.instances] == [
        (n, g, p) for n, (_, g, p) in sorted(instances(placement).items()) if n in names
    ]
    cpu_names = [i["name"] for i in own["cpu-01"]["llmfleet_fleet_instances"]]
    assert cpu_names == [f"{SMOLLM}-2"], "the third instance goes to the CPU node, numbered on from the GPUs'"
    cpu_host = HostFacts(hostname="cpu-01", cpus=list(range(4)), memory_bytes=16 * 1024**3, gpu_count=0)
    cpu = DeploymentSettings(
        profile="cpu",
        instances=own["cpu-01"]["deployment_plan_instances_by_model"][SMOLLM],
        instance_names=cpu_names,
    )
    first = plan_model(SMOLLM, CATALOG.get(SMOLLM), cpu_host, cpu)
    assert [i.name for i in first.instances] == cpu_names
    # A redeploy under the fleet's names replaces in place: a blue-green copy would need names of its own.
    changed = cpu.model_copy(update={"max_num_seqs": 8})
    again = plan_model(SMOLLM, CATALOG.get(SMOLLM), cpu_host, changed, previous=first)
    assert again.update is not None and again.update.strategy == "rolling"
    assert "the fleet placement names the instances" in again.update.reason
    assert [i.name for i in again.instances] == cpu_names
