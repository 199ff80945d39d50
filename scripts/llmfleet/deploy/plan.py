"""Plan the vLLM instances of one model on one host: ports, CPUs, KV cache, arguments.

Everything here is a pure function of its inputs (catalog entry, host facts, deployment settings, and
the ports other models already hold), so the same input always gives the same plan, byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmfleet.capacity import kv
from llmfleet.capacity.modelconfig import from_catalog
from llmfleet.capacity.placement import RenderedInstance
from llmfleet.catalog.models import DTYPE_BYTES, Architecture, ModelEntry, fixed_args_in, revision_id
from llmfleet.deploy.cpuhost import Held, check_memory, cpu_sets, instance_bytes, memory_budget
from llmfleet.errors import PlanError
from llmfleet.hosts.cpusets import format_cpulist
from llmfleet.hosts.facts import HostFacts

GIB = 1024**3
# Blue-green on a GPU host starts the second copy beside the first on the same GPUs. vLLM refuses to start
# when less than gpu_memory_utilization x total is free, and every process on a GPU also holds a CUDA
# context outside any vLLM budget (a few hundred MiB), so the planned shares of both copies must leave
# this much of each GPU over. An estimate, not a measurement: no GPU host was at hand to calibrate it.
GPU_SHARE_HEADROOM = 0.02


class DeploymentSettings(BaseModel):
    """The placement and speed knobs an inventory sets (seed 002: these are the tunable ones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: Literal["cpu", "gpu"]
    instances: int = Field(default=1, ge=1, le=64)
    base_port: int = Field(default=8100, ge=1024, le=65000)
    listen_host: str = "127.0.0.1"
    # vLLM reads VLLM_CPU_KVCACHE_SPACE as whole GiB.
    kv_cache_gib: int = Field(default=1, ge=1)
    max_num_seqs: int = Field(default=16, ge=1)
    # Share of host memory that weights + KV caches of all instances of all models on the host may take;
    # the rest is for the OS, the gateway and vLLM's own Python heap (about 1.5 GiB per CPU instance,
    # measured).
    memory_budget_fraction: float = Field(default=0.8, gt=0, le=1)
    # cpu profile: CPUs each instance is pinned to; 0: the CPUs no other model holds, split between this
    # model's instances.
    cpus_per_instance: int = Field(default=0, ge=0)
    # cpu profile: when the CPUs no other model on the host holds are too few, pin this model's instances
    # to CPUs other models hold too (as many as needed, the free ones first) instead of refusing.
    share_cpus: bool = False
    serving_root: str = "/var/lib/llmfleet/serving"
    vllm_python: str = "/opt/llmfleet/vllm-venv/bin/python"
    extra_args: list[str] = Field(default_factory=list)
    # How a changed deployment is replaced: one instance at a time (rolling), or a whole second copy
    # started, gated and switched to in the gateway before the first is retired (blue-green). auto is
    # blue-green when the host has room for both copies, else rolling.
    update_strategy: Literal["auto", "rolling", "blue-green"] = "auto"
    # gpu profile: this host's instances from the rendered capacity inventory (every model's; the plan
    # takes the ones of the model it deploys), and the planned share of each GPU summed over all of them.
    capacity_instances: list[RenderedInstance] = Field(default_factory=list)
    gpu_memory_utilization_by_gpu: dict[int, float] = Field(default_factory=dict)
    # The address the gateway reaches instances at (default: listen_host). A GPU container listens on
    # 0.0.0.0; its URL names the node.
    url_host: str | None = None
    # A fleet (llmfleet fleet place): this model's instances on this host by the names the placement gave
    # them, unique across the fleet. Empty: ``<model>-<n>`` numbered on this host.
    instance_names: list[str] = Field(default_factory=list)


class KvCache(BaseModel):
    model_config = ConfigDict(frozen=True)

    bytes_per_token: int
    space_bytes: int
    tokens: int
    max_concurrency_at_max_len: float


class Instance(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    model: str
    # Deployment records written before embedding models existed have no task: they were all chat.
    task: Literal["chat", "embedding"] = "chat"
    port: int
    url: str
    cpus: list[int]
    kv_cache: KvCache
    # process: argv is the whole command line (CPU hosts). container: argv is what follows the image's
    # vLLM entrypoint (GPU hosts; the vllm_container role adds --model, --served-model-name and --host).
    runtime: Literal["process", "container"] = "process"
    argv: list[str]
    env: dict[str, str]
    # container instances only: GPU indices and the NUMA node they sit on (from the capacity plan).
    gpus: list[int] = Field(default_factory=list)
    numa_node: int | None = None
    gpu_memory_utilization: float | None = None


class Retiring(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    url: str  # to see, from vLLM's own metrics, when it serves no request any more


class Update(BaseModel):
    """How this plan replaces the one deployed before it, and why."""

    model_config = ConfigDict(frozen=True)

    strategy: Literal["initial", "unchanged", "rolling", "blue-green"]
    reason: str
    # Instances of the previous plan that this one does not keep; stopped once nothing routes to them.
    retire: list[Retiring] = Field(default_factory=list)
    # Planned instances that run now under the same name, on the same GPUs, with no larger share of them
    # (kept, or replaced in place): the GPU memory they hold is theirs to reuse, so the GPU preflight does
    # not count it as taken. An instance whose share grows is counted whole: the preflight cannot see how
    # much of the GPU's used memory is its own, and a refusal is better than a failed start mid-rollout.
    running: list[str] = Field(default_factory=list)


class ModelPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    host: str
    profile: str
    revision: str
    weights_path: str
    instances: list[Instance]
    # Records written before blue-green existed have none.
    update: Update | None = None


def kv_bytes_per_token(arch: Architecture, dtype: str) -> int:
    """Bytes of KV cache one token takes in the whole model, by the capacity planner's formula
    (:func:`llmfleet.capacity.kv.kv_bytes_per_token`): a K and a V vector per KV head per layer (KV heads,
    not attention heads: with grouped-query attention they are fewer); 0 for an encoder-only model, for
    which vLLM keeps no KV cache."""
    return kv.kv_bytes_per_token(from_catalog(arch, dtype), DTYPE_BYTES[dtype])


def kv_cache(arch: Architecture, dtype: str, space_gib: int, max_model_len: int) -> KvCache:
    """The KV cache vLLM will allocate for ``space_gib``: tokens rounded down to whole blocks."""
    per_token = kv_bytes_per_token(arch, dtype)
    space = space_gib * GIB
    tokens = (space // per_token) // kv.VLLM_BLOCK_SIZE * kv.VLLM_BLOCK_SIZE if per_token else 0
    return KvCache(
        bytes_per_token=per_token,
        space_bytes=space,
        tokens=tokens,
        max_concurrency_at_max_len=round(tokens / max_model_len, 2),
    )


def pick_ports(count: int, base: int, taken: set[int], keep: list[int]) -> list[int]:
    """Reuse ``keep`` (this model's ports from its last deploy) so a redeploy changes nothing;
    otherwise take the lowest ports from ``base`` that no other model on the host holds."""
    if len(keep) == count and not taken.intersection(keep):
        return list(keep)
    ports, port = [], base
    while len(ports) < count:
        if port not in taken:
            ports.append(port)
        port += 1
    return ports


def plan_model(
    name: str,
    entry: ModelEntry,
    host: HostFacts,
    settings: DeploymentSettings,
    ports_taken: set[int] | None = None,
    previous_ports: list[int] | None = None,
    previous: ModelPlan | None = None,
    held: Held | None = None,
) -> ModelPlan:
    """The model's plan on this host; with ``previous`` (what is deployed now), also how to replace it.

    Unchanged instances keep their names and ports, so a second deploy changes nothing. A changed plan
    is rolled in place (same names and ports, one instance at a time), or, blue-green, gets instances
    with new names and ports beside the old ones, which it lists to retire after the gateway switch.

    ``held`` (CPU hosts; :func:`held_on_host` of the host's other deployments): the memory and CPUs other
    models hold. The plan must fit the host's memory budget with them, and its CPU sets avoid theirs.
    """
    taken = set(ports_taken or set())
    ask = _Ask(name, entry, host, settings, held or Held())
    if previous is None:
        plan = _plan_instances(ask, taken, previous_ports or [], 0)
        first = Update(strategy="initial", reason="nothing deployed before")
        return plan.model_copy(update={"update": first})
    old_names = [inst.name for inst in previous.instances]
    old_ports = [inst.port for inst in previous.instances]
    in_place = _plan_instances(ask, taken, old_ports, _first_index(name, old_names))
    kept = {inst.name for inst in in_place.instances}
    retire = [Retiring(name=i.name, url=i.url) for i in previous.instances if i.name not in kept]
    old_by_name = {inst.name: inst for inst in previous.instances}
    running = [inst.name for inst in in_place.instances if _holds_its_gpu_memory(inst, old_by_name)]
    if _same_instances(in_place, previous):
        same = Update(strategy="unchanged", reason="the plan is the same", running=running)
        return in_place.model_copy(update={"update": same})
    room, room_detail, no_room_fix = _room_for_second_copy(entry, host, settings, in_place, ask.held)
    if settings.instance_names:
        # A second copy would need names of its own, and the fleet's names are the placement's.
        room, room_detail = False, "the fleet placement names the instances"
        no_room_fix = "replace the instances node by node (rolling), as a fleet redeploy does"
    if settings.update_strategy == "rolling" or (settings.update_strategy == "auto" and not room):
        why = (
            "deployment_plan_update_strategy is rolling"
            if settings.update_strategy == "rolling"
            else f"no room for a second copy: {room_detail}"
        )
        _refuse_moving_in_place(name, host, in_place, old_by_name)
        rolling = Update(strategy="rolling", reason=why, retire=retire, running=running)
        return in_place.model_copy(update={"update": rolling})
    if not room:
        raise PlanError(
            f"blue-green needs room for two copies of {name} on {host.hostname}: {room_detail}; set "
            f"deployment_plan_update_strategy to rolling or auto, or {no_room_fix}"
        )
    indices = {_index_of(name, n) for n in old_names}
    first = 0 if indices.isdisjoint(range(len(in_place.instances))) else max(indices) + 1
    green = _plan_instances(ask, taken | set(old_ports), [], first)
    return green.model_copy(
        update={
            "update": Update(
                strategy="blue-green",
                reason=f"room for a second copy ({room_detail})",
                retire=[Retiring(name=i.name, url=i.url) for i in previous.instances],
            )
        }
    )


def _room_for_second_copy(
    entry: ModelEntry, host: HostFacts, settings: DeploymentSettings, plan: ModelPlan, held: Held
) -> tuple[bool, str, str]:
    """Whether a second copy of ``plan`` fits beside the first: (room, the figures, the fix when not).

    CPU: weights and KV cache of both copies, with what other models hold, within the host's memory
    budget. GPU: on every GPU the new
    copy uses, the planned shares of all instances (the running copy's included) plus the new copy's
    share, within 1 - GPU_SHARE_HEADROOM.
    """
    if settings.profile == "gpu":
        extra: dict[int, float] = {}
        for inst in plan.instances:
            for gpu in inst.gpus:
                extra[gpu] = extra.get(gpu, 0.0) + float(inst.gpu_memory_utilization or 0.0)
        limit = 1.0 - GPU_SHARE_HEADROOM
        shares = {g: settings.gpu_memory_utilization_by_gpu.get(g, 0.0) + add for g, add in extra.items()}
        worst = max(shares, key=lambda g: (shares[g], -g))
        detail = (
            f"GPU {worst} would hold {shares[worst]:.2f} of its memory with both copies (limit {limit:.2f})"
        )
        fix = "re-render the capacity plan with a lower --gpu-memory-utilization"
        return shares[worst] <= limit, detail, fix
    need = 2 * len(plan.instances) * instance_bytes(entry, settings)
    budget = memory_budget(host, settings)
    others = f", other models hold {held.memory_bytes / GIB:.1f} GiB" if held.memory_bytes else ""
    detail = f"both need {need / GIB:.1f} GiB (weights + KV cache){others}, budget {budget / GIB:.1f} GiB"
    return need + held.memory_bytes <= budget, detail, "lower deployment_plan_kv_cache_gib"


def _index_of(model: str, instance: str) -> int:
    match = re.fullmatch(re.escape(model) + r"-([0-9]+)", instance)
    if not match:
        raise PlanError(f"instance {instance!r} of the deployment record is not named {model}-<number>")
    return int(match.group(1))


def _first_index(model: str, names: list[str]) -> int:
    return min(_index_of(model, n) for n in names) if names else 0


def _holds_its_gpu_memory(inst: Instance, old_by_name: dict[str, Instance]) -> bool:
    old = old_by_name.get(inst.name)
    if old is None or old.gpus != inst.gpus:
        return False
    return (inst.gpu_memory_utilization or 0.0) <= (old.gpu_memory_utilization or 0.0)


def _refuse_moving_in_place(
    name: str, host: HostFacts, plan: ModelPlan, old_by_name: dict[str, Instance]
) -> None:
    """A rolling update restarts one instance at a time under its old name. One that moves to other GPUs
    would start on GPUs its neighbours still hold, and fail with itself already drained."""
    moved = [
        f"{inst.name}: GPUs {old_by_name[inst.name].gpus} -> {inst.gpus}"
        for inst in plan.instances
        if inst.name in old_by_name and old_by_name[inst.name].gpus != inst.gpus
    ]
    if moved:
        raise PlanError(
            f"a rolling update of {name} on {host.hostname} would move instances onto other GPUs "
            f"({'; '.join(moved)}), which the instances not yet replaced still hold. Either undeploy it "
            f"first (ansible-playbook undeploy-model.yml -e model={name}; it stops serving until the "
            "deploy ends), or free room for a blue-green update (deployment_plan_update_strategy: auto "
            "takes it when every GPU has room for both copies), or render a plan that keeps each "
            "instance on its GPUs"
        )


def _same_instances(new: ModelPlan, old: ModelPlan) -> bool:
    return [i.model_dump() for i in new.instances] == [i.model_dump() for i in old.instances]


def _model_plan(
    name: str, entry: ModelEntry, host: HostFacts, settings: DeploymentSettings, instances: list[Instance]
) -> ModelPlan:
    return ModelPlan(
        model=name,
        host=host.hostname,
        profile=settings.profile,
        revision=revision_id(entry),
        weights_path=_weights_path(name, entry, settings),
        instances=instances,
    )


def _weights_path(name: str, entry: ModelEntry, settings: DeploymentSettings) -> str:
    return f"{settings.serving_root}/{name}/{revision_id(entry)}"


@dataclass(frozen=True)
class _Ask:
    """What one plan_model call plans: the model, its catalog entry, the host, the settings and what
    the host's other models hold. The CPU and the GPU path both take it."""

    name: str
    entry: ModelEntry
    host: HostFacts
    settings: DeploymentSettings
    held: Held


def _instance(ask: _Ask, index: int, port: int, name: str | None = None, **fields: object) -> Instance:
    """Instance ``index`` of the model at ``port``: named ``name`` (the fleet's), else ``<model>-<index>``;
    reached at its URL."""
    url_host = ask.settings.url_host or ask.settings.listen_host
    return Instance(
        name=name or f"{ask.name}-{index}",
        model=ask.name,
        task=ask.entry.task,
        port=port,
        url=f"http://{url_host}:{port}",
        **fields,
    )


def _plan_instances(
    ask: _Ask, ports_taken: set[int], previous_ports: list[int], first_index: int
) -> ModelPlan:
    name, entry, host, settings, held = ask.name, ask.entry, ask.host, ask.settings, ask.held
    if settings.profile not in entry.profiles:
        raise PlanError(
            f"model {name!r} does not support the {settings.profile!r} profile "
            f"(catalog profiles: {', '.join(entry.profiles)})"
        )
    fixed = fixed_args_in(settings.extra_args)
    if fixed:
        reasons = "; ".join(f"{flag} sets {why}" for flag, why in fixed)
        raise PlanError(
            f"deployment_plan_extra_args for {name!r} overrides what the model outputs ({reasons}). "
            "Seed 002's rule: such arguments are fixed per model in catalog/models.yml (serving); "
            "an inventory or a sweep may only set placement and speed (tensor/pipeline parallel size, "
            "max-num-seqs, max-num-batched-tokens, instances). Remove them from deployment_plan_extra_args."
        )
    if settings.profile == "gpu":
        return _plan_gpu_instances(ask, ports_taken, previous_ports, first_index)
    dtype = entry.serving.dtype
    cache = kv_cache(entry.architecture, dtype, settings.kv_cache_gib, entry.serving.max_model_len)
    # An encoder-only model (bytes_per_token 0) keeps no KV cache: nothing to hold a request in.
    if cache.bytes_per_token and cache.tokens < entry.serving.max_model_len:
        raise PlanError(
            f"a KV cache of {settings.kv_cache_gib} GiB holds {cache.tokens} tokens, fewer than one request "
            f"of max_model_len {entry.serving.max_model_len}; raise deployment_plan_kv_cache_gib to at least "
            f"{-(-entry.serving.max_model_len * cache.bytes_per_token // GIB)}"
        )
    names = settings.instance_names
    if names and len(names) != settings.instances:
        raise PlanError(
            f"the fleet placement names {len(names)} instance(s) of {name} on {host.hostname} "
            f"({', '.join(names)}) but the plan asks for {settings.instances}; re-run `llmfleet fleet place` "
            "and deploy with the inventory it wrote"
        )
    check_memory(name, entry, host, settings, held)
    weights_path = _weights_path(name, entry, settings)
    ports = pick_ports(settings.instances, settings.base_port, ports_taken, previous_ports)
    cpus_of = cpu_sets(name, host, settings, held)
    instances = []
    for index, (port, cpus) in enumerate(zip(ports, cpus_of, strict=True)):
        argv = [
            settings.vllm_python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            weights_path,
            "--served-model-name",
            name,
            "--host",
            settings.listen_host,
            "--port",
            str(port),
            "--dtype",
            dtype,
            "--max-model-len",
            str(entry.serving.max_model_len),
            "--max-num-seqs",
            str(settings.max_num_seqs),
            # torch.compile warm-up costs minutes on a CPU (257 s against 49 s measured).
            "--enforce-eager",
            # Streams carry token usage, so the gateway can count tokens without rewriting requests.
            "--enable-force-include-usage",
            # Embedding models run vLLM's pooling runner and serve /v1/embeddings.
            *(["--runner", "pooling"] if entry.task == "embedding" else []),
            *settings.extra_args,
        ]
        env = {
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_gib),
            "VLLM_CPU_OMP_THREADS_BIND": format_cpulist(cpus),
        }
        instances.append(
            _instance(
                ask,
                first_index + index,
                port,
                names[index] if names else None,
                cpus=cpus,
                kv_cache=cache,
                argv=argv,
                env=env,
            )
        )
    return _model_plan(name, entry, host, settings, instances)


def _with_port(args: list[str], port: int) -> list[str]:
    """``args`` with its ``--port`` set to ``port`` (the capacity plan's port may move: another model holds
    it, or a blue-green copy needs its own)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--port":
            skip = True
            continue
        if arg.startswith("--port="):
            continue
        out.append(arg)
    return ["--port", str(port), *out]


def _plan_gpu_instances(
    ask: _Ask, ports_taken: set[int], previous_ports: list[int], first_index: int
) -> ModelPlan:
    """GPU hosts: the instances come from the capacity plan rendered into the inventory
    (``llmfleet capacity render``). The host planner checks them against the catalog (the catalog fixes
    what the model outputs) and gives them names, ports and URLs the way the CPU path does, so rolling and
    blue-green updates, the registry, the gateway and status work the same on both."""
    name, entry, host, settings = ask.name, ask.entry, ask.host, ask.settings
    mine = [c for c in settings.capacity_instances if c.model == name]
    if not mine:
        planned = sorted({c.model for c in settings.capacity_instances})
        raise PlanError(
            f"the capacity plan in this host's inventory has no instances of {name!r} "
            f"(it plans {', '.join(planned) if planned else 'nothing'}); render one with "
            f"`llmfleet capacity render --config <{name} dir> --name {name} ... --env <env>`, "
            "or deploy a model it plans"
        )
    for c in mine:
        problems = []
        if c.task != entry.task:
            problems.append(f"task {c.task}, the catalog says {entry.task}")
        if c.max_model_len != entry.serving.max_model_len:
            problems.append(
                f"--max-model-len {c.max_model_len}, the catalog fixes {entry.serving.max_model_len}"
            )
        if c.dtype != entry.serving.dtype:
            problems.append(f"--dtype {c.dtype}, the catalog fixes {entry.serving.dtype}")
        if problems:
            raise PlanError(
                f"capacity instance {c.name} of {name} disagrees with catalog/models.yml: "
                f"{'; '.join(problems)}. The catalog fixes what the model outputs: re-render the capacity "
                f"plan with --max-model-len {entry.serving.max_model_len} --dtype {entry.serving.dtype}"
            )
    if settings.instance_names and sorted(settings.instance_names) != sorted(c.name for c in mine):
        raise PlanError(
            f"the fleet placement names {', '.join(settings.instance_names)} for {name} on {host.hostname}, "
            f"its capacity instances are {', '.join(c.name for c in mine)}; re-run `llmfleet fleet place`"
        )
    rendered = [c.port for c in mine]
    ports = pick_ports(len(mine), settings.base_port, ports_taken, previous_ports or rendered)
    instances = []
    for index, (c, port) in enumerate(zip(mine, ports, strict=True)):
        tokens = c.expected_kv_cache_tokens
        per_token = c.kv_cache_bytes_per_token
        argv = [
            *_with_port(c.vllm_args, port),
            # Streams carry token usage, so the gateway can count tokens without rewriting requests.
            "--enable-force-include-usage",
            *settings.extra_args,
        ]
        instances.append(
            _instance(
                ask,
                first_index + index,
                port,
                c.name if settings.instance_names else None,
                cpus=c.cpus,
                kv_cache=KvCache(
                    bytes_per_token=per_token,
                    space_bytes=tokens * per_token,
                    tokens=tokens,
                    max_concurrency_at_max_len=round(tokens / entry.serving.max_model_len, 2),
                ),
                runtime="container",
                argv=argv,
                env={},
                gpus=c.gpus,
                numa_node=c.numa_node,
                gpu_memory_utilization=c.gpu_memory_utilization,
            )
        )
    return _model_plan(name, entry, host, settings, instances)
