"""The host planner on GPU hosts: it reads the capacity plan rendered into the inventory.

The inputs are real renders (``llmfleet capacity render``) of the catalog's two models on L4 nodes, read
back from the YAML the deploy playbook reads, so the two halves are tested together.
"""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from llmfleet.capacity.candidates import plan_capacity
from llmfleet.capacity.modelconfig import load_model
from llmfleet.capacity.options import EmbeddingOptions, PlanOptions
from llmfleet.capacity.placement import RenderedInstance
from llmfleet.capacity.render import render_inventory
from llmfleet.catalog.gpus import load_gpu_catalog
from llmfleet.deploy.plan import DeploymentSettings, plan_model
from llmfleet.errors import PlanError
from llmfleet.hosts.facts import HostFacts

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "tests" / "data" / "hf-configs"
CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
HOST = HostFacts(hostname="l4-a", cpus=list(range(16)), memory_bytes=64 * 1024**3, gpu_count=2)


def rendered_host_vars(gpu_memory_utilization: float = 0.9) -> dict:
    """host_vars/l4-a.yml of a 2 x L4 node: SmolLM2 (catalog's max_model_len 2048) plus 2 MiniLM replicas."""
    arch, source = load_model(CONFIGS / "HuggingFaceTB--SmolLM2-135M-Instruct")
    arch = arch.model_copy(update={"name": CHAT})
    e_arch, e_source = load_model(CONFIGS / "sentence-transformers--all-MiniLM-L6-v2")
    e_arch = e_arch.model_copy(update={"name": EMBED})
    options = PlanOptions(
        gpu="L4-24GB",
        gpus_per_node=2,
        max_model_len=2048,
        dtype="bfloat16",
        gpu_memory_utilization=gpu_memory_utilization,
        hosts=["l4-a"],
        cpus_per_node=16,
        embedding=EmbeddingOptions(replicas=2),
    )
    plan = plan_capacity(arch, source, options, load_gpu_catalog(), (e_arch, e_source))
    files = render_inventory(plan, "lab")
    return yaml.safe_load(files["inventories/lab/host_vars/l4-a.yml"])


def gpu_settings(host_vars: dict, **extra) -> DeploymentSettings:
    return DeploymentSettings(
        profile="gpu",
        capacity_instances=[
            RenderedInstance.model_validate(i) for i in host_vars["llmfleet_capacity_instances"]
        ],
        gpu_memory_utilization_by_gpu={
            int(g): u for g, u in host_vars["llmfleet_capacity_gpu_memory_utilization_by_gpu"].items()
        },
        **extra,
    )


@pytest.fixture
def host_vars() -> dict:
    return rendered_host_vars()


def _embedding_entry(catalog):
    # The catalog serves MiniLM in float32 with max_model_len 256; the render above used bfloat16 and 512.
    entry = catalog.get(EMBED)
    return entry.model_copy(
        update={"serving": entry.serving.model_copy(update={"dtype": "bfloat16", "max_model_len": 512})}
    )


def test_the_chat_model_takes_its_capacity_instances_as_containers(catalog, host_vars):
    plan = plan_model(CHAT, catalog.get(CHAT), HOST, gpu_settings(host_vars))
    rendered = [i for i in host_vars["llmfleet_capacity_instances"] if i["model"] == CHAT]
    assert [i.name for i in plan.instances] == [f"{CHAT}-0", f"{CHAT}-1"]
    assert [i.port for i in plan.instances] == [r["port"] for r in rendered]
    for inst, cap in zip(plan.instances, rendered, strict=True):
        assert inst.runtime == "container"
        assert inst.gpus == cap["gpus"] and inst.numa_node == cap["numa_node"] and inst.cpus == cap["cpus"]
        assert inst.kv_cache.tokens == cap["expected_kv_cache_tokens"] > 0
        assert inst.kv_cache.bytes_per_token == 23_040  # SmolLM2 in bf16, as on the CPU path
        # The capacity plan's arguments, the port first, and the usage the gateway counts tokens from.
        assert inst.argv[:2] == ["--port", str(inst.port)]
        assert inst.argv.count("--port") == 1
        assert "--enable-force-include-usage" in inst.argv
        assert "--tensor-parallel-size" in inst.argv
    assert plan.update and plan.update.strategy == "initial"


