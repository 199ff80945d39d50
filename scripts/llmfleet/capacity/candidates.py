"""Candidates: every TP x PP that could serve the model on a node, checked, ranked, and placed.

Each candidate carries a fit certificate: the numbers that prove it fits (or the first one that does
not). The ranking objective is stated in :data:`OBJECTIVE`. :func:`plan_capacity` picks the best fit (or
the one forced with ``tp``/``pp``), assigns GPU sets, ports and CPU cores per node, and co-locates
embedding replicas on the memory the LLM leaves over.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmfleet.capacity import kv
from llmfleet.capacity.modelconfig import DTYPE_BYTES, ModelArch, ModelSource, Quantization
from llmfleet.capacity.params import checkpoint_weight_bytes, pp_partition, stage_weight_bytes
from llmfleet.catalog.gpus import GpuCatalog
from llmfleet.errors import CapacityError, CapacityRefusal
from llmfleet.hosts.cpusets import split_cpus

GIB = 1024**3
MIB = 1024**2

OBJECTIVE = (
    "fits first; then most instances per node (replicas for throughput); then GPU sets inside one NUMA "
    "node; then, on PCIe cards, lower TP (less all-reduce traffic over PCIe) before lower PP, and on an "
    "NVLink island lower PP (no pipeline bubbles) before lower TP; then more concurrent requests"
)
# Several vLLM processes on one GPU: their --gpu-memory-utilization values may add up to this at most,
# leaving room for each process's CUDA context outside vLLM's own accounting.
COLOCATION_MAX_UTILIZATION = 0.98


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


class Reserve(BaseModel):
    """Non-KV memory per GPU that vLLM's profiling run takes besides the weights (explicit, not measured).

    activation: the peak of the profiling forward pass (max_num_batched_tokens of activations, sampler
    logits); cuda_graph: the captured CUDA graphs (vLLM estimates them since v0.21); framework: the CUDA
    context, cuBLAS/NCCL workspaces and other non-torch memory. The defaults (1.0 + 0.5 + 1.0 GiB) are an
    estimate for an 8B-class model at vLLM's default batch sizes; raise them for large vocabularies or
    long prefill chunks, and compare with vLLM's "Available KV cache memory" log line.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    activation_gib: float = Field(default=1.0, ge=0)
    cuda_graph_gib: float = Field(default=0.5, ge=0)
    framework_gib: float = Field(default=1.0, ge=0)

    @property
    def bytes(self) -> int:
        return int((self.activation_gib + self.cuda_graph_gib + self.framework_gib) * GIB)


# An embedding replica: no CUDA graphs with enforce-eager pooling, small activations.
EMBEDDING_RESERVE = Reserve(activation_gib=0.25, cuda_graph_gib=0.0, framework_gib=0.75)


