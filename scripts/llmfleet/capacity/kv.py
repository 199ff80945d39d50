"""KV cache math and vLLM's validity rules, each a pure function with its formula in the docstring.

Matches vLLM 0.32 (``vllm/v1/kv_cache_interface.py``, ``vllm/v1/core/kv_cache_utils.py``,
``vllm/config/model.py``); ``tests/test_capacity_vllm.py`` runs vLLM's own functions to check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmfleet.capacity.modelconfig import ModelArch, Quantization
from llmfleet.capacity.params import padded_vocab, pp_partition
from llmfleet.catalog.models import DTYPE_BYTES

# vLLM's CacheConfig.DEFAULT_BLOCK_SIZE. Some attention backends pick another (FlashMLA: 64); pass
# --block-size to plan for that.
VLLM_BLOCK_SIZE = 16
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")


def kv_dtype_bytes(kv_cache_dtype: str, model_dtype: str) -> int:
    """Bytes of one cached K/V element: the model dtype's for ``auto``, 1 for the fp8 variants."""
    if kv_cache_dtype == "auto":
        return DTYPE_BYTES[model_dtype]
    if kv_cache_dtype in KV_CACHE_DTYPES:
        return 1
    raise ValueError(f"kv_cache_dtype {kv_cache_dtype!r}")