def test_the_embedding_replicas_are_planned_beside_it(catalog, host_vars):
    chat = plan_model(CHAT, catalog.get(CHAT), HOST, gpu_settings(host_vars))
    emb = plan_model(
        EMBED,
        _embedding_entry(catalog),
        HOST,
        gpu_settings(host_vars),
        ports_taken={i.port for i in chat.instances},
    )
    assert [i.name for i in emb.instances] == [f"{EMBED}-0", f"{EMBED}-1"]
    assert all(i.task == "embedding" and i.kv_cache.tokens == 0 for i in emb.instances)
    assert all(
        "--runner" in i.argv and i.argv[i.argv.index("--runner") + 1] == "pooling" for i in emb.instances
    )
    ports = [i.port for p in (chat, emb) for i in p.instances]
    assert len(ports) == len(set(ports))


def test_a_port_another_model_holds_moves_and_the_argument_follows(catalog, host_vars):
    plan = plan_model(CHAT, catalog.get(CHAT), HOST, gpu_settings(host_vars), ports_taken={8100})
    assert 8100 not in [i.port for i in plan.instances]
    for inst in plan.instances:
        assert inst.argv[inst.argv.index("--port") + 1] == str(inst.port)
        assert inst.url == f"http://127.0.0.1:{inst.port}"


def test_same_input_same_bytes(catalog):
    a = plan_model(CHAT, catalog.get(CHAT), HOST, gpu_settings(rendered_host_vars())).model_dump_json()
    b = plan_model(CHAT, catalog.get(CHAT), HOST, gpu_settings(rendered_host_vars())).model_dump_json()
    assert a == b


def test_a_model_the_capacity_plan_does_not_have_is_refused_with_the_render_command(catalog, host_vars):
    vars_ = dict(host_vars)
    vars_["llmfleet_capacity_instances"] = [
        i for i in host_vars["llmfleet_capacity_instances"] if i["model"] == EMBED
    ]
    with pytest.raises(
        PlanError, match=rf"no instances of '{CHAT}' \(it plans {EMBED}\).*llmfleet capacity render"
    ):
        plan_model(CHAT, catalog.get(CHAT), HOST, gpu_settings(vars_))


def test_a_capacity_plan_that_changes_what_the_model_outputs_is_refused(catalog, host_vars):
    # The catalog fixes MiniLM's max_model_len at 256 and float32; the render asked for 512 and bfloat16.
    with pytest.raises(PlanError, match=r"--max-model-len 512, the catalog fixes 256.*--dtype bfloat16"):
        plan_model(EMBED, catalog.get(EMBED), HOST, gpu_settings(host_vars))


def test_a_changed_plan_rolls_when_two_copies_do_not_fit_the_gpus(catalog, host_vars):
    first = plan_model(CHAT, catalog.get(CHAT), HOST, gpu_settings(host_vars))
    changed = gpu_settings(host_vars, extra_args=["--max-num-seqs", "64"])
    second = plan_model(CHAT, catalog.get(CHAT), HOST, changed, previous=first)
    assert second.update and second.update.strategy == "rolling"
    assert "GPU 0 would hold 1.85 of its memory with both copies (limit 0.98)" in second.update.reason
    assert [i.name for i in second.instances] == [i.name for i in first.instances]
    # Replaced in place: the memory they hold now is theirs again after the restart.
    assert second.update.running == [i.name for i in first.instances]
    with pytest.raises(PlanError, match=r"blue-green needs room.*lower --gpu-memory-utilization"):
        plan_model(
            CHAT,
            catalog.get(CHAT),
            HOST,
            gpu_settings(host_vars, extra_args=["--max-num-seqs", "64"], update_strategy="blue-green"),
            previous=first,
        )


