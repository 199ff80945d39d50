"""Weight bytes: the parameter count of each part of the model, and what each GPU holds under TP x PP.

The count follows vLLM's layer classes, not a rule of thumb:

* column/row-parallel linear layers (q/k/v/o, gate/up/down, expert weights) are split across the TP
  ranks; vLLM's fused MoE splits each expert's intermediate dimension the same way;
* MLA's ``q_a_proj`` and ``kv_a_proj_with_mqa`` are replicated linear layers (every TP rank holds
  them whole), so are norms and the MoE router;
* the vocabulary (embedding and LM head) is split across TP after padding to a multiple of 64;
* pipeline stage 0 holds the embedding; the last stage holds the final norm and the LM head, which
  it holds even when the embeddings are tied if PP > 1 (the two sit on different GPUs);
* layers are split across PP stages as ``vllm.distributed.utils.get_pp_indices`` does.

Quantized weights: fp8 stores 1 byte per linear weight plus one fp32 scale per weight block; 4-bit
AWQ/GPTQ store 0.5 byte plus a fp16 scale and a 4-bit zero point per group of ``group_size`` inputs.
Embeddings, the LM head, norms and routers stay in the activation dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmfleet.capacity.modelconfig import ModelArch, Quantization
from llmfleet.catalog.models import DTYPE_BYTES

VOCAB_PADDING = 64


@dataclass(frozen=True)
class LayerParams:
    """Parameters of one decoder/encoder layer, by how TP treats them and whether they are quantized."""

    sharded_linear: int
    replicated_linear: int
    sharded_plain: int
    replicated_plain: int

    @property
    def total(self) -> int:
        return self.sharded_linear + self.replicated_linear + self.sharded_plain + self.replicated_plain


def layer_params(arch: ModelArch, index: int) -> LayerParams:
    """Parameters of layer ``index``.

    Attention (GQA/MHA): ``h*(H*d) + 2*h*(K*d) + (H*d)*h`` for q, k, v, o (H heads, K KV heads, d head_dim),
    plus ``H*d + 2*K*d`` bias when the family has qkv bias and ``2*d`` for Qwen3's q/k norms.
    Attention (MLA): ``h*r_q + r_q*H*(n+r)`` (or ``h*H*(n+r)`` without q LoRA) for q,
    ``h*(c+r)`` for kv_a, ``c*H*(n+v)`` for kv_b, ``H*v*h`` for o (c = kv_lora_rank, r = rope dim,
    n = nope dim, v = v_head_dim); kv_a and q_a are replicated.
    Dense gated MLP: ``3*h*i``; plain (BERT) MLP: ``2*h*i + i + h``.
    MoE layer: ``E*3*h*i_moe`` experts + ``3*h*i_shared`` shared expert, router ``h*E`` (+ ``h`` for a
    gated shared expert).
    Norms: ``2*h`` (RMSNorm) per layer; BERT's LayerNorms carry a bias too (``4*h``).
    """
    h = arch.hidden_size
    heads, kv, d = arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim
    sharded = replicated = sharded_plain = replicated_plain = 0
    if arch.mla is not None:
        m = arch.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            replicated += h * m.q_lora_rank
            replicated_plain += m.q_lora_rank
            sharded += m.q_lora_rank * heads * qk
        else:
            sharded += h * heads * qk
        replicated += h * (m.kv_lora_rank + m.qk_rope_head_dim)
        replicated_plain += m.kv_lora_rank
        sharded += m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim)
        sharded += heads * m.v_head_dim * h
    else:
        sharded += h * heads * d + 2 * h * kv * d + heads * d * h
        if arch.qkv_bias:
            sharded_plain += heads * d + 2 * kv * d
        if arch.kind == "encoder":
            replicated_plain += h  # o_proj bias (row-parallel bias is not split)
        if arch.qk_norm:
            replicated_plain += 2 * d
    moe = arch.moe
    if moe is not None and index in moe.moe_layers:
        sharded += moe.num_experts * 3 * h * moe.moe_intermediate_size
        sharded += 3 * h * moe.shared_intermediate_size
        replicated_plain += h * moe.num_experts + (h if moe.shared_expert_gate else 0)
    elif arch.mlp == "gated":
        sharded += 3 * h * arch.intermediate_size
    else:
        sharded += 2 * h * arch.intermediate_size
        sharded_plain += arch.intermediate_size
        replicated_plain += h
    replicated_plain += 4 * h if arch.kind == "encoder" else 2 * h
    return LayerParams(sharded, replicated, sharded_plain, replicated_plain)


def pp_partition(num_layers: int, pp: int) -> list[int]:
    """Layers per PP stage, as ``vllm.distributed.utils.get_pp_indices`` splits them.

    ``num_layers // pp`` each; the remainder goes one by one to the stages before the last, starting
    from the second-to-last (the last stage holds the LM head).
    """
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return parts


def stage_layers(num_layers: int, pp: int) -> list[range]:
    """The layer indices of each PP stage."""
    out, start = [], 0
    for count in pp_partition(num_layers, pp):
        out.append(range(start, start + count))
        start += count
    return out


def linear_bytes_per_param(quant: Quantization, dtype_bytes: int) -> float:
    """Bytes one linear-layer weight takes in memory.

    none: ``dtype_bytes``; fp8: ``1 + 4/(block_n*block_k)`` (one fp32 scale per block; per-tensor scale
    when there are no blocks, which rounds to 1); 4-bit AWQ/GPTQ: ``0.5 + (2 + 0.5)/group_size``
    (packed int4 weight, a fp16 scale and a packed 4-bit zero point per group).
    """
    if quant.method == "none":
        return float(dtype_bytes)
    if quant.method == "fp8":
        if quant.weight_block_size:
            bn, bk = quant.weight_block_size
            return 1 + 4 / (bn * bk)
        return 1.0
    group = quant.group_size
    return 0.5 + (2.5 / group if group else 0.0)


def padded_vocab(vocab: int) -> int:
    """vLLM's VocabParallelEmbedding pads the vocabulary to a multiple of 64: ``ceil(V/64)*64``."""
    return -(-vocab // VOCAB_PADDING) * VOCAB_PADDING


def stage_weight_bytes(
    arch: ModelArch, quant: Quantization, dtype: str, tp: int, pp: int, *, serving: bool = True
) -> list[int]:
    """Weight bytes on one GPU of each PP stage, under ``tp`` x ``pp``.

    ``sum over the stage's layers of (sharded_linear/TP * q + replicated_linear * q + sharded_plain/TP * b
    + replicated_plain * b)``, plus ``V_pad*h/TP * b`` for the embedding on stage 0 and for the LM head on
    the last stage (unless tied and PP = 1), plus ``h * b`` for the final norm; ``q`` is
    :func:`linear_bytes_per_param`, ``b`` the dtype's bytes. With ``serving=False`` the count is the
    checkpoint's own (no vocabulary padding, TP = PP = 1 expected) to compare with safetensors sizes.
    """
    b = DTYPE_BYTES[dtype]
    q = linear_bytes_per_param(quant, b)
    h = arch.hidden_size
    vocab = padded_vocab(arch.vocab_size) if serving else arch.vocab_size
    stages = stage_layers(arch.num_hidden_layers, pp)
    out = []
    for s, layers in enumerate(stages):
        total = 0.0
        for i in layers:
            p = layer_params(arch, i)
            total += p.sharded_linear / tp * q + p.replicated_linear * q
            total += p.sharded_plain / tp * b + p.replicated_plain * b
        if s == 0:
            total += vocab * h / tp * b + arch.extra_embedding_rows * h * b
            if arch.kind == "encoder":
                total += 2 * h * b  # embedding LayerNorm
        if s == len(stages) - 1:
            if arch.kind == "encoder":
                total += (h * h + h) * b  # pooler dense
            else:
                if not arch.tie_word_embeddings or pp > 1:
                    total += vocab * h / tp * b
                total += h * b
        out.append(int(total))
    return out


def model_weight_bytes(arch: ModelArch, quant: Quantization, dtype: str) -> int:
    """Weight bytes of the whole model in memory (TP = PP = 1, padded vocabulary)."""
    return stage_weight_bytes(arch, quant, dtype, 1, 1)[0]


def checkpoint_weight_bytes(arch: ModelArch) -> int:
    """Weight bytes the checkpoint files should hold, computed from config.json alone."""
    return stage_weight_bytes(arch, arch.quantization, arch.dtype, 1, 1, serving=False)[0]


def parameter_count(arch: ModelArch) -> int:
    """Parameters in the model (each quantized weight counts as one)."""
    h = arch.hidden_size
    total = sum(layer_params(arch, i).total for i in range(arch.num_hidden_layers))
    total += arch.vocab_size * h + arch.extra_embedding_rows * h
    if arch.kind == "encoder":
        total += 2 * h + h * h + h
    else:
        total += h + (0 if arch.tie_word_embeddings else arch.vocab_size * h)
    return total
