from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmfleet.deploy.cpuhost import Held, held_on_host, weights_bytes
from llmfleet.deploy.plan import (
    DeploymentSettings,
    kv_bytes_per_token,
    kv_cache,
    plan_model,
)
from llmfleet.errors import PlanError
from llmfleet.hosts.cpusets import format_cpulist, split_cpus
from llmfleet.hosts.facts import HostFacts

MODEL = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
GIB = 1024**3


def test_kv_cache_matches_what_vllm_logged(catalog):
    # vLLM 0.32 CPU, VLLM_CPU_KVCACHE_SPACE=1, SmolLM2-135M bf16 logged:
    # "CPU KV cache size: 46,592 tokens, Maximum concurrency for 2,048 tokens per request: 22.75x"
    arch = catalog.get(MODEL).architecture
    cache = kv_cache(arch, "bfloat16", 1, 2048)
    assert cache.bytes_per_token == 23_040
    assert cache.tokens == 46_592
    assert cache.max_concurrency_at_max_len == 22.75


def test_kv_bytes_use_kv_heads_not_attention_heads(catalog):
    arch = catalog.get(MODEL).architecture
    mha_formula = 2 * arch.num_hidden_layers * arch.num_attention_heads * arch.head_dim * 2
    assert kv_bytes_per_token(arch, "bfloat16") * 3 == mha_formula


def test_plan_for_this_machine(catalog, cpu_host, cpu_settings):
    plan = plan_model(MODEL, catalog.get(MODEL), cpu_host, cpu_settings)
    (inst,) = plan.instances
    assert inst.port == 8100
    assert inst.url == "http://127.0.0.1:8100"
    assert inst.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert inst.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert inst.env["HF_HUB_OFFLINE"] == "1"
    assert "--enforce-eager" in inst.argv
    assert inst.argv[inst.argv.index("--model") + 1] == plan.weights_path
    assert plan.weights_path == "/var/lib/llmfleet/serving/smollm2-135m-instruct/b179c9523d0e"


# Two processes with different string-hash seeds: a plan whose bytes depend on set or dict order of
# strings (hash randomisation) renders differently in one of them. PYTHONHASHSEED=0 turns the
# randomisation off; the other two seeds are arbitrary but fixed, so a failure reproduces.
HASH_SEEDS = ("0", "1", "4242")
SAME_INPUT_HOST = HostFacts(hostname="node-a", cpus=list(range(4)), memory_bytes=24 * GIB, gpu_count=0)
SAME_INPUT_SETTINGS = DeploymentSettings(profile="cpu", instances=2)


def _run_with_hash_seed(argv: list[str], seed: str, cwd: Path) -> bytes:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, env=env, cwd=cwd, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.strip(), "the process printed no plan"
    return done.stdout


def test_the_hash_seeds_used_give_a_set_of_plan_strings_different_orders(tmp_path):
    # The control for the two tests below: with these seeds, iterating a set of the strings a plan
    # holds does come out in different orders, so a plan built that way would differ between them.
    code = (
        "import sys\n"
        "words = {'VLLM_CPU_KVCACHE_SPACE', 'HF_HUB_OFFLINE', 'VLLM_CPU_OMP_THREADS_BIND', '--enforce'}\n"
        "sys.stdout.write(','.join(words))\n"
    )
    orders = {_run_with_hash_seed(["-c", code], seed, tmp_path) for seed in HASH_SEEDS}
    assert len(orders) > 1


def test_same_input_same_bytes_from_the_cli_in_processes_with_different_hash_seeds(tmp_path):
    # What the deployment_plan role runs and records: `llmfleet plan` on fixed host facts, with an
    # empty registry so nothing on this machine leaks in.
    argv = [
        "-m",
        "llmfleet",
        "plan",
        "--model",
        MODEL,
        "--settings-json",
        SAME_INPUT_SETTINGS.model_dump_json(),
        "--host-facts-json",
        SAME_INPUT_HOST.model_dump_json(),
        "--registry",
        str(tmp_path / "registry"),
    ]
    outputs = {seed: _run_with_hash_seed(argv, seed, tmp_path) for seed in HASH_SEEDS}
    assert len(json.loads(outputs["0"])["instances"]) == 2
    assert outputs["1"] == outputs["0"]
    assert outputs["4242"] == outputs["0"]


