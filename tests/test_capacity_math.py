"""The documented formulas: KV bytes per token (GQA, MLA, TP), weights under TP x PP, block rounding,
vLLM's validity rules, and the worked examples from the seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.capacity import kv
from llmfleet.capacity.modelconfig import Quantization, load_model
from llmfleet.capacity.params import (
    layer_params,
    linear_bytes_per_param,
    model_weight_bytes,
    padded_vocab,
    pp_partition,
    stage_weight_bytes,
)

CONFIGS = Path(__file__).parent / "data" / "hf-configs"
MIB = 1024**2
GIB = 1024**3


def arch(name: str):
    return load_model(CONFIGS / name)[0]


def test_seed_004_vicuna_13b_fp16_is_0_78125_mib_per_token():
    a = arch("lmsys--vicuna-13b-v1.5-16k")
    assert kv.kv_bytes_per_token(a, kv.kv_dtype_bytes("auto", a.dtype)) / MIB == 0.78125


def test_gqa_uses_kv_heads_not_attention_heads():
    # Llama-3.1-8B: 32 layers x 2 x 8 KV heads x 128 x 2 bytes; with 32 heads it would be 4x that.
    assert kv.kv_bytes_per_token(arch("meta-llama--Llama-3.1-8B-Instruct"), 2) == 131072


def test_kv_heads_are_replicated_when_tp_exceeds_them():
    a = arch("Qwen--Qwen2.5-7B-Instruct")  # 4 KV heads
    assert [kv.kv_heads_per_gpu(a, tp) for tp in (1, 2, 4, 8, 16)] == [4, 2, 1, 1, 1]
    # TP=8 stores 1 head per GPU, so the 8 GPUs hold 8 copies' worth: per GPU no smaller than at TP=4.
    assert kv.kv_bytes_per_token_per_layer(a, 2, 8) == kv.kv_bytes_per_token_per_layer(a, 2, 4) == 2 * 128 * 2


def test_mla_latent_cache_is_not_split_by_tp():
    a = arch("deepseek-ai--DeepSeek-V3")
    per_layer = (512 + 64) * 2
    assert kv.kv_bytes_per_token(a, 2) == 61 * per_layer
    assert {kv.kv_bytes_per_token_per_layer(a, 2, tp) for tp in (1, 2, 4, 8, 16)} == {per_layer}
    assert kv.kv_bytes_per_token(a, kv.kv_dtype_bytes("fp8", "bfloat16")) == 61 * 576


def test_encoder_models_have_no_kv_cache():
    assert kv.kv_bytes_per_token(arch("sentence-transformers--all-MiniLM-L6-v2"), 2) == 0


def test_kv_per_gpu_uses_the_stage_with_most_layers():
    a = arch("meta-llama--Llama-3.1-8B-Instruct")
    # 32 layers over PP=3: [11, 11, 10]; TP=2: 4 KV heads per GPU.
    assert pp_partition(32, 3) == [11, 11, 10]
    assert kv.kv_bytes_per_token_per_gpu(a, 2, 2, 3) == 11 * 2 * 4 * 128 * 2


@pytest.mark.parametrize(
    ("layers", "pp", "parts"),
    [(61, 4, [15, 15, 16, 15]), (80, 3, [27, 27, 26]), (30, 7, [4, 4, 4, 4, 5, 5, 4]), (32, 1, [32])],
)
def test_pp_partition_matches_vllm_get_pp_indices(layers, pp, parts):
    # Expected lists are vllm.distributed.utils.get_pp_indices' output (see test_capacity_vllm.py).
    assert pp_partition(layers, pp) == parts
    assert sum(parts) == layers


def test_smollm2_1_gib_cpu_cache_is_the_figure_vllm_logged():
    # vLLM 0.32 CPU log: "CPU KV cache size: 46,592 tokens, Maximum concurrency for 2,048 tokens per
    # request: 22.75x" for VLLM_CPU_KVCACHE_SPACE=1 (README; tests/e2e asserts it on a real deploy).
    a = arch("HuggingFaceTB--SmolLM2-135M-Instruct")
    per_block = kv.VLLM_BLOCK_SIZE * a.num_hidden_layers * kv.kv_bytes_per_token_per_layer(a, 2)
    cap = kv.kv_capacity([GIB], [per_block], 2048)
    assert (cap.blocks, cap.tokens, cap.vllm_logged_tokens) == (2912, 46592, 46592)
    assert cap.blocks / kv.blocks_per_request(2048) == 22.75
    assert cap.max_concurrent_requests == 22  # one block is vLLM's null block


def test_tokens_round_down_to_whole_blocks():
    cap = kv.kv_capacity([16 * 100 + 15], [16], 160)  # 1 byte per token: 100 blocks and a partial one
    assert (cap.blocks, cap.tokens) == (100, 1600)
    assert cap.max_model_len_that_fits == 99 * 16


def test_one_request_needs_its_blocks_plus_the_null_block():
    assert kv.blocks_per_request(4096) == 256
    assert not kv.kv_capacity([256 * 10], [10], 4096).fits_one_request
    assert kv.kv_capacity([257 * 10], [10], 4096).fits_one_request


def test_logged_tokens_when_max_model_len_is_not_a_block_multiple():
    # vLLM logs int(blocks / ceil(L/16) * L), which differs from blocks * 16 here.
    cap = kv.kv_capacity([1000 * 7], [7], 4001)
    assert (cap.tokens, cap.vllm_logged_tokens) == (16000, 15940)


def test_pp_stages_share_the_smallest_block_count():
    cap = kv.kv_capacity([1000, 500], [10, 10], 16)
    assert cap.blocks == 50


def test_requested_memory_rounds_up_like_vllm():
    assert kv.requested_memory(81559 * MIB, 0.9) == -(-81559 * MIB * 9 // 10)


# Weights under TP x PP.


def test_tp_splits_sharded_weights_and_keeps_replicated_ones():
    a = arch("deepseek-ai--DeepSeek-V2-Lite")
    p = layer_params(a, 0)
    assert p.replicated_linear == 2048 * (512 + 64)  # kv_a_proj_with_mqa; no q LoRA in V2-Lite
    one = stage_weight_bytes(a, a.quantization, "bfloat16", 1, 1)[0]
    two = stage_weight_bytes(a, a.quantization, "bfloat16", 2, 1)[0]
    assert one / 2 < two < one / 2 + 27 * 2048 * 576 * 2 + 10 * MIB


def test_pp_stages_sum_to_the_whole_model():
    a = arch("meta-llama--Llama-3.1-70B-Instruct")
    stages = stage_weight_bytes(a, a.quantization, "bfloat16", 1, 4)
    assert sum(stages) == pytest.approx(model_weight_bytes(a, a.quantization, "bfloat16"), abs=8)
    # First stage holds the embedding, last the LM head; the middle ones are layers only.
    assert stages[0] > stages[1] and stages[3] > stages[2]


def test_tied_embeddings_cost_a_second_copy_only_with_pp():
    a = arch("HuggingFaceTB--SmolLM2-135M-Instruct")
    vocab = padded_vocab(a.vocab_size) * a.hidden_size * 2
    one = stage_weight_bytes(a, a.quantization, "bfloat16", 1, 1)[0]
    two = stage_weight_bytes(a, a.quantization, "bfloat16", 1, 2)
    assert sum(two) == one + vocab


def test_quantized_bytes_per_weight():
    assert linear_bytes_per_param(Quantization(), 2) == 2
    assert linear_bytes_per_param(Quantization(method="fp8", bits=8), 2) == 1
    assert linear_bytes_per_param(Quantization(method="fp8", bits=8, weight_block_size=[128, 128]), 2) == (
        1 + 4 / 16384
    )
    assert linear_bytes_per_param(Quantization(method="awq", bits=4, group_size=128), 2) == 0.5 + 2.5 / 128


def test_fp8_halves_linear_weights_but_not_the_vocabulary():
    a = arch("Qwen--QwQ-32B")
    bf16 = model_weight_bytes(a, Quantization(), "bfloat16")
    fp8 = model_weight_bytes(a, Quantization(method="fp8", bits=8), "bfloat16")
    vocab = 2 * padded_vocab(a.vocab_size) * a.hidden_size * 2
    assert fp8 == pytest.approx((bf16 - vocab) / 2 + vocab, rel=1e-4)


# vLLM's validity rules.


def test_seed_002_qwq_refuses_tp_that_does_not_divide_40_heads():
    a = arch("Qwen--QwQ-32B")
    for tp in (3, 6):
        problems = kv.validity_problems(a, a.quantization, tp, 1)
        assert f"num_attention_heads (40) is not divisible by TP={tp}" in problems
    assert kv.validity_problems(a, a.quantization, 4, 2) == []
    assert kv.validity_problems(a, a.quantization, 8, 1) == []


def test_kv_head_rules():
    a = arch("meta-llama--Llama-3.1-8B-Instruct")  # 32 heads, 8 KV heads
    assert kv.validity_problems(a, a.quantization, 16, 1) == []  # 16 % 8 == 0: each KV head twice
    q = arch("Qwen--Qwen2.5-7B-Instruct")  # 28 heads, 4 KV heads
    assert any("not divisible by TP=7" in p or "multiple of num_key_value_heads" in p
               for p in kv.validity_problems(q, q.quantization, 14, 1))  # fmt: skip


def test_gptq_group_alignment_explains_qwens_padded_intermediate_size():
    # Qwen2.5-72B-Instruct-GPTQ-Int4 pads intermediate_size 29568 -> 29696 so TP=8 shards hold whole groups.
    gptq = arch("Qwen--Qwen2.5-72B-Instruct-GPTQ-Int4")
    assert kv.validity_problems(gptq, gptq.quantization, 8, 1) == []
    unpadded = gptq.model_copy(update={"intermediate_size": 29568})
    assert any("groups of 128" in p for p in kv.validity_problems(unpadded, gptq.quantization, 8, 1))


def test_pp_rules():
    a = arch("HuggingFaceTB--SmolLM2-135M-Instruct")
    assert any("exceeds num_hidden_layers" in p for p in kv.validity_problems(a, a.quantization, 1, 31))
    bert = arch("sentence-transformers--all-MiniLM-L6-v2")
    assert any("pipeline parallelism" in p for p in kv.validity_problems(bert, bert.quantization, 1, 2))


def test_vocabulary_must_split_evenly():
    a = arch("Qwen--QwQ-32B")
    assert "the padded vocabulary (152064) is not divisible by TP=5" in kv.validity_problems(
        a, a.quantization, 5, 1
    )
