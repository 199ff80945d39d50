"""Candidates: every TP x PP that could serve the model on a node, each checked against vLLM's rules and
the GPU's memory, with a fit certificate (the numbers that prove it fits, or the first one that does
not), and ranked by :data:`OBJECTIVE`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from llmfleet.capacity import kv
from llmfleet.capacity.modelconfig import ModelArch
from llmfleet.capacity.options import GpuSpec, PlanOptions, Serving, gib
from llmfleet.capacity.params import pp_partition, stage_weight_bytes

OBJECTIVE = (
    "fits first; then most instances per node (replicas for throughput); then GPU sets inside one NUMA "
    "node; then, on PCIe cards, lower TP (less all-reduce traffic over PCIe) before lower PP, and on an "
    "NVLink island lower PP (no pipeline bubbles) before lower TP; then more concurrent requests"
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