def test_same_input_same_model_dump_json_bytes_in_processes_with_different_hash_seeds(tmp_path):
    # The CLI sorts keys; model_dump_json keeps the model's own field and dict order, so this one
    # also catches a dict (env, argv built from a dict) filled in an order that varies by process.
    code = (
        "import sys\n"
        "from llmfleet.catalog.models import load_catalog\n"
        "from llmfleet.deploy.plan import DeploymentSettings, plan_model\n"
        "from llmfleet.hosts.facts import HostFacts\n"
        "host = HostFacts.model_validate_json(sys.argv[1])\n"
        "settings = DeploymentSettings.model_validate_json(sys.argv[2])\n"
        f"entry = load_catalog().get({MODEL!r})\n"
        f"sys.stdout.write(plan_model({MODEL!r}, entry, host, settings).model_dump_json())\n"
    )
    argv = ["-c", code, SAME_INPUT_HOST.model_dump_json(), SAME_INPUT_SETTINGS.model_dump_json()]
    outputs = {seed: _run_with_hash_seed(argv, seed, tmp_path) for seed in HASH_SEEDS}
    assert json.loads(outputs["0"])["model"] == MODEL
    assert outputs["1"] == outputs["0"]
    assert outputs["4242"] == outputs["0"]


@pytest.mark.parametrize(("cpus", "parts"), [(8, 1), (8, 3), (16, 4), (7, 7), (2, 2)])
def test_cpu_sets_are_disjoint_and_cover_the_host(cpus, parts):
    sets = split_cpus(list(range(cpus)), parts)
    assert len(sets) == parts
    assert all(sets)
    for a, b in itertools.combinations(sets, 2):
        assert not set(a) & set(b)
    assert sorted(itertools.chain(*sets)) == list(range(cpus))
    assert max(map(len, sets)) - min(map(len, sets)) <= 1


def test_more_instances_than_cpus_is_refused_with_the_fix():
    with pytest.raises(PlanError, match="Lower deployment_plan_instances to 2 or fewer"):
        split_cpus([0, 1], 3)


def test_cpu_list_format():
    assert format_cpulist([0, 1, 2, 5]) == "0-2,5"
    assert format_cpulist([3]) == "3"
    assert format_cpulist([7, 0, 1, 9, 8]) == "0-1,7-9"
    assert format_cpulist([]) == ""


def test_ports_unique_on_a_host_and_stable_across_redeploys(catalog, cpu_host):
    settings = DeploymentSettings(profile="cpu", instances=2)
    host = HostFacts(hostname="n", cpus=list(range(4)), memory_bytes=24 * GIB, gpu_count=0)
    first = plan_model(MODEL, catalog.get(MODEL), host, settings, ports_taken={8100, 8102})
    ports = [i.port for i in first.instances]
    assert ports == [8101, 8103]
    again = plan_model(
        MODEL, catalog.get(MODEL), host, settings, ports_taken={8100, 8102}, previous_ports=ports
    )
    assert [i.port for i in again.instances] == ports
    # A previous port now held by another model is not reused.
    moved = plan_model(MODEL, catalog.get(MODEL), host, settings, ports_taken={8101}, previous_ports=ports)
    assert 8101 not in [i.port for i in moved.instances]
    assert len({i.port for i in moved.instances}) == 2


def test_memory_budget_refusal_names_the_knobs(catalog):
    small = HostFacts(hostname="tiny", cpus=[0, 1], memory_bytes=2 * GIB, gpu_count=0)
    with pytest.raises(PlanError, match="lower deployment_plan_instances or deployment_plan_kv_cache_gib"):
        plan_model(MODEL, catalog.get(MODEL), small, DeploymentSettings(profile="cpu", kv_cache_gib=4))


def test_gpu_profile_without_a_rendered_capacity_plan_names_the_render_command(catalog, cpu_host):
    with pytest.raises(PlanError, match=r"no instances of 'smollm2-135m-instruct' \(it plans nothing\)"):
        plan_model(MODEL, catalog.get(MODEL), cpu_host, DeploymentSettings(profile="gpu"))


def _host(memory_gib: int) -> HostFacts:
    return HostFacts(hostname="n", cpus=list(range(4)), memory_bytes=memory_gib * GIB, gpu_count=0)


def test_an_unchanged_redeploy_keeps_names_and_ports_and_retires_nothing(catalog):
    settings = DeploymentSettings(profile="cpu", instances=2)
    first = plan_model(MODEL, catalog.get(MODEL), _host(24), settings)
    assert first.update and first.update.strategy == "initial"
    again = plan_model(MODEL, catalog.get(MODEL), _host(24), settings, previous=first)
    assert again.update and again.update.strategy == "unchanged" and again.update.retire == []
    assert again.instances == first.instances


