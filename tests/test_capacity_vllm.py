"""Cross-check the planner against vLLM's own functions, run from the vLLM venv in a subprocess.

For every fixture config: vLLM's head size, total KV heads, MLA detection, per-GPU KV heads
(``ModelConfig.get_num_kv_heads``) and KV page size (``FullAttentionSpec`` / ``MLAAttentionSpec``) at
TP 1..16 and both KV cache dtypes; ``get_pp_indices`` for PP splits; and ``get_kv_cache_capacity``
for the token figure vLLM logs. Skipped where the vLLM venv is not installed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from llmfleet.capacity import kv
from llmfleet.capacity.modelconfig import load_model
from llmfleet.capacity.params import pp_partition

VLLM_PYTHON = Path("/opt/llmfleet/vllm-venv/bin/python")
CONFIGS = Path(__file__).parent / "data" / "hf-configs"
TPS = [1, 2, 4, 8, 16]
PP_CASES = [(61, 4), (80, 3), (30, 7), (27, 2), (64, 5), (36, 8)]
# (num_blocks, max_model_len, kv_heads, head_size)
CAPACITY_CASES = [(2912, 2048, 3, 64), (1000, 4001, 8, 128), (31, 512, 1, 128), (123457, 131072, 8, 128)]

PROBE = r"""
import json, sys, types
import torch
from transformers import AutoConfig
from vllm.config.model import ModelConfig
from vllm.distributed.utils import get_pp_indices
from vllm.transformers_utils.model_arch_config_convertor import (
    MODEL_ARCH_CONFIG_CONVERTORS, ModelArchConfigConvertorBase)
from vllm.v1.core.kv_cache_utils import get_kv_cache_capacity
from vllm.v1.kv_cache_interface import FullAttentionSpec, MLAAttentionSpec

req = json.loads(sys.argv[1])
out = {}
for d in req["dirs"]:
    cfg = AutoConfig.from_pretrained(d)
    conv = MODEL_ARCH_CONFIG_CONVERTORS.get(cfg.model_type, ModelArchConfigConvertorBase)(
        cfg, cfg.get_text_config())
    mla = conv.is_deepseek_mla()
    head, total_kv = conv.get_head_size(), conv.get_total_num_kv_heads()
    fake = types.SimpleNamespace(
        use_mla=mla, model_arch_config=types.SimpleNamespace(total_num_kv_heads=total_kv))
    page = {}
    for tp in req["tps"]:
        heads = ModelConfig.get_num_kv_heads(fake, types.SimpleNamespace(tensor_parallel_size=tp))
        for kv_dtype, dtype in (("auto", torch.bfloat16), ("fp8", torch.float8_e4m3fn)):
            if mla:
                spec = MLAAttentionSpec(block_size=16, num_kv_heads=heads, head_size=head, dtype=dtype,
                                        cache_dtype_str=kv_dtype)
            else:
                spec = FullAttentionSpec(block_size=16, num_kv_heads=heads, head_size=head, dtype=dtype)
            page[f"{tp}/{kv_dtype}"] = [heads, spec.page_size_bytes]
    out[d] = {"head_size": head, "total_kv_heads": total_kv, "mla": mla, "page": page}
pp = {f"{n}/{s}": [list(get_pp_indices(n, r, s)) for r in range(s)] for n, s in req["pp"]}
cap = []
for blocks, max_len, heads, head in req["capacity"]:
    spec = FullAttentionSpec(block_size=16, num_kv_heads=heads, head_size=head, dtype=torch.bfloat16)
    vc = types.SimpleNamespace(
        model_config=types.SimpleNamespace(max_model_len=max_len),
        parallel_config=types.SimpleNamespace(decode_context_parallel_size=1))
    kc = types.SimpleNamespace(
        num_blocks=blocks, hisparse_host_num_blocks=None,
        kv_cache_groups=[types.SimpleNamespace(kv_cache_spec=spec, host_resident=False)])
    cap.append(list(get_kv_cache_capacity(vc, kc)))
print(json.dumps({"models": out, "pp": pp, "capacity": cap}))
"""

pytestmark = pytest.mark.skipif(not VLLM_PYTHON.exists(), reason=f"vLLM venv not installed ({VLLM_PYTHON})")

DIRS = sorted(str(p) for p in CONFIGS.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def vllm_says() -> dict:
    request = {"dirs": DIRS, "tps": TPS, "pp": PP_CASES, "capacity": CAPACITY_CASES}
    proc = subprocess.run(
        [str(VLLM_PYTHON), "-c", PROBE, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("config", DIRS, ids=[Path(d).name for d in DIRS])
def test_head_size_kv_heads_and_mla_match_vllm(vllm_says, config):
    a, _ = load_model(config)
    v = vllm_says["models"][config]
    assert a.uses_mla == v["mla"]
    if a.uses_mla:
        assert a.mla is not None
        # vLLM's "head size" for MLA is the latent width it caches.
        assert a.mla.kv_lora_rank + a.mla.qk_rope_head_dim == v["head_size"]
    else:
        assert (a.head_dim, a.num_key_value_heads) == (v["head_size"], v["total_kv_heads"])


@pytest.mark.parametrize("config", DIRS, ids=[Path(d).name for d in DIRS])
def test_per_gpu_kv_heads_and_page_bytes_match_vllm(vllm_says, config):
    a, _ = load_model(config)
    for key, (heads, page) in vllm_says["models"][config]["page"].items():
        tp, kv_dtype = key.split("/")
        assert kv.kv_heads_per_gpu(a, int(tp)) == heads, key
        if a.kind == "encoder":
            assert kv.kv_bytes_per_token_per_layer(a, 2, int(tp)) == 0  # vLLM makes no spec for it
            continue
        per_token = kv.kv_bytes_per_token_per_layer(a, kv.kv_dtype_bytes(kv_dtype, "bfloat16"), int(tp))
        assert kv.VLLM_BLOCK_SIZE * per_token == page, key


@pytest.mark.parametrize(("layers", "pp"), PP_CASES)
def test_pp_partition_matches_vllm(vllm_says, layers, pp):
    ranges = vllm_says["pp"][f"{layers}/{pp}"]
    assert pp_partition(layers, pp) == [end - start for start, end in ranges]


@pytest.mark.parametrize("case", range(len(CAPACITY_CASES)))
def test_logged_token_figure_matches_vllm(vllm_says, case):
    blocks, max_len, heads, head = CAPACITY_CASES[case]
    per_block = kv.VLLM_BLOCK_SIZE * 2 * heads * head * 2
    cap = kv.kv_capacity([blocks * per_block], [per_block], max_len)
    tokens, concurrency = vllm_says["capacity"][case]
    assert cap.blocks == blocks
    assert cap.vllm_logged_tokens == tokens
    assert cap.blocks / kv.blocks_per_request(max_len) == pytest.approx(concurrency, rel=1e-12)
