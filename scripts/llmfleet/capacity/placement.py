"""Placement: GPU sets, ports and CPU cores for every instance on every node, embedding replicas packed
onto the memory the LLM leaves over, and the schema of the instances ``llmfleet capacity render`` writes
to the inventory (which the host planner, llmfleet.deploy.plan, reads back)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmfleet.capacity import kv
from llmfleet.capacity.fit import Candidate, gpu_sets, numa_of
from llmfleet.capacity.modelconfig import ModelArch, ModelSource
from llmfleet.capacity.options import EmbeddingOptions, GpuSpec, PlanOptions, Serving, gib
from llmfleet.capacity.params import stage_weight_bytes
from llmfleet.errors import CapacityError
from llmfleet.hosts.cpusets import split_cpus

# Several vLLM processes on one GPU: their --gpu-memory-utilization values may add up to this at most,
# leaving room for each process's CUDA context outside vLLM's own accounting.
COLOCATION_MAX_UTILIZATION = 0.98


class InstancePlacement(BaseModel):
    """One instance of the plan on a node: its GPUs, CPU cores, port and vLLM arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str
    task: Literal["chat", "embedding"]
    port: int
    gpus: list[int] = Field(min_length=1)
    numa_node: int
    cpus: list[int]
    tp: int
    pp: int
    gpu_memory_utilization: float = Field(gt=0, le=1)
    max_model_len: int
    max_num_seqs: int
    kv_cache_dtype: str
    dtype: str
    quantization: str | None
    expected_kv_cache_tokens: int = Field(ge=0)
    vllm_args: list[str]


class RenderedInstance(InstancePlacement):
    """One instance as ``llmfleet capacity render`` writes it to ``host_vars/<host>.yml``
    (``llmfleet_capacity_instances``) and as the host planner reads it back
    (``DeploymentSettings.capacity_instances`` in llmfleet.deploy.plan): the placement, plus what the
    vllm_container role and the GPU preflight read as they are. One class for both sides, extra="forbid":
    a field one side adds and the other does not know is an error, not silently dropped."""

    cuda_visible_devices: str
    cpu_list: str
    # At the KV cache dtype, for the whole model; 0 for encoder-only embedding models (no KV cache).
    kv_cache_bytes_per_token: int = Field(ge=0)


class NodePlacement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    instances: list[InstancePlacement]
    gpu_memory_utilization_by_gpu: dict[str, float]


class ModelSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    config_path: str
    model_type: str
    architecture: str
    attention: Literal["mha", "gqa", "mqa", "mla", "none"]
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    head_dim_from: str
    kv_latent_dim: int | None
    moe_experts: int | None
    max_position_embeddings: int
    checkpoint_dtype: str
    checkpoint_quantization: str


class EmbeddingPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelSummary
    weight_bytes: int
    reserve_bytes: int
    gpu_memory_utilization: float
    replicas_per_node: int
    max_model_len: int


def summarize(arch: ModelArch, source: ModelSource) -> ModelSummary:
    if arch.kind == "encoder":
        attention = "none"
    elif arch.uses_mla:
        attention = "mla"
    elif arch.num_key_value_heads == arch.num_attention_heads:
        attention = "mha"
    elif arch.num_key_value_heads == 1:
        attention = "mqa"
    else:
        attention = "gqa"
    q = arch.quantization
    return ModelSummary(
        name=arch.name,
        config_path=source.config_path,
        model_type=arch.model_type,
        architecture=arch.architecture,
        attention=attention,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.head_dim,
        head_dim_from=arch.head_dim_from,
        kv_latent_dim=arch.mla.kv_lora_rank + arch.mla.qk_rope_head_dim if arch.mla else None,
        moe_experts=arch.moe.num_experts if arch.moe else None,
        max_position_embeddings=arch.max_position_embeddings,
        checkpoint_dtype=arch.dtype,
        checkpoint_quantization=q.method if q.method == "none" else f"{q.method} ({q.bits}-bit)",
    )


def _round_up_hundredth(x: float) -> float:
    return math.ceil(round(x * 100, 6)) / 100


# The vLLM option each instance field sets, in argv order; the optional ones only when set.
_VLLM_FLAGS = (
    ("--port", "port"),
    ("--tensor-parallel-size", "tp"),
    ("--pipeline-parallel-size", "pp"),
    ("--gpu-memory-utilization", "gpu_memory_utilization"),
    ("--max-model-len", "max_model_len"),
    ("--max-num-seqs", "max_num_seqs"),
    ("--kv-cache-dtype", "kv_cache_dtype"),
    ("--dtype", "dtype"),
)
_VLLM_OPTIONAL_FLAGS = (("--quantization", "quantization"), ("--block-size", "block_size"))


def _vllm_args(p: dict[str, object]) -> list[str]:
    args = [arg for flag, key in _VLLM_FLAGS for arg in (flag, str(p[key]))]
    args += [arg for flag, key in _VLLM_OPTIONAL_FLAGS if p.get(key) for arg in (flag, str(p[key]))]
    if p["task"] == "embedding":
        args += ["--runner", "pooling"]
    return args


