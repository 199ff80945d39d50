"""Read a model's architecture from a local Hugging Face ``config.json`` (no hub access).

The result, :class:`ModelArch`, carries exactly the facts the capacity math needs, each derived the way
vLLM 0.32 derives it (``vllm/transformers_utils/model_arch_config_convertor.py``):

* ``head_dim``: the config's ``head_dim`` when present and positive, else ``hidden_size //
  num_attention_heads`` (Qwen3 and Gemma set it explicitly, and it differs from the quotient);
* ``num_key_value_heads``: the config's value, or ``num_attention_heads`` when absent (plain
  multi-head attention, e.g. Llama 2 / Vicuna);
* multi-head latent attention (DeepSeek V2/V3): ``kv_lora_rank`` set on a ``deepseek_v2`` /
  ``deepseek_v3`` model type;
* the weight dtype from ``torch_dtype`` (transformers < 5) or ``dtype`` (transformers 5).

Errors are :class:`~llmfleet.errors.CapacityError` naming the file and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmfleet.catalog.models import DTYPE_BYTES, Architecture
from llmfleet.errors import CapacityError


@dataclass(frozen=True)
class Family:
    """What vLLM's implementation of a model type looks like, as far as memory is concerned."""

    kind: Literal["decoder", "encoder"]
    # transformers' default for tie_word_embeddings when the config omits it.
    tie_default: bool
    qkv_bias: bool = False
    # Per-head RMSNorm on q and k (Qwen3): 2 * head_dim parameters per layer.
    qk_norm: bool = False
    moe: Literal["none", "mixtral", "qwen", "deepseek"] = "none"
    mla: bool = False
    # The vLLM model class implements SupportsPP (pipeline parallelism).
    supports_pp: bool = True
    mlp: Literal["gated", "plain"] = "gated"


FAMILIES: dict[str, Family] = {
    "llama": Family("decoder", tie_default=False),
    "mistral": Family("decoder", tie_default=False),
    "qwen2": Family("decoder", tie_default=False, qkv_bias=True),
    "qwen3": Family("decoder", tie_default=False, qk_norm=True),
    "gemma": Family("decoder", tie_default=True),
    "phi3": Family("decoder", tie_default=False),
    "mixtral": Family("decoder", tie_default=False, moe="mixtral"),
    "qwen2_moe": Family("decoder", tie_default=False, qkv_bias=True, moe="qwen"),
    "qwen3_moe": Family("decoder", tie_default=False, qk_norm=True, moe="qwen"),
    "deepseek_v2": Family("decoder", tie_default=False, moe="deepseek", mla=True),
    "deepseek_v3": Family("decoder", tie_default=False, moe="deepseek", mla=True),
    # Encoder-only embedding models: vLLM's pooling runner keeps no KV cache for them.
    "bert": Family("encoder", tie_default=True, qkv_bias=True, supports_pp=False, mlp="plain"),
}


class Quantization(BaseModel):
    """How the checkpoint's linear-layer weights are stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["none", "fp8", "awq", "gptq"] = "none"
    bits: int = 16
    group_size: int | None = None
    # fp8 block-wise scales (DeepSeek V3, Qwen3-FP8): [block_n, block_k].
    weight_block_size: list[int] | None = None


class Mla(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kv_lora_rank: int = Field(gt=0)
    q_lora_rank: int | None = None
    qk_nope_head_dim: int = Field(gt=0)
    qk_rope_head_dim: int = Field(gt=0)
    v_head_dim: int = Field(gt=0)


class Moe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_experts: int = Field(gt=0)
    num_experts_per_tok: int = Field(gt=0)
    moe_intermediate_size: int = Field(gt=0)
    # Shared (always-on) expert width summed over shared experts; 0 when there is none.
    shared_intermediate_size: int = 0
    # Qwen2-MoE gates its shared expert with a hidden_size -> 1 linear layer.
    shared_expert_gate: bool = False
    moe_layers: list[int]


class ModelArch(BaseModel):
    """A model's memory-relevant architecture, read from ``config.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model_type: str
    architecture: str
    kind: Literal["decoder", "encoder"]
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    head_dim_from: Literal[
        "config", "hidden_size // num_attention_heads", "qk_nope_head_dim + qk_rope_head_dim"
    ]
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)
    tie_word_embeddings: bool
    dtype: Literal["bfloat16", "float16", "float32"]
    quantization: Quantization
    mla: Mla | None = None
    moe: Moe | None = None
    qkv_bias: bool = False
    qk_norm: bool = False
    supports_pp: bool = True
    mlp: Literal["gated", "plain"] = "gated"
    # BERT: position and token-type embeddings.
    extra_embedding_rows: int = 0

    @property
    def uses_mla(self) -> bool:
        return self.mla is not None