def test_a_changed_plan_goes_blue_green_when_both_copies_fit_the_gpus(catalog):
    small = rendered_host_vars(gpu_memory_utilization=0.4)
    first = plan_model(CHAT, catalog.get(CHAT), HOST, gpu_settings(small))
    second = plan_model(
        CHAT,
        catalog.get(CHAT),
        HOST,
        gpu_settings(small, extra_args=["--max-num-seqs", "64"]),
        previous=first,
    )
    assert second.update and second.update.strategy == "blue-green", second.update
    assert [i.name for i in second.instances] == [f"{CHAT}-2", f"{CHAT}-3"]
    assert {i.port for i in second.instances}.isdisjoint({i.port for i in first.instances})
    assert [i.gpus for i in second.instances] == [i.gpus for i in first.instances]
    assert [r.name for r in second.update.retire] == [f"{CHAT}-0", f"{CHAT}-1"]
    # The new copy runs beside the old one: its memory must be free.
    assert second.update.running == []
    again = plan_model(CHAT, catalog.get(CHAT), HOST, gpu_settings(small), previous=first)
    assert (
        again.update
        and again.update.strategy == "unchanged"
        and again.update.running == [f"{CHAT}-0", f"{CHAT}-1"]
    )


def _with_instances(plan, **changes_by_name):
    """``plan`` as if it had been deployed with the given instance fields changed (a different past)."""
    instances = [inst.model_copy(update=changes_by_name.get(inst.name, {})) for inst in plan.instances]
    return plan.model_copy(update={"instances": instances})


def test_a_rolling_update_that_moves_instances_onto_other_gpus_is_refused_naming_the_ways_out(
    catalog, host_vars
):
    first = plan_model(CHAT, catalog.get(CHAT), HOST, gpu_settings(host_vars))
    # Deployed when -0 sat on GPU 1 and -1 on GPU 0: restarting -0 first would start it on -1's GPU.
    swapped = _with_instances(first, **{f"{CHAT}-0": {"gpus": [1]}, f"{CHAT}-1": {"gpus": [0]}})
    changed = gpu_settings(host_vars, extra_args=["--max-num-seqs", "64"])
    with pytest.raises(PlanError) as refused:
        plan_model(CHAT, catalog.get(CHAT), HOST, changed, previous=swapped)
    message = str(refused.value)
    assert f"{CHAT}-0: GPUs [1] -> [0]" in message and f"{CHAT}-1: GPUs [0] -> [1]" in message
    assert f"undeploy-model.yml -e model={CHAT}" in message and "blue-green" in message


def test_only_instances_that_keep_their_gpus_and_share_count_as_holding_their_memory(catalog, host_vars):
    first = plan_model(CHAT, catalog.get(CHAT), HOST, gpu_settings(host_vars))
    share = first.instances[0].gpu_memory_utilization
    assert share is not None
    # -0 ran with a smaller share (the new plan needs more than it holds); -1 with a larger one.
    past = _with_instances(
        first,
        **{
            f"{CHAT}-0": {"gpu_memory_utilization": share - 0.1},
            f"{CHAT}-1": {"gpu_memory_utilization": share + 0.05},
        },
    )
    second = plan_model(CHAT, catalog.get(CHAT), HOST, gpu_settings(host_vars), previous=past)
    assert second.update and second.update.strategy == "rolling"
    assert second.update.running == [f"{CHAT}-1"]


def test_a_capacity_instance_field_the_host_planner_does_not_know_is_refused(host_vars):
    # One schema (RenderedInstance) for what render writes and what the host planner reads: a field
    # one side adds is an error, not silently dropped.
    instance = {**host_vars["llmfleet_capacity_instances"][0], "new_knob": 1}
    with pytest.raises(pydantic.ValidationError, match="new_knob"):
        DeploymentSettings(profile="gpu", capacity_instances=[instance])