def place(
    arch: ModelArch,
    serving: Serving,
    options: PlanOptions,
    chosen: Candidate,
    gpu: GpuSpec,
    embedding: tuple[ModelArch, EmbeddingOptions, Serving] | None,
) -> tuple[list[NodePlacement], EmbeddingPlan | None]:
    """Assign GPU sets, ports and CPU cores on every node; co-locate embedding replicas.

    Embedding replicas (TP=1) each get ``ceil((weights + reserve + KV for one request) / memory, 0.01)``
    of a GPU, placed greedily on the GPU with the most unbudgeted memory, so that no GPU's utilizations
    add up to more than :data:`COLOCATION_MAX_UTILIZATION`.
    """
    n = options.gpus_per_node
    llm_sets = gpu_sets(n, chosen.gpus_per_instance, options.numa_nodes)
    util = options.gpu_memory_utilization
    used = dict.fromkeys(range(n), 0.0)
    for s in llm_sets:
        for g in s:
            used[g] = util
    emb_plan, emb_gpus = None, []
    if embedding is not None:
        e_arch, e_opts, e_serving = embedding
        e_weights = stage_weight_bytes(e_arch, e_serving.quantization, e_serving.dtype, 1, 1)[0]
        e_len = e_opts.max_model_len or e_arch.max_position_embeddings
        e_kv = (kv.blocks_per_request(e_len, options.block_size) + 1) * (
            options.block_size * kv.kv_bytes_per_token(e_arch, e_serving.kv_dtype_bytes)
        )
        e_need = e_weights + e_opts.reserve.bytes + e_kv
        e_util = max(0.01, _round_up_hundredth(e_need / gpu.memory_bytes))
        placed_on_numa = dict.fromkeys(range(options.numa_nodes), 0)
        for i in range(e_opts.replicas):
            # Least-used GPU; among equals, the NUMA node with fewest replicas so far, then the lowest index.
            g = min(range(n), key=lambda x: (used[x], placed_on_numa[numa_of(x, n, options.numa_nodes)], x))
            placed_on_numa[numa_of(g, n, options.numa_nodes)] += 1
            if used[g] + e_util > COLOCATION_MAX_UTILIZATION + 1e-9:
                left = COLOCATION_MAX_UTILIZATION - used[g]
                raise CapacityError(
                    f"embedding replica {i + 1} of {e_opts.replicas} ({e_arch.name}) needs {e_util} of a "
                    f"{gpu.name} ({gib(e_need)}: weights {gib(e_weights)} + reserve "
                    f"{gib(e_opts.reserve.bytes)}), "
                    f"but the least-used GPU has {left:.2f} left. Lower --gpu-memory-utilization to "
                    f"{round(util - (e_util - left), 2)} (if the LLM still fits), "
                    f"or --embedding-replicas to {i}"
                )
            used[g] = round(used[g] + e_util, 4)
            emb_gpus.append(g)
        emb_plan = EmbeddingPlan(
            model=summarize(e_arch, ModelSource(config_path="")),
            weight_bytes=e_weights,
            reserve_bytes=e_opts.reserve.bytes,
            gpu_memory_utilization=e_util,
            replicas_per_node=e_opts.replicas,
            max_model_len=e_len,
        )
    hosts = options.hosts or [f"gpu-node-{i + 1:02d}" for i in range(options.nodes)]
    specs: list[dict[str, object]] = []
    for i, s in enumerate(llm_sets):
        specs.append(
            dict(
                name=f"{arch.name}-{i}",
                model=arch.name,
                task="chat" if arch.kind == "decoder" else "embedding",
                gpus=s,
                tp=chosen.tp,
                pp=chosen.pp,
                gpu_memory_utilization=util,
                max_model_len=options.max_model_len,
                max_num_seqs=options.max_num_seqs,
                kv_cache_dtype=serving.kv_cache_dtype,
                dtype=serving.dtype,
                quantization=serving.quantization_arg,
                expected_kv_cache_tokens=chosen.vllm_logged_kv_cache_tokens,
                block_size=options.block_size if options.block_size != kv.VLLM_BLOCK_SIZE else None,
            )
        )
    if embedding is not None and emb_plan is not None:
        e_arch, _, e_serving = embedding
        for i, g in enumerate(emb_gpus):
            specs.append(
                dict(
                    name=f"{e_arch.name}-{i}",
                    model=e_arch.name,
                    task="embedding",
                    gpus=[g],
                    tp=1,
                    pp=1,
                    gpu_memory_utilization=emb_plan.gpu_memory_utilization,
                    max_model_len=emb_plan.max_model_len,
                    max_num_seqs=options.max_num_seqs,
                    kv_cache_dtype="auto",
                    dtype=e_serving.dtype,
                    quantization=None,
                    expected_kv_cache_tokens=0,
                    block_size=None,
                )
            )
    # CPU cores: each NUMA node's cores are split among the instances whose first GPU sits on it.
    per_numa_cpus = options.cpus_per_node // options.numa_nodes
    by_numa: dict[int, list[int]] = {}
    for idx, spec in enumerate(specs):
        gpus_of = spec["gpus"]
        assert isinstance(gpus_of, list)
        spec["numa_node"] = numa_of(gpus_of[0], n, options.numa_nodes)
        spec["port"] = options.base_port + idx
        by_numa.setdefault(int(spec["numa_node"]), []).append(idx)  # type: ignore[call-overload]
    for node, members in by_numa.items():
        if per_numa_cpus == 0:
            for idx in members:
                specs[idx]["cpus"] = []
            continue
        cores = list(range(node * per_numa_cpus, (node + 1) * per_numa_cpus))
        if len(members) > len(cores):
            raise CapacityError(
                f"NUMA node {node} has {len(cores)} CPU cores for {len(members)} instances; raise "
                "--cpus-per-node or lower --embedding-replicas"
            )
        for idx, part in zip(members, split_cpus(cores, len(members)), strict=True):
            specs[idx]["cpus"] = part
    instances = []
    for spec in specs:
        instances.append(
            InstancePlacement(
                vllm_args=_vllm_args(spec), **{k: v for k, v in spec.items() if k != "block_size"}
            )
        )
    utils = {str(g): used[g] for g in range(n)}
    nodes = [NodePlacement(host=h, instances=instances, gpu_memory_utilization_by_gpu=utils) for h in hosts]
    return nodes, emb_plan