class ModelSource(BaseModel):
    """Where the model came from, and the checkpoint's weight bytes where a file states them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config_path: str
    checkpoint_bytes: int | None = None
    checkpoint_bytes_from: str | None = None


def _field(raw: dict[str, Any], key: str, path: Path, *, kind: type = int, default: Any = ...) -> Any:
    """One field of config.json, type-checked; a missing or mistyped field names itself."""
    if key not in raw or raw[key] is None:
        if default is ...:
            raise CapacityError(
                f"{path}: field {key!r} is missing; a {raw.get('model_type', '?')} config.json needs it. "
                "Use the model's own config.json, unmodified."
            )
        return default
    value = raw[key]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        if not ok:
            raise CapacityError(f"{path}: field {key!r} is {value!r}; it must be a positive integer")
    elif kind is bool and not isinstance(value, bool):
        raise CapacityError(f"{path}: field {key!r} is {value!r}; it must be true or false")
    return value


def _quantization(raw: dict[str, Any], path: Path) -> Quantization:
    q = raw.get("quantization_config") or raw.get("compression_config")
    if q is None:
        return Quantization()
    if not isinstance(q, dict):
        raise CapacityError(f"{path}: field 'quantization_config' must be an object, not {q!r}")
    method = str(q.get("quant_method", "")).lower()
    if method == "fp8":
        block = q.get("weight_block_size")
        return Quantization(method="fp8", bits=8, weight_block_size=list(block) if block else None)
    if method in ("awq", "gptq"):
        bits = q.get("bits", q.get("w_bit"))
        group = q.get("group_size", q.get("q_group_size"))
        if bits != 4:
            raise CapacityError(
                f"{path}: quantization_config.bits is {bits!r}; the planner handles 4-bit {method} only"
            )
        if not isinstance(group, int) or group == 0:
            raise CapacityError(f"{path}: quantization_config.group_size is {group!r}; expected e.g. 128")
        return Quantization(method=method, bits=4, group_size=None if group < 0 else group)
    raise CapacityError(
        f"{path}: quantization_config.quant_method is {method or 'missing'!r}; the planner handles "
        "fp8, awq and gptq. Plan from the unquantized model's config.json with --quantization fp8 instead."
    )


def _dtype(raw: dict[str, Any], path: Path) -> str:
    value = raw.get("torch_dtype", raw.get("dtype"))
    if value is None:
        # transformers' default, and what vLLM assumes for a config without a dtype.
        return "float32"
    value = str(value).removeprefix("torch.")
    if value not in DTYPE_BYTES:
        raise CapacityError(
            f"{path}: field 'torch_dtype' is {value!r}; expected one of {sorted(DTYPE_BYTES)}"
        )
    return value


def _moe(raw: dict[str, Any], family: Family, layers: int, path: Path) -> Moe | None:
    if family.moe == "none":
        return None
    if family.moe == "mixtral":
        return Moe(
            num_experts=_field(raw, "num_local_experts", path),
            num_experts_per_tok=_field(raw, "num_experts_per_tok", path),
            moe_intermediate_size=_field(raw, "intermediate_size", path),
            moe_layers=list(range(layers)),
        )
    if family.moe == "qwen":
        step = _field(raw, "decoder_sparse_step", path, default=1)
        dense_only = set(raw.get("mlp_only_layers") or [])
        shared = raw.get("shared_expert_intermediate_size") or 0
        return Moe(
            num_experts=_field(raw, "num_experts", path),
            num_experts_per_tok=_field(raw, "num_experts_per_tok", path),
            moe_intermediate_size=_field(raw, "moe_intermediate_size", path),
            shared_intermediate_size=shared,
            shared_expert_gate=shared > 0,
            moe_layers=[i for i in range(layers) if i not in dense_only and (i + 1) % step == 0],
        )
    first_dense = raw.get("first_k_dense_replace") or 0
    freq = _field(raw, "moe_layer_freq", path, default=1)
    moe_inter = _field(raw, "moe_intermediate_size", path)
    return Moe(
        num_experts=_field(raw, "n_routed_experts", path),
        num_experts_per_tok=_field(raw, "num_experts_per_tok", path),
        moe_intermediate_size=moe_inter,
        shared_intermediate_size=(raw.get("n_shared_experts") or 0) * moe_inter,
        moe_layers=[i for i in range(layers) if i >= first_dense and i % freq == 0],
    )


def default_name(config: Path) -> str:
    """The served name when --name is not given, from where the config lives: a Hugging Face cache
    snapshot (``models--org--name/snapshots/<commit>/config.json``) or repository folder (``org--name``)
    names the model; a config kept under another file name (``llama-8b.json``) is named after the file,
    not after the folder that happens to hold it. The config's own ``_name_or_path`` is not used: a
    fine-tune often keeps its base model's there."""
    if config.name != "config.json":
        return config.stem.lower()
    folder = config.parent
    if folder.parent.name == "snapshots":
        folder = folder.parent.parent
    return folder.name.split("--")[-1].lower()