class GpuSpec(BaseModel):
    """The card the plan is for: from catalog/gpus.yml, or given by --gpu-memory-gib."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    memory_bytes: int = Field(gt=0)
    interconnect: Literal["nvlink", "pcie", "unknown"]
    bf16: bool
    fp8: bool
    compute_capability: str | None
    from_catalog: bool


def resolve_gpu(catalog: GpuCatalog, name: str, memory_gib: float | None = None) -> GpuSpec:
    """The GPU ``name`` from the catalog; ``memory_gib`` overrides its memory, or describes a card the
    catalog does not list (its capabilities are then assumed, not checked)."""
    if name in catalog.gpus:
        g = catalog.gpus[name]
        memory = int(memory_gib * GIB) if memory_gib else g.memory_bytes
        return GpuSpec(
            name=name,
            memory_bytes=memory,
            interconnect=g.interconnect,
            bf16=g.bf16,
            fp8=g.fp8,
            compute_capability=g.compute_capability,
            from_catalog=True,
        )
    if memory_gib is None:
        catalog.get(name)  # raises the catalog's "unknown GPU" error, which names --gpu-memory-gib
    return GpuSpec(
        name=name,
        memory_bytes=int(memory_gib * GIB),
        interconnect="unknown",
        bf16=True,
        fp8=True,
        compute_capability=None,
        from_catalog=False,
    )


class EmbeddingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(default=2, ge=1)
    max_model_len: int | None = Field(default=None, gt=0)
    reserve: Reserve = EMBEDDING_RESERVE


class PlanOptions(BaseModel):
    """Everything the operator chooses; the model and the GPU catalog are the other inputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu: str
    gpu_memory_gib: float | None = Field(default=None, gt=0)
    gpus_per_node: int = Field(ge=1, le=64)
    nodes: int = Field(default=1, ge=1, le=1024)
    max_model_len: int = Field(gt=0)
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    dtype: Literal["auto", "bfloat16", "float16"] = "auto"
    quantization: Literal["auto", "fp8"] = "auto"
    block_size: int = Field(default=kv.VLLM_BLOCK_SIZE, ge=1)
    max_num_seqs: int = Field(default=256, ge=1)
    reserve: Reserve = Reserve()
    tp: int | None = Field(default=None, ge=1)
    pp: int | None = Field(default=None, ge=1)
    numa_nodes: int = Field(default=1, ge=1)
    cpus_per_node: int = Field(default=0, ge=0)
    base_port: int = Field(default=8100, ge=1024, le=65000)
    hosts: list[str] | None = None
    allow_long_max_model_len: bool = False
    embedding: EmbeddingOptions | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PlanOptions:
        if self.gpus_per_node % self.numa_nodes:
            raise ValueError(
                f"gpus_per_node ({self.gpus_per_node}) must be a multiple of numa_nodes ({self.numa_nodes})"
            )
        if self.cpus_per_node % self.numa_nodes:
            raise ValueError(
                f"cpus_per_node ({self.cpus_per_node}) must be a multiple of numa_nodes ({self.numa_nodes})"
            )
        if self.hosts is not None and len(self.hosts) != self.nodes:
            raise ValueError(f"{len(self.hosts)} host name(s) given for {self.nodes} node(s)")
        return self


class Serving(BaseModel):
    """How vLLM will hold the model: dtype, weight quantization, KV cache dtype."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: Literal["bfloat16", "float16"]
    quantization: Quantization
    quantization_arg: str | None
    kv_cache_dtype: str
    kv_dtype_bytes: int


def resolve_serving(arch: ModelArch, options: PlanOptions, gpu: GpuSpec) -> Serving:
    """vLLM's ``--dtype auto``: the config's dtype; float32 becomes bfloat16 (float16 on cards without
    bf16); bfloat16 becomes float16 on cards without bf16; AWQ/GPTQ run in float16."""
    if options.dtype != "auto":
        dtype = options.dtype
        if dtype == "bfloat16" and not gpu.bf16:
            raise CapacityError(f"{gpu.name} has no bfloat16 support; use --dtype float16 or auto")
    elif arch.quantization.method in ("awq", "gptq"):
        dtype = "float16"
    elif arch.dtype in ("float32", "bfloat16"):
        dtype = "bfloat16" if gpu.bf16 else "float16"
    else:
        dtype = "float16"
    quant, arg = arch.quantization, None
    if options.quantization == "fp8" and quant.method != "fp8":
        if quant.method != "none":
            raise CapacityError(
                f"{arch.name} is already {quant.method}-quantized; --quantization fp8 needs an unquantized "
                "checkpoint"
            )
        quant, arg = Quantization(method="fp8", bits=8), "fp8"
    cc = float(gpu.compute_capability) if gpu.compute_capability else None
    if cc is not None:
        if quant.method == "fp8" and cc < 8.0:
            raise CapacityError(
                f"fp8 weights need compute capability 8.0 or newer (Marlin fp8 on Ampere, native from 8.9); "
                f"{gpu.name} is {gpu.compute_capability}. Pick another --gpu or an unquantized model"
            )
        if quant.method in ("awq", "gptq") and cc < 7.5:
            raise CapacityError(f"{quant.method} needs compute capability 7.5 or newer; {gpu.name} is {cc}")
        if options.kv_cache_dtype != "auto" and cc < 8.0:
            raise CapacityError(
                f"an fp8 KV cache needs compute capability 8.0 or newer; {gpu.name} is "
                f"{gpu.compute_capability}. "
                "Use --kv-cache-dtype auto"
            )
    return Serving(
        dtype=dtype,
        quantization=quant,
        quantization_arg=arg,
        kv_cache_dtype=options.kv_cache_dtype,
        kv_dtype_bytes=kv.kv_dtype_bytes(options.kv_cache_dtype, dtype),
    )


class Certificate(BaseModel):
    """The numbers behind a candidate's verdict, per GPU (lists: one entry per PP stage)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_memory_bytes: int
    requested_bytes_per_gpu: int
    reserve_bytes_per_gpu: int
    layers_per_stage: list[int]
    weight_bytes_per_gpu: list[int]
    kv_available_bytes_per_gpu: list[int]
    kv_bytes_per_block: list[int]
    kv_heads_per_gpu: int
    kv_head_replicas: int
    blocks_per_request: int
    kv_cache_blocks: int


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tp: int
    pp: int
    gpus_per_instance: int
    instances_per_node: int
    instances_total: int
    fits: bool
    reason: str | None
    valid: bool
    numa_local: bool
    kv_cache_bytes_per_token_per_gpu: int
    kv_cache_tokens_per_instance: int
    vllm_logged_kv_cache_tokens: int
    max_concurrent_requests: int
    max_model_len_that_fits: int
    weight_bytes_per_gpu: int
    kv_cache_bytes_per_gpu: int
    certificate: Certificate | None

    def summary(self, gpu_name: str) -> str:
        return (
            f"TP={self.tp} PP={self.pp} on {self.gpus_per_instance}x {gpu_name} "
            f"(weights {gib(self.weight_bytes_per_gpu)}/GPU, KV {gib(self.kv_cache_bytes_per_gpu)}/GPU = "
            f"{self.kv_cache_tokens_per_instance} tokens, "
            f"{self.max_concurrent_requests} requests at full length, "
            f"{self.instances_per_node} per node)"
        )