def kv_heads_per_gpu(arch: ModelArch, tp: int) -> int:
    """KV heads each TP rank caches: ``max(1, K // TP)``.

    When TP exceeds the KV head count K each rank still holds one head: the heads are replicated
    ``TP / K`` times. MLA caches one latent "head" (vLLM: "when using MLA during decode it becomes MQA").
    """
    if arch.uses_mla:
        return 1
    return max(1, arch.num_key_value_heads // tp)


def kv_bytes_per_token_per_layer(arch: ModelArch, dtype_bytes: int, tp: int = 1) -> int:
    """KV bytes one token takes in one attention layer on one GPU.

    GQA/MHA: ``2 * kv_heads_per_gpu(TP) * head_dim * bytes`` (a K and a V vector per cached head).
    MLA: ``(kv_lora_rank + qk_rope_head_dim) * bytes``, the same on every TP rank (not split by TP).
    Encoder-only models (BERT): 0, vLLM keeps no KV cache for them.
    """
    if arch.kind == "encoder":
        return 0
    if arch.mla is not None:
        return (arch.mla.kv_lora_rank + arch.mla.qk_rope_head_dim) * dtype_bytes
    return 2 * kv_heads_per_gpu(arch, tp) * arch.head_dim * dtype_bytes


def kv_bytes_per_token(arch: ModelArch, dtype_bytes: int) -> int:
    """KV bytes one token takes in the whole model (TP = 1): ``num_hidden_layers *`` the per-layer figure.

    For vicuna-13b in fp16: ``40 * 2 * 40 * 128 * 2 = 819200`` bytes = 0.78125 MiB.
    """
    return arch.num_hidden_layers * kv_bytes_per_token_per_layer(arch, dtype_bytes, 1)


def kv_bytes_per_token_per_gpu(arch: ModelArch, dtype_bytes: int, tp: int, pp: int) -> int:
    """KV bytes one token takes on one GPU of the stage with the most layers:
    ``max(layers per PP stage) * kv_bytes_per_token_per_layer(TP)``."""
    return max(pp_partition(arch.num_hidden_layers, pp)) * kv_bytes_per_token_per_layer(arch, dtype_bytes, tp)


def validity_problems(arch: ModelArch, quant: Quantization, tp: int, pp: int) -> list[str]:
    """Why vLLM would refuse to start this model at ``tp`` x ``pp``; empty when it would start.

    Rules (vLLM's checks, paraphrased):
    ``num_attention_heads % TP == 0`` (ModelConfig.verify_with_parallel_config);
    KV heads: ``K % TP == 0`` when TP < K, ``TP % K == 0`` when TP >= K (QKVParallelLinear);
    the padded vocabulary ``ceil(V/64)*64`` divisible by TP (VocabParallelEmbedding);
    MLP widths divisible by TP (MergedColumnParallelLinear);
    ``PP <= num_hidden_layers`` and PP > 1 only for models that support it (SupportsPP);
    4-bit AWQ/GPTQ: each row-parallel input shard a whole number of groups;
    block fp8: each MLP shard a whole number of weight blocks.
    """
    problems: list[str] = []
    heads, kv = arch.num_attention_heads, arch.num_key_value_heads
    if heads % tp:
        problems.append(f"num_attention_heads ({heads}) is not divisible by TP={tp}")
    if arch.mla is None and not heads % tp:
        if tp < kv and kv % tp:
            problems.append(f"num_key_value_heads ({kv}) is not divisible by TP={tp}")
        elif tp >= kv and tp % kv:
            problems.append(
                f"TP={tp} is not a multiple of num_key_value_heads ({kv}) (heads cannot be replicated)"
            )
    vocab = padded_vocab(arch.vocab_size)
    if vocab % tp:
        problems.append(f"the padded vocabulary ({vocab}) is not divisible by TP={tp}")
    widths = {"intermediate_size": arch.intermediate_size}
    if arch.moe is not None:
        widths["moe_intermediate_size"] = arch.moe.moe_intermediate_size
        if arch.moe.shared_intermediate_size:
            widths["shared expert width"] = arch.moe.shared_intermediate_size
    for label, width in widths.items():
        if width % tp:
            problems.append(f"{label} ({width}) is not divisible by TP={tp}")
        elif quant.method in ("awq", "gptq") and quant.group_size and (width // tp) % quant.group_size:
            problems.append(
                f"{label}/TP = {width // tp} is not a whole number of {quant.method} groups "
                f"of {quant.group_size}"
            )
        elif quant.method == "fp8" and quant.weight_block_size and (width // tp) % quant.weight_block_size[0]:
            problems.append(
                f"{label}/TP = {width // tp} is not a whole number of fp8 weight blocks of "
                f"{quant.weight_block_size[0]}"
            )
    if pp > arch.num_hidden_layers:
        problems.append(f"PP={pp} exceeds num_hidden_layers ({arch.num_hidden_layers})")
    if pp > 1 and not arch.supports_pp:
        problems.append(f"vLLM's {arch.architecture} does not support pipeline parallelism (PP={pp})")
    return problems


@dataclass(frozen=True)
class KvCapacity:
    """What vLLM allocates for one instance, given the KV memory each GPU has left."""

    blocks: int
    tokens: int
    vllm_logged_tokens: int
    max_concurrent_requests: int
    max_model_len_that_fits: int
    fits_one_request: bool


def blocks_per_request(max_model_len: int, block_size: int = VLLM_BLOCK_SIZE) -> int:
    """Blocks one request of ``max_model_len`` tokens needs: ``ceil(L / block_size)``."""
    return -(-max_model_len // block_size)


def kv_capacity(
    available_bytes: list[int],
    bytes_per_block: list[int],
    max_model_len: int,
    block_size: int = VLLM_BLOCK_SIZE,
) -> KvCapacity:
    """KV tokens and concurrency of one instance (one entry per PP stage in both lists).

    ``blocks = min over stages of (available // bytes_per_block)`` (vLLM gives every stage the smallest
    count); ``tokens = blocks * block_size`` (rounded down to whole blocks). vLLM logs
    ``int(blocks / ceil(L/B) * L)`` as "KV cache size: N tokens". One block is vLLM's null block, so a
    request of ``L`` tokens fits when ``blocks - 1 >= ceil(L/B)``; ``max_concurrent_requests =
    (blocks - 1) // ceil(L/B)``; the longest ``--max-model-len`` that fits is ``(blocks - 1) * B``.
    """
    if any(b <= 0 for b in bytes_per_block):
        # No KV cache at all (encoder-only): any length fits, concurrency is bounded elsewhere.
        return KvCapacity(0, 0, 0, 0, 0, True)
    blocks = max(0, min(a // b for a, b in zip(available_bytes, bytes_per_block, strict=True)))
    per_request = blocks_per_request(max_model_len, block_size)
    usable = max(0, blocks - 1)
    return KvCapacity(
        blocks=blocks,
        tokens=blocks * block_size,
        vllm_logged_tokens=int(blocks / per_request * max_model_len),
        max_concurrent_requests=usable // per_request,
        max_model_len_that_fits=usable * block_size,
        fits_one_request=usable >= per_request,
    )


def requested_memory(total_bytes: int, gpu_memory_utilization: float) -> int:
    """Memory vLLM budgets on each GPU: ``ceil(total * gpu_memory_utilization)`` (vllm.v1.worker.utils)."""
    return math.ceil(total_bytes * gpu_memory_utilization)