def parse_config(raw: object, path: Path, name: str | None = None) -> ModelArch:
    """Turn a parsed config.json into a :class:`ModelArch`. Pure: no file access."""
    if not isinstance(raw, dict):
        raise CapacityError(f"{path}: config.json must be a JSON object, not {type(raw).__name__}")
    # Multimodal wrappers keep the language model's fields under text_config.
    text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else raw
    model_type = text.get("model_type", raw.get("model_type"))
    if model_type is None:
        raise CapacityError(f"{path}: field 'model_type' is missing; is this a Hugging Face config.json?")
    family = FAMILIES.get(model_type)
    if family is None:
        raise CapacityError(
            f"{path}: unknown architecture model_type={model_type!r}. The planner knows: "
            f"{', '.join(sorted(FAMILIES))}. Add it to FAMILIES in llmfleet/capacity/modelconfig.py "
            "once its memory layout is checked against vLLM's model code."
        )
    architectures = raw.get("architectures") or [model_type]
    layers = _field(text, "num_hidden_layers", path)
    heads = _field(text, "num_attention_heads", path)
    hidden = _field(text, "hidden_size", path)
    kv_heads = _field(text, "num_key_value_heads", path, default=heads)
    explicit_head_dim = text.get("head_dim")
    if family.mla and text.get("kv_lora_rank") is not None:
        # MLA: the query/key head is nope + rope wide; the cache holds the latent (see Mla).
        head_dim = _field(text, "qk_nope_head_dim", path) + _field(text, "qk_rope_head_dim", path)
        head_dim_from = "qk_nope_head_dim + qk_rope_head_dim"
    elif isinstance(explicit_head_dim, int) and explicit_head_dim > 0:
        head_dim, head_dim_from = explicit_head_dim, "config"
    else:
        if hidden % heads:
            raise CapacityError(
                f"{path}: hidden_size {hidden} is not a multiple of num_attention_heads {heads} and there "
                "is no head_dim field; the config is inconsistent"
            )
        head_dim, head_dim_from = hidden // heads, "hidden_size // num_attention_heads"
    if kv_heads > heads or heads % kv_heads:
        raise CapacityError(f"{path}: num_key_value_heads {kv_heads} must divide num_attention_heads {heads}")
    mla = None
    if family.mla and text.get("kv_lora_rank") is not None:
        mla = Mla(
            kv_lora_rank=_field(text, "kv_lora_rank", path),
            q_lora_rank=text.get("q_lora_rank"),
            qk_nope_head_dim=_field(text, "qk_nope_head_dim", path),
            qk_rope_head_dim=_field(text, "qk_rope_head_dim", path),
            v_head_dim=_field(text, "v_head_dim", path),
        )
    extra_rows = 0
    if family.kind == "encoder":
        extra_rows = _field(text, "max_position_embeddings", path) + (text.get("type_vocab_size") or 0)
    max_pos = text.get("max_position_embeddings")
    if not isinstance(max_pos, int) or max_pos <= 0:
        raise CapacityError(
            f"{path}: field 'max_position_embeddings' is {max_pos!r}; expected a positive integer"
        )
    return ModelArch(
        name=name or default_name(path),
        model_type=model_type,
        architecture=str(architectures[0]),
        kind=family.kind,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        head_dim_from=head_dim_from,
        hidden_size=hidden,
        intermediate_size=_field(text, "intermediate_size", path),
        vocab_size=_field(text, "vocab_size", path),
        max_position_embeddings=max_pos,
        tie_word_embeddings=_field(text, "tie_word_embeddings", path, kind=bool, default=family.tie_default),
        dtype=_dtype(raw, path),
        quantization=_quantization(raw, path),
        mla=mla,
        moe=_moe(text, family, layers, path),
        qkv_bias=bool(text.get("attention_bias", False)) or family.qkv_bias,
        qk_norm=family.qk_norm,
        supports_pp=family.supports_pp,
        mlp=family.mlp,
        extra_embedding_rows=extra_rows,
    )