def gpu_sets(gpus_per_node: int, per_instance: int, numa_nodes: int = 1) -> list[list[int]]:
    """Disjoint GPU index sets, ``floor(gpus_per_node / per_instance)`` of them.

    Instances are packed inside NUMA nodes first (GPUs split evenly and in index order across NUMA
    nodes); what is left is taken in contiguous runs of free GPUs.
    """
    per_numa = gpus_per_node // numa_nodes
    wanted = gpus_per_node // per_instance
    sets: list[list[int]] = []
    for node in range(numa_nodes):
        base = node * per_numa
        for j in range(per_numa // per_instance):
            if len(sets) < wanted:
                sets.append(list(range(base + j * per_instance, base + (j + 1) * per_instance)))
    used = {g for s in sets for g in s}
    free = [g for g in range(gpus_per_node) if g not in used]
    while len(sets) < wanted:
        sets.append(free[:per_instance])
        free = free[per_instance:]
    return sorted(sets)


def numa_of(gpu: int, gpus_per_node: int, numa_nodes: int) -> int:
    return gpu // (gpus_per_node // numa_nodes)


def evaluate(
    arch: ModelArch,
    serving: Serving,
    gpu: GpuSpec,
    options: PlanOptions,
    tp: int,
    pp: int,
    weight_scale: float = 1.0,
) -> Candidate:
    """Check one TP x PP: vLLM's validity rules, then weights + reserve, then one max-model-len request.

    Per GPU of PP stage s: ``kv_available_s = ceil(memory * utilization) - weights_s - reserve``;
    ``bytes_per_block_s = block_size * layers_s * kv_bytes_per_token_per_layer(TP)``; the rest is
    :func:`llmfleet.capacity.kv.kv_capacity`.
    """
    per_instance = tp * pp
    per_node = options.gpus_per_node // per_instance
    problems = kv.validity_problems(arch, serving.quantization, tp, pp)
    sets = gpu_sets(options.gpus_per_node, per_instance, options.numa_nodes)
    numa_local = (
        all(len({numa_of(g, options.gpus_per_node, options.numa_nodes) for g in s}) == 1 for s in sets)
        or per_instance > options.gpus_per_node // options.numa_nodes
    )
    base = dict(
        tp=tp,
        pp=pp,
        gpus_per_instance=per_instance,
        instances_per_node=per_node,
        instances_total=per_node * options.nodes,
        numa_local=numa_local,
    )
    if problems:
        return Candidate(
            **base,
            fits=False,
            valid=False,
            reason="vLLM refuses: " + "; ".join(problems),
            kv_cache_bytes_per_token_per_gpu=0,
            kv_cache_tokens_per_instance=0,
            vllm_logged_kv_cache_tokens=0,
            max_concurrent_requests=0,
            max_model_len_that_fits=0,
            weight_bytes_per_gpu=0,
            kv_cache_bytes_per_gpu=0,
            certificate=None,
        )
    layers = pp_partition(arch.num_hidden_layers, pp)
    weights = [
        int(w * weight_scale) for w in stage_weight_bytes(arch, serving.quantization, serving.dtype, tp, pp)
    ]
    reserve = options.reserve.bytes
    requested = kv.requested_memory(gpu.memory_bytes, options.gpu_memory_utilization)
    available = [requested - w - reserve for w in weights]
    per_layer = kv.kv_bytes_per_token_per_layer(arch, serving.kv_dtype_bytes, tp)
    per_block = [options.block_size * n * per_layer for n in layers]
    cap = kv.kv_capacity(available, per_block, options.max_model_len, options.block_size)
    per_request = kv.blocks_per_request(options.max_model_len, options.block_size)
    heads = kv.kv_heads_per_gpu(arch, tp)
    replicas = 1 if arch.uses_mla else max(1, tp // arch.num_key_value_heads)
    cert = Certificate(
        gpu_memory_bytes=gpu.memory_bytes,
        requested_bytes_per_gpu=requested,
        reserve_bytes_per_gpu=reserve,
        layers_per_stage=layers,
        weight_bytes_per_gpu=weights,
        kv_available_bytes_per_gpu=available,
        kv_bytes_per_block=per_block,
        kv_heads_per_gpu=heads,
        kv_head_replicas=replicas,
        blocks_per_request=per_request,
        kv_cache_blocks=cap.blocks,
    )
    worst = max(range(pp), key=lambda s: (weights[s], -available[s]))
    reason = None
    if weights[worst] + reserve > requested:
        reason = (
            f"weights {gib(weights[worst])} + reserve {gib(reserve)} per GPU exceed the "
            f"{gib(requested)} vLLM may "
            f"use ({options.gpu_memory_utilization} of {gib(gpu.memory_bytes)})"
        )
    elif not cap.fits_one_request:
        tightest = min(range(pp), key=lambda s: available[s] // max(per_block[s], 1))
        need = (per_request + 1) * per_block[tightest]
        reason = (
            f"weights {gib(weights[tightest])} + reserve {gib(reserve)} leave "
            f"{gib(available[tightest])} per GPU for "
            f"KV, fewer than one max-model-len request of {options.max_model_len} tokens (needs {gib(need)})"
        )
    return Candidate(
        **base,
        fits=reason is None,
        valid=True,
        reason=reason,
        kv_cache_bytes_per_token_per_gpu=max(layers) * per_layer,
        kv_cache_tokens_per_instance=cap.tokens,
        vllm_logged_kv_cache_tokens=cap.vllm_logged_tokens,
        max_concurrent_requests=cap.max_concurrent_requests,
        max_model_len_that_fits=cap.max_model_len_that_fits,
        weight_bytes_per_gpu=max(weights),
        kv_cache_bytes_per_gpu=max(0, min(available)),
        certificate=cert,
    )


def rank_key(c: Candidate, interconnect: str = "pcie") -> tuple[int, int, int, int, int, int]:
    """Sort key for :data:`OBJECTIVE`."""
    split = (c.pp, c.tp) if interconnect == "nvlink" else (c.tp, c.pp)
    return (not c.fits, -c.instances_per_node, not c.numa_local, *split, -c.max_concurrent_requests)


def enumerate_candidates(
    arch: ModelArch, serving: Serving, gpu: GpuSpec, options: PlanOptions, weight_scale: float = 1.0
) -> list[Candidate]:
    """Every TP x PP with ``TP * PP <= gpus_per_node``, evaluated and ranked by :data:`OBJECTIVE`."""
    n = options.gpus_per_node
    out = [
        evaluate(arch, serving, gpu, options, tp, pp, weight_scale)
        for tp in range(1, n + 1)
        for pp in range(1, n // tp + 1)
    ]
    return sorted(out, key=lambda c: rank_key(c, gpu.interconnect))


class InstancePlacement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str
    task: Literal["chat", "embedding"]
    port: int
    gpus: list[int]
    numa_node: int
    cpus: list[int]
    tp: int
    pp: int
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    kv_cache_dtype: str
    dtype: str
    quantization: str | None
    expected_kv_cache_tokens: int
    vllm_args: list[str]


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


class CapacityPlan(BaseModel):
    """The planner's answer. ``candidates`` is ranked; ``chosen`` indexes it (None when nothing fits)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelSummary
    gpu: GpuSpec
    options: PlanOptions
    serving: Serving
    objective: str
    kv_cache_bytes_per_token: int
    weight_bytes: int
    weight_bytes_from: str
    candidates: list[Candidate]
    chosen: int | None
    embedding: EmbeddingPlan | None
    nodes: list[NodePlacement]


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


def weight_scale_for(arch: ModelArch, source: ModelSource) -> tuple[float, str]:
    """Scale the computed weights to the checkpoint's stated size: ``checkpoint_bytes / computed``.

    The structure (which GPU holds which part) comes from config.json; the safetensors files, where
    present, correct the total (e.g. for tensors the config does not describe).
    """
    if source.checkpoint_bytes is None:
        return 1.0, "computed from config.json"
    computed = checkpoint_weight_bytes(arch)
    scale = source.checkpoint_bytes / computed
    return (
        scale,
        f"{source.checkpoint_bytes_from} ({source.checkpoint_bytes} bytes; x{scale:.4f} of computed)",
    )


def _round_up_hundredth(x: float) -> float:
    return math.ceil(round(x * 100, 6)) / 100


def _vllm_args(p: dict[str, object]) -> list[str]:
    args = [
        "--port",
        str(p["port"]),
        "--tensor-parallel-size",
        str(p["tp"]),
        "--pipeline-parallel-size",
        str(p["pp"]),
        "--gpu-memory-utilization",
        str(p["gpu_memory_utilization"]),
        "--max-model-len",
        str(p["max_model_len"]),
        "--max-num-seqs",
        str(p["max_num_seqs"]),
        "--kv-cache-dtype",
        str(p["kv_cache_dtype"]),
        "--dtype",
        str(p["dtype"]),
    ]
    if p["quantization"]:
        args += ["--quantization", str(p["quantization"])]
    if p.get("block_size"):
        args += ["--block-size", str(p["block_size"])]
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


def _nearest_fit(cands: list[Candidate], gpus: int) -> Candidate | None:
    fits = [c for c in cands if c.fits]
    if not fits:
        return None
    return min(fits, key=lambda c: (abs(c.gpus_per_instance - gpus), c.gpus_per_instance, c.tp, c.pp))


def _readable_len(n: int) -> int:
    """A max-model-len suggestion: ``n`` rounded down to a multiple of 1024 when that is at least 1024."""
    return n // 1024 * 1024 if n >= 1024 else n


def refusal(
    arch: ModelArch,
    serving: Serving,
    gpu: GpuSpec,
    options: PlanOptions,
    cands: list[Candidate],
    catalog: GpuCatalog,
    weight_scale: float,
    asked: Candidate | None,
) -> str:
    """The refusal message: the cause, and the nearest candidate that fits (another TP x PP, a shorter
    --max-model-len, an fp8 KV cache, or a bigger card from the catalog)."""
    if asked is not None:
        head = (
            f"{arch.name} does not fit on {asked.gpus_per_instance}x {gpu.name} "
            f"at TP={asked.tp} PP={asked.pp}"
        )
        cause = asked.reason or ""
        basis = asked
    else:
        head = f"{arch.name} fits no TP x PP on {options.gpus_per_node}x {gpu.name}"
        valid = [c for c in cands if c.valid]
        basis = (
            max(valid, key=lambda c: (c.gpus_per_instance, c.max_model_len_that_fits, -c.tp))
            if valid
            else None
        )
        cause = (
            f"with all {basis.gpus_per_instance} GPUs (TP={basis.tp} PP={basis.pp}): {basis.reason}"
            if basis
            else "; ".join(sorted({c.reason or "" for c in cands}))
        )
    options_left: list[str] = []
    near = _nearest_fit(cands, asked.gpus_per_instance if asked else options.gpus_per_node)
    if near is not None:
        options_left.append(near.summary(gpu.name))
    if basis is not None and basis.valid and basis.max_model_len_that_fits > 0:
        options_left.append(
            f"--max-model-len {_readable_len(basis.max_model_len_that_fits)} at TP={basis.tp} PP={basis.pp}"
        )
    if serving.kv_cache_dtype == "auto" and basis is not None and basis.valid:
        fp8_opts = options.model_copy(update={"kv_cache_dtype": "fp8"})
        fp8_serving = serving.model_copy(update={"kv_cache_dtype": "fp8", "kv_dtype_bytes": 1})
        trial = evaluate(arch, fp8_serving, gpu, fp8_opts, basis.tp, basis.pp, weight_scale)
        if trial.fits:
            options_left.append(f"--kv-cache-dtype fp8 at TP={basis.tp} PP={basis.pp}")
    if near is None and gpu.from_catalog:
        for name, spec in sorted(catalog.gpus.items(), key=lambda kv_: kv_[1].memory_mib):
            if spec.memory_mib <= gpu.memory_bytes // MIB:
                continue
            other = resolve_gpu(catalog, name)
            try:
                other_serving = resolve_serving(arch, options.model_copy(update={"gpu": name}), other)
            except CapacityError:
                continue
            found = _nearest_fit(
                enumerate_candidates(arch, other_serving, other, options, weight_scale), options.gpus_per_node
            )
            if found is not None:
                options_left.append(f"--gpu {name}: " + found.summary(name))
                break
    nearest = " Nearest fit: " + ", or ".join(options_left) + "." if options_left else " Nothing nearby fits."
    return f"{head}: {cause}.{nearest}"


def plan_capacity(
    arch: ModelArch,
    source: ModelSource,
    options: PlanOptions,
    catalog: GpuCatalog,
    embedding: tuple[ModelArch, ModelSource] | None = None,
) -> CapacityPlan:
    """Plan one model (and optional embedding replicas) on ``options.nodes`` identical GPU nodes."""
    gpu = resolve_gpu(catalog, options.gpu, options.gpu_memory_gib)
    if options.max_model_len > arch.max_position_embeddings and not options.allow_long_max_model_len:
        raise CapacityError(
            f"--max-model-len {options.max_model_len} exceeds {arch.name}'s max_position_embeddings "
            f"({arch.max_position_embeddings}); vLLM refuses it. Lower --max-model-len, or pass "
            "--allow-long-max-model-len (VLLM_ALLOW_LONG_MAX_MODEL_LEN=1) for a model with RoPE scaling"
        )
    serving = resolve_serving(arch, options, gpu)
    scale, scale_from = weight_scale_for(arch, source)
    cands = enumerate_candidates(arch, serving, gpu, options, scale)
    asked = None
    if options.tp is not None or options.pp is not None:
        tp, pp = options.tp or 1, options.pp or 1
        if tp * pp > options.gpus_per_node:
            raise CapacityError(
                f"TP={tp} x PP={pp} needs {tp * pp} GPUs per instance; a node has {options.gpus_per_node}. "
                "Instances spanning nodes are not planned; lower --tp/--pp"
            )
        asked = next(c for c in cands if c.tp == tp and c.pp == pp)
        chosen_idx = cands.index(asked) if asked.fits else None
    else:
        chosen_idx = 0 if cands and cands[0].fits else None
    if chosen_idx is None:
        raise CapacityRefusal(
            refusal(arch, serving, gpu, options, cands, catalog, scale, asked),
            [c.model_dump(mode="json") for c in cands],
        )
    chosen = cands[chosen_idx]
    emb_input = None
    if embedding is not None:
        e_arch, _ = embedding
        e_opts = options.embedding or EmbeddingOptions()
        e_serving = resolve_serving(
            e_arch, options.model_copy(update={"quantization": "auto", "kv_cache_dtype": "auto"}), gpu
        )
        emb_input = (e_arch, e_opts, e_serving)
    nodes, emb_plan = place(arch, serving, options, chosen, gpu, emb_input)
    if emb_plan is not None and embedding is not None:
        emb_plan = emb_plan.model_copy(update={"model": summarize(embedding[0], embedding[1])})
    whole = stage_weight_bytes(arch, serving.quantization, serving.dtype, 1, 1)[0]
    return CapacityPlan(
        model=summarize(arch, source),
        gpu=gpu,
        options=options,
        serving=serving,
        objective=OBJECTIVE,
        kv_cache_bytes_per_token=kv.kv_bytes_per_token(arch, serving.kv_dtype_bytes),
        weight_bytes=int(whole * scale),
        weight_bytes_from=scale_from,
        candidates=cands,
        chosen=chosen_idx,
        embedding=emb_plan,
        nodes=nodes,
    )


__all__ = ["DTYPE_BYTES", "Candidate", "CapacityPlan", "PlanOptions", "Reserve", "plan_capacity"]
