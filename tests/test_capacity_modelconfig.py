"""Reading config.json: each architecture family, explicit head_dim, MLA, MoE, quantization, bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from llmfleet.capacity import kv
from llmfleet.capacity.modelconfig import from_catalog, load_model, parse_config, safetensors_header_bytes
from llmfleet.capacity.params import checkpoint_weight_bytes, model_weight_bytes, parameter_count
from llmfleet.catalog.models import DTYPE_BYTES
from llmfleet.errors import CapacityError

CONFIGS = Path(__file__).parent / "data" / "hf-configs"
SMOLLM2_STORE = Path("/var/lib/llmfleet/store/smollm2-135m-instruct/b179c9523d0e")
MINILM_STORE = Path("/var/lib/llmfleet/store/all-minilm-l6-v2/b9a0018dff09")


def arch(name: str):
    return load_model(CONFIGS / name)[0]


def raw(name: str) -> dict:
    return json.loads((CONFIGS / name / "config.json").read_text())


def test_every_fixture_loads():
    names = sorted(p.name for p in CONFIGS.iterdir() if p.is_dir())
    assert len(names) >= 15
    for name in names:
        a, _ = load_model(CONFIGS / name)
        assert a.num_hidden_layers > 0, name


@pytest.mark.parametrize(
    ("name", "head_dim", "origin"),
    [
        # Qwen3-30B-A3B: hidden 2048 / 32 heads = 64, but head_dim is 128.
        ("Qwen--Qwen3-30B-A3B", 128, "config"),
        # Gemma-7B: 3072 / 16 = 192, but head_dim is 256.
        ("google--gemma-7b-it", 256, "config"),
        ("microsoft--Phi-3-mini-4k-instruct", 96, "hidden_size // num_attention_heads"),
        ("meta-llama--Llama-3.1-8B-Instruct", 128, "hidden_size // num_attention_heads"),
    ],
)
def test_head_dim_explicit_or_derived(name, head_dim, origin):
    a = arch(name)
    assert (a.head_dim, a.head_dim_from) == (head_dim, origin)


def test_gqa_kv_heads_come_from_the_config():
    a = arch("meta-llama--Llama-3.1-70B-Instruct")
    assert (a.num_attention_heads, a.num_key_value_heads) == (64, 8)


def test_missing_kv_heads_means_multi_head_attention(tmp_path):
    cfg = raw("lmsys--vicuna-13b-v1.5-16k")
    del cfg["num_key_value_heads"]
    a = parse_config(cfg, tmp_path / "config.json")
    assert a.num_key_value_heads == a.num_attention_heads == 40


def test_mla_fields():
    a = arch("deepseek-ai--DeepSeek-V3")
    assert a.uses_mla
    assert a.mla is not None
    assert (a.mla.kv_lora_rank, a.mla.qk_rope_head_dim, a.mla.q_lora_rank) == (512, 64, 1536)
    assert not arch("meta-llama--Llama-3.1-8B-Instruct").uses_mla


def test_moe_layers_follow_the_family_rules():
    v3 = arch("deepseek-ai--DeepSeek-V3").moe
    assert v3 is not None and v3.moe_layers[0] == 3 and len(v3.moe_layers) == 58  # first_k_dense_replace 3
    lite = arch("deepseek-ai--DeepSeek-V2-Lite").moe
    assert lite is not None and len(lite.moe_layers) == 26 and lite.shared_intermediate_size == 2 * 1408
    mixtral = arch("mistralai--Mixtral-8x7B-Instruct-v0.1").moe
    assert mixtral is not None and (mixtral.num_experts, len(mixtral.moe_layers)) == (8, 32)
    qwen = arch("Qwen--Qwen1.5-MoE-A2.7B").moe
    assert qwen is not None and qwen.shared_expert_gate and qwen.num_experts == 60


def test_qwen_moe_sparse_step_and_dense_layers(tmp_path):
    cfg = raw("Qwen--Qwen3-30B-A3B")
    cfg["decoder_sparse_step"] = 2
    cfg["mlp_only_layers"] = [1]
    moe = parse_config(cfg, tmp_path / "config.json").moe
    assert moe is not None
    assert moe.moe_layers[:3] == [3, 5, 7]  # (i + 1) % 2 == 0, and layer 1 is dense


@pytest.mark.parametrize(
    ("name", "method", "bits", "group", "block"),
    [
        ("deepseek-ai--DeepSeek-V3", "fp8", 8, None, [128, 128]),
        ("Qwen--Qwen3-8B-FP8", "fp8", 8, None, [128, 128]),
        ("Qwen--Qwen2.5-7B-Instruct-AWQ", "awq", 4, 128, None),
        ("Qwen--Qwen2.5-72B-Instruct-GPTQ-Int4", "gptq", 4, 128, None),
        ("Qwen--Qwen2.5-7B-Instruct", "none", 16, None, None),
    ],
)
def test_quantization(name, method, bits, group, block):
    q = arch(name).quantization
    assert (q.method, q.bits, q.group_size, q.weight_block_size) == (method, bits, group, block)


def test_dtype_from_torch_dtype_or_dtype():
    assert arch("lmsys--vicuna-13b-v1.5-16k").dtype == "float16"
    assert arch("HuggingFaceTB--SmolLM2-135M-Instruct").dtype == "bfloat16"  # transformers 5 writes "dtype"
    assert arch("sentence-transformers--all-MiniLM-L6-v2").dtype == "float32"  # none given


@pytest.mark.parametrize(
    ("name", "params_b"),
    [
        # Published parameter counts (model cards / safetensors metadata), to 0.1%.
        ("meta-llama--Llama-3.1-8B-Instruct", 8.030),
        ("meta-llama--Llama-3.1-70B-Instruct", 70.554),
        ("Qwen--Qwen2.5-7B-Instruct", 7.616),
        ("Qwen--Qwen2.5-72B", 72.706),
        ("Qwen--QwQ-32B", 32.764),
        ("mistralai--Mistral-7B-Instruct-v0.3", 7.248),
        ("mistralai--Mixtral-8x7B-Instruct-v0.1", 46.703),
        ("Qwen--Qwen1.5-MoE-A2.7B", 14.316),
        ("Qwen--Qwen3-30B-A3B", 30.532),
        ("deepseek-ai--DeepSeek-V2-Lite", 15.706),
        ("deepseek-ai--DeepSeek-V3", 671.026),
        ("google--gemma-7b-it", 8.538),
        ("microsoft--Phi-3-mini-4k-instruct", 3.821),
    ],
)
def test_parameter_counts(name, params_b):
    assert parameter_count(arch(name)) / 1e9 == pytest.approx(params_b, rel=1e-3)


@pytest.mark.parametrize(
    "name", ["meta-llama--Llama-3.1-8B-Instruct", "mistralai--Mixtral-8x7B-Instruct-v0.1"]
)
def test_computed_weights_equal_the_safetensors_index(name):
    a, source = load_model(CONFIGS / name)
    assert source.checkpoint_bytes is not None
    assert source.checkpoint_bytes_from is not None and source.checkpoint_bytes_from.endswith("index.json")
    assert checkpoint_weight_bytes(a) == source.checkpoint_bytes


@pytest.mark.skipif(
    not SMOLLM2_STORE.is_dir(), reason="the local model store (make deploy) is not on this host"
)
def test_computed_weights_equal_the_real_smollm2_safetensors():
    a, source = load_model(SMOLLM2_STORE)
    assert source.checkpoint_bytes == checkpoint_weight_bytes(a) == 269_030_016


@pytest.mark.skipif(
    not MINILM_STORE.is_dir(), reason="the local model store (make deploy) is not on this host"
)
def test_computed_weights_match_the_real_minilm_safetensors():
    a, source = load_model(MINILM_STORE)
    # The file also holds BERT's position_ids buffer (512 x int64), which is not a weight.
    assert source.checkpoint_bytes == checkpoint_weight_bytes(a) + 512 * 8


def test_safetensors_header_reader(tmp_path):
    header = json.dumps(
        {"a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}, "__metadata__": {"format": "pt"}}
    ).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    assert safetensors_header_bytes(path) == 12
    (tmp_path / "config.json").write_text((CONFIGS / "Qwen--Qwen2.5-7B-Instruct" / "config.json").read_text())
    assert load_model(tmp_path)[1].checkpoint_bytes == 12


# Bad input: one readable CapacityError naming the field or the cause.


def test_truncated_config_is_named(tmp_path):
    text = (CONFIGS / "meta-llama--Llama-3.1-8B-Instruct" / "config.json").read_text()
    (tmp_path / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(CapacityError, match=r"not valid JSON \(the file looks truncated\).*line \d+"):
        load_model(tmp_path)


def test_malformed_config_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama",, }')
    with pytest.raises(CapacityError, match=r"config.json .* is not valid JSON: .*\(line 1, column \d+\)"):
        load_model(tmp_path)


def test_missing_config_file(tmp_path):
    with pytest.raises(CapacityError, match=r"does not exist"):
        load_model(tmp_path)


def test_unknown_architecture_lists_the_known_ones(tmp_path):
    cfg = raw("meta-llama--Llama-3.1-8B-Instruct") | {"model_type": "mamba2"}
    with pytest.raises(CapacityError, match=r"unknown architecture model_type='mamba2'.*deepseek_v3.*llama"):
        parse_config(cfg, tmp_path / "config.json")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_hidden_layers", None, r"field 'num_hidden_layers' is missing"),
        ("num_attention_heads", 0, r"field 'num_attention_heads' is 0; it must be a positive integer"),
        ("hidden_size", "4096", r"field 'hidden_size' is '4096'"),
        ("num_key_value_heads", 5, r"num_key_value_heads 5 must divide num_attention_heads 32"),
        ("tie_word_embeddings", "no", r"field 'tie_word_embeddings' is 'no'; it must be true or false"),
        ("torch_dtype", "int8", r"field 'torch_dtype' is 'int8'"),
        ("max_position_embeddings", -1, r"max_position_embeddings"),
    ],
)
def test_bad_fields_are_named(tmp_path, field, value, message):
    cfg = raw("meta-llama--Llama-3.1-8B-Instruct")
    if value is None:
        del cfg[field]
    else:
        cfg[field] = value
    with pytest.raises(CapacityError, match=message):
        parse_config(cfg, tmp_path / "config.json")


def test_unsupported_quantization_is_named(tmp_path):
    cfg = raw("Qwen--Qwen2.5-7B-Instruct") | {"quantization_config": {"quant_method": "bitsandbytes"}}
    with pytest.raises(CapacityError, match=r"quant_method is 'bitsandbytes'"):
        parse_config(cfg, tmp_path / "config.json")


def test_config_must_be_an_object(tmp_path):
    with pytest.raises(CapacityError, match=r"must be a JSON object, not list"):
        parse_config([], tmp_path / "config.json")


def test_the_default_name_comes_from_the_model_not_from_whatever_folder_holds_the_file(tmp_path):
    from llmfleet.capacity.modelconfig import default_name

    assert default_name(tmp_path / "Qwen--Qwen3-8B" / "config.json") == "qwen3-8b"
    snapshot = tmp_path / "models--meta-llama--Llama-3.1-8B" / "snapshots" / "0e9e39f2" / "config.json"
    assert default_name(snapshot) == "llama-3.1-8b"
    assert default_name(tmp_path / "configs" / "Mixtral-8x7B.json") == "mixtral-8x7b"


@pytest.mark.parametrize(
    ("model", "config"),
    [
        ("smollm2-135m-instruct", "HuggingFaceTB--SmolLM2-135M-Instruct"),
        ("all-minilm-l6-v2", "sentence-transformers--all-MiniLM-L6-v2"),
    ],
)
def test_a_catalog_architecture_gives_the_figures_of_its_config_json(catalog, model, config):
    # The host planner builds its ModelArch from the catalog (from_catalog); for every catalog model the
    # KV bytes per token and the weight bytes must be those of the model's own config.json.
    entry = catalog.get(model)
    dtype = entry.serving.dtype
    mine = from_catalog(entry.architecture, dtype, model)
    real, _ = load_model(CONFIGS / config)
    real = real.model_copy(update={"dtype": dtype})
    b = DTYPE_BYTES[dtype]
    assert kv.kv_bytes_per_token(mine, b) == kv.kv_bytes_per_token(real, b)
    assert model_weight_bytes(mine, mine.quantization, dtype) == model_weight_bytes(
        real, real.quantization, dtype
    )
    assert mine.kind == real.kind and mine.intermediate_size == real.intermediate_size


def test_a_catalog_family_the_planner_does_not_know_is_refused_by_name(catalog):
    arch = catalog.get("smollm2-135m-instruct").architecture.model_copy(update={"family": "mamba"})
    with pytest.raises(CapacityError, match="family 'mamba' is unknown"):
        from_catalog(arch, "bfloat16")