def _read_json(path: Path, what: str) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CapacityError(
            f"{what} {path} does not exist; give the model directory or its config.json"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CapacityError(f"{what} {path} cannot be read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        stripped = text.strip()
        truncated = stripped.startswith(("{", "[")) and not stripped.endswith(("}", "]"))
        hint = " (the file looks truncated)" if truncated else ""
        raise CapacityError(
            f"{what} {path} is not valid JSON{hint}: {exc.msg} (line {exc.lineno}, column {exc.colno}). "
            "Download it again."
        ) from None


def safetensors_header_bytes(path: Path) -> int:
    """Tensor bytes in one ``.safetensors`` file, from its JSON header (8-byte little-endian length)."""
    with path.open("rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        if length <= 0 or length > 100 * 1024 * 1024:
            raise CapacityError(f"{path}: not a safetensors file (header length {length})")
        try:
            header = json.loads(fh.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CapacityError(f"{path}: the safetensors header is not valid JSON") from None
    return sum(
        end - start
        for key, t in header.items()
        if key != "__metadata__"
        for start, end in [t["data_offsets"]]
    )


def checkpoint_bytes(model_dir: Path) -> tuple[int | None, str | None]:
    """The checkpoint's weight bytes: ``metadata.total_size`` of ``model.safetensors.index.json``, or the
    tensor bytes of a single ``model.safetensors``; (None, None) when neither file is there."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        raw = _read_json(index, "safetensors index")
        total = raw.get("metadata", {}).get("total_size") if isinstance(raw, dict) else None
        if not isinstance(total, int) or total <= 0:
            raise CapacityError(
                f"{index}: field 'metadata.total_size' is {total!r}; expected a positive integer"
            )
        return total, str(index)
    single = model_dir / "model.safetensors"
    if single.is_file():
        return safetensors_header_bytes(single), str(single)
    return None, None


def load_model(path: Path | str) -> tuple[ModelArch, ModelSource]:
    """Read ``config.json`` (``path`` is the file or its directory) and the weight bytes beside it."""
    path = Path(path)
    config = path / "config.json" if path.is_dir() else path
    arch = parse_config(_read_json(config, "config.json"), config)
    total, origin = checkpoint_bytes(config.parent)
    return arch, ModelSource(config_path=str(config), checkpoint_bytes=total, checkpoint_bytes_from=origin)


def from_catalog(arch: Architecture, dtype: str, name: str | None = None) -> ModelArch:
    """The :class:`ModelArch` of a catalog entry's ``architecture`` served in ``dtype``, so the host
    planner's KV cache and weight figures come from the same arithmetic (kv, params) as the GPU planner's.

    The catalog keeps the fields it checks against config.json at import; the rest follow from its
    family (:data:`FAMILIES`: encoder or decoder, qkv bias, q/k norms, gated or plain MLP) and these
    rules, checked against the catalog models' own config.json in tests/test_capacity_modelconfig.py:
    ``intermediate_size`` is the llama ratio ``hidden_size * 8 // 3`` for a gated MLP and ``4 *
    hidden_size`` for a plain (BERT) one; the word embeddings are tied; an encoder has BERT's 512
    position rows and 2 token types. A decoder's ``max_position_embeddings`` is not in the catalog and
    neither the KV nor the weight figure uses it: it is left unbounded (2**20).
    """
    family = FAMILIES.get(arch.family)
    if family is None:
        raise CapacityError(
            f"catalog architecture family {arch.family!r} is unknown to the capacity planner (it knows: "
            f"{', '.join(sorted(FAMILIES))}); add it to FAMILIES in llmfleet/capacity/modelconfig.py"
        )
    if family.moe != "none" or family.mla:
        raise CapacityError(
            f"catalog architecture family {arch.family!r} is mixture-of-experts or MLA: the catalog's "
            "architecture fields do not describe it; plan it from its config.json (llmfleet capacity plan)"
        )
    h = arch.hidden_size
    encoder = family.kind == "encoder"
    max_pos = 512 if encoder else 2**20
    return ModelArch(
        name=name or arch.family,
        model_type=arch.family,
        architecture=arch.family,
        kind=family.kind,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.head_dim,
        head_dim_from="config",
        hidden_size=h,
        intermediate_size=4 * h if family.mlp == "plain" else h * 8 // 3,
        vocab_size=arch.vocab_size,
        max_position_embeddings=max_pos,
        tie_word_embeddings=True,
        dtype=dtype,
        quantization=Quantization(),
        qkv_bias=family.qkv_bias,
        qk_norm=family.qk_norm,
        supports_pp=family.supports_pp,
        mlp=family.mlp,
        extra_embedding_rows=max_pos + 2 if encoder else 0,
    )