def test_a_change_with_room_is_blue_green_on_new_names_and_ports(catalog):
    first = plan_model(MODEL, catalog.get(MODEL), _host(24), DeploymentSettings(profile="cpu", instances=2))
    changed = DeploymentSettings(profile="cpu", instances=2, max_num_seqs=8)
    green = plan_model(MODEL, catalog.get(MODEL), _host(24), changed, previous=first)
    assert green.update and green.update.strategy == "blue-green"
    assert [i.name for i in green.instances] == [f"{MODEL}-2", f"{MODEL}-3"]
    assert [r.name for r in green.update.retire] == [f"{MODEL}-0", f"{MODEL}-1"]
    assert not {i.port for i in green.instances} & {i.port for i in first.instances}
    assert [r.url for r in green.update.retire] == [i.url for i in first.instances]
    # The next change flips back to the free names.
    back = plan_model(
        MODEL, catalog.get(MODEL), _host(24), DeploymentSettings(profile="cpu", instances=2), previous=green
    )
    assert [i.name for i in back.instances] == [f"{MODEL}-0", f"{MODEL}-1"]
    assert back.update and [r.name for r in back.update.retire] == [f"{MODEL}-2", f"{MODEL}-3"]


def test_a_change_without_room_rolls_in_place_and_says_why(catalog):
    # Two instances of 1 GiB KV cache fit a 4 GiB host's 3.2 GiB budget; four do not.
    settings = DeploymentSettings(profile="cpu", instances=2)
    first = plan_model(MODEL, catalog.get(MODEL), _host(4), settings)
    changed = settings.model_copy(update={"max_num_seqs": 8})
    rolled = plan_model(MODEL, catalog.get(MODEL), _host(4), changed, previous=first)
    assert rolled.update and rolled.update.strategy == "rolling"
    assert "no room for a second copy" in rolled.update.reason
    assert [(i.name, i.port) for i in rolled.instances] == [(i.name, i.port) for i in first.instances]
    with pytest.raises(PlanError, match="set deployment_plan_update_strategy to rolling or auto"):
        plan_model(
            MODEL, catalog.get(MODEL), _host(4), changed.model_copy(update={"update_strategy": "blue-green"}),
            previous=first,
        )  # fmt: skip


def test_rolling_when_asked_even_with_room_and_fewer_instances_retire_the_rest(catalog):
    first = plan_model(MODEL, catalog.get(MODEL), _host(24), DeploymentSettings(profile="cpu", instances=3))
    fewer = DeploymentSettings(profile="cpu", instances=2, update_strategy="rolling")
    rolled = plan_model(MODEL, catalog.get(MODEL), _host(24), fewer, previous=first)
    assert rolled.update and rolled.update.strategy == "rolling"
    assert [i.name for i in rolled.instances] == [f"{MODEL}-0", f"{MODEL}-1"]
    assert [r.name for r in rolled.update.retire] == [f"{MODEL}-2"]


def test_an_embedding_model_on_a_cpu_host_keeps_no_kv_cache(catalog, cpu_host):
    # Encoder-only: vLLM's pooling runner keeps no KV cache (the capacity planner's formula says 0).
    plan = plan_model(EMBED, catalog.get(EMBED), cpu_host, DeploymentSettings(profile="cpu"))
    (inst,) = plan.instances
    assert (inst.kv_cache.bytes_per_token, inst.kv_cache.tokens) == (0, 0)
    assert inst.argv[inst.argv.index("--runner") + 1] == "pooling"


def test_weights_come_from_the_parameter_count(catalog):
    # capacity/params on the catalog's architecture: SmolLM2's own config.json gives the same bytes.
    entry = catalog.get(MODEL)
    assert weights_bytes(entry.architecture, "bfloat16") == 269_030_016


# The host is the unit of the memory budget and of the CPU sets: what other models deployed on it hold
# (held_on_host of the registry's other records) counts against this model's plan.


def _small_host(cpus: int = 4) -> HostFacts:
    # 4 GiB: a budget of 3.2 GiB at the default memory_budget_fraction of 0.8.
    return HostFacts(hostname="small", cpus=list(range(cpus)), memory_bytes=4 * GIB, gpu_count=0)


def test_two_models_over_the_host_budget_are_refused_with_the_setting_to_change(catalog):
    host = _small_host()
    chat = plan_model(MODEL, catalog.get(MODEL), host, DeploymentSettings(profile="cpu", cpus_per_instance=2))
    held = held_on_host([chat], catalog, except_model=EMBED)
    assert held.models == [MODEL] and held.cpus == [0, 1]
    assert held.memory_bytes == weights_bytes(catalog.get(MODEL).architecture, "bfloat16") + GIB
    replicas = DeploymentSettings(profile="cpu", instances=2)
    # Each fits alone: the chat model's 1.3 GiB, the two replicas' 2.2 GiB; together 3.4 GiB > 3.2 GiB.
    plan_model(EMBED, catalog.get(EMBED), host, replicas)
    with pytest.raises(PlanError) as refused:
        plan_model(EMBED, catalog.get(EMBED), host, replicas, held=held)
    message = str(refused.value)
    assert "\n" not in message
    assert (
        "2 instance(s) of all-minilm-l6-v2 need 2.2 GiB (weights + KV cache) and the other models on small "
        "(smollm2-135m-instruct) hold 1.3 GiB: 3.4 GiB in all, over the host's budget of 3.2 GiB"
    ) in message
    assert message.endswith("or raise deployment_plan_memory_budget_fraction")
    roomier = replicas.model_copy(update={"memory_budget_fraction": 0.9})
    assert len(plan_model(EMBED, catalog.get(EMBED), host, roomier, held=held).instances) == 2


def test_cpu_sets_are_disjoint_across_the_models_of_a_host(catalog):
    host = HostFacts(hostname="n", cpus=list(range(8)), memory_bytes=24 * GIB, gpu_count=0)
    chat = plan_model(MODEL, catalog.get(MODEL), host, DeploymentSettings(profile="cpu", cpus_per_instance=4))
    assert [i.cpus for i in chat.instances] == [[0, 1, 2, 3]]
    held = held_on_host([chat], catalog, except_model=EMBED)
    emb = plan_model(
        EMBED, catalog.get(EMBED), host, DeploymentSettings(profile="cpu", instances=2), held=held
    )
    assert [i.cpus for i in emb.instances] == [[4, 5], [6, 7]]
    assert [i.env["VLLM_CPU_OMP_THREADS_BIND"] for i in emb.instances] == ["4-5", "6-7"]


def test_cpus_other_models_hold_are_shared_only_when_a_setting_says_so(catalog, cpu_host):
    # The local inventory: the chat instance on both cores of a 2-core host, then two embedding replicas.
    chat = plan_model(MODEL, catalog.get(MODEL), cpu_host, DeploymentSettings(profile="cpu"))
    held = held_on_host([chat], catalog, except_model=EMBED)
    replicas = DeploymentSettings(profile="cpu", instances=2)
    with pytest.raises(PlanError, match=r"hold 0-1\. Set deployment_plan_share_cpus to true to share them"):
        plan_model(EMBED, catalog.get(EMBED), cpu_host, replicas, held=held)
    shared = replicas.model_copy(update={"share_cpus": True})
    emb = plan_model(EMBED, catalog.get(EMBED), cpu_host, shared, held=held)
    assert [i.cpus for i in emb.instances] == [[0], [1]]


def test_shared_cpus_take_the_free_ones_first(catalog):
    host = HostFacts(hostname="n", cpus=list(range(4)), memory_bytes=24 * GIB, gpu_count=0)
    held = Held(cpus=[0, 1, 2], models=["other"])
    shared = DeploymentSettings(profile="cpu", instances=2, cpus_per_instance=1, share_cpus=True)
    plan = plan_model(EMBED, catalog.get(EMBED), host, shared, held=held)
    assert [i.cpus for i in plan.instances] == [[0], [3]]


def test_a_redeploy_does_not_count_its_own_deployed_plan(catalog):
    # Two instances take 2.5 GiB of the 3.2 GiB budget: counted twice they would not fit.
    host = _small_host()
    settings = DeploymentSettings(profile="cpu", instances=2)
    first = plan_model(MODEL, catalog.get(MODEL), host, settings)
    other = plan_model(EMBED, catalog.get(EMBED), _host(24), DeploymentSettings(profile="cpu"))
    # The registry holds both records; this model's own is left out, the other model's counted.
    assert held_on_host([first, other], catalog, except_model=MODEL).models == [EMBED]
    held = held_on_host([first], catalog, except_model=MODEL)
    assert held == Held()
    again = plan_model(MODEL, catalog.get(MODEL), host, settings, previous=first, held=held)
    assert again.update and again.update.strategy == "unchanged"
    assert again.instances == first.instances
