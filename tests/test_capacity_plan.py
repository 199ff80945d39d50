"""Candidates, ranking, refusals, placement (GPU sets, ports, CPUs, embedding replicas) and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmfleet.capacity.candidates import plan_capacity
from llmfleet.capacity.fit import enumerate_candidates, gpu_sets
from llmfleet.capacity.modelconfig import load_model
from llmfleet.capacity.options import EmbeddingOptions, PlanOptions, Reserve, resolve_gpu, resolve_serving
from llmfleet.capacity.placement import COLOCATION_MAX_UTILIZATION
from llmfleet.catalog.gpus import load_gpu_catalog
from llmfleet.cli import main
from llmfleet.errors import CapacityError, CatalogError

CONFIGS = Path(__file__).parent / "data" / "hf-configs"
LLAMA8B = CONFIGS / "meta-llama--Llama-3.1-8B-Instruct"
QWQ = CONFIGS / "Qwen--QwQ-32B"
MINILM = CONFIGS / "sentence-transformers--all-MiniLM-L6-v2"
GIB = 1024**3


@pytest.fixture(scope="module")
def gpu_catalog():
    return load_gpu_catalog()


def plan(config: Path, catalog, emb_config: Path | None = None, **options):
    arch, source = load_model(config)
    emb = load_model(emb_config) if emb_config else None
    return plan_capacity(arch, source, PlanOptions(**options), catalog, emb)


@pytest.mark.parametrize(
    ("n", "numa"), [(n, numa) for n in range(1, 9) for numa in (1, 2, 4) if n % numa == 0]
)
def test_gpu_sets_are_disjoint_and_floor_many(n, numa):
    for k in range(1, n + 1):
        sets = gpu_sets(n, k, numa)
        flat = [g for s in sets for g in s]
        assert len(flat) == len(set(flat))
        assert all(len(s) == k for s in sets)
        assert len(sets) == n // k
        assert set(flat) <= set(range(n))


def test_gpu_sets_stay_inside_numa_nodes_when_they_can():
    # 8 GPUs, 2 NUMA nodes of 4, 3 GPUs per instance: contiguous would put GPUs 3,4,5 across both nodes.
    assert gpu_sets(8, 3, 2) == [[0, 1, 2], [4, 5, 6]]


@pytest.mark.parametrize(
    ("config", "gpu", "n"),
    [
        ("meta-llama--Llama-3.1-70B-Instruct", "H100-80GB", 8),
        ("mistralai--Mixtral-8x7B-Instruct-v0.1", "A100-80GB", 8),
        ("deepseek-ai--DeepSeek-V2-Lite", "L40S-48GB", 4),
        ("Qwen--Qwen3-30B-A3B", "L4-24GB", 8),
        ("Qwen--Qwen2.5-7B-Instruct-AWQ", "T4-16GB", 4),
        ("google--gemma-7b-it", "A10-24GB", 2),
    ],
)
def test_candidate_invariants(gpu_catalog, config, gpu, n):
    p = plan(CONFIGS / config, gpu_catalog, gpu=gpu, gpus_per_node=n, max_model_len=4096, nodes=2)
    pairs = [(c.tp, c.pp) for c in p.candidates]
    assert len(pairs) == len(set(pairs)) == sum(n // tp for tp in range(1, n + 1))
    for c in p.candidates:
        assert c.tp * c.pp == c.gpus_per_instance <= n
        assert c.instances_per_node == n // (c.tp * c.pp)
        assert c.instances_total == 2 * c.instances_per_node
        assert c.fits == (c.reason is None)
        if c.fits:
            assert c.max_concurrent_requests >= 1
            assert c.kv_cache_tokens_per_instance % 16 == 0
            assert c.max_model_len_that_fits >= 4096
    fits = [c.fits for c in p.candidates]
    assert fits == sorted(fits, reverse=True)  # every fit ranks above every refusal
    chosen = p.candidates[p.chosen]
    for node in p.nodes:
        gpus = [g for inst in node.instances for g in inst.gpus]
        assert len(gpus) == len(set(gpus)) == chosen.gpus_per_instance * chosen.instances_per_node
        assert all(f"--tensor-parallel-size {chosen.tp}" in " ".join(i.vllm_args) for i in node.instances)


@pytest.mark.parametrize("command", [["capacity", "plan"], ["plan"]], ids=["capacity-plan", "plan-config"])
def test_json_has_the_issue_fields(gpu_catalog, capsys, command):
    # `llmfleet plan --config ...` is the form the issue names; it is the same command as capacity plan.
    code = main(
        [*command, "--config", str(LLAMA8B), "--gpu", "L4-24GB", "--gpus-per-node", "4",
         "--max-model-len", "8192", "--json"]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kv_cache_bytes_per_token"] == 131072
    assert doc["weight_bytes"] == 16060522496
    for c in doc["candidates"]:
        for key in (
            "tp", "pp", "gpus_per_instance", "instances_per_node", "fits", "kv_cache_bytes_per_token_per_gpu",
            "kv_cache_tokens_per_instance", "max_concurrent_requests", "reason",
        ):  # fmt: skip
            assert key in c
    refused = [c for c in doc["candidates"] if not c["fits"]]
    assert any("TP=3" in c["reason"] for c in refused)


def test_kv_dtype_fp8_halves_the_per_token_figure(gpu_catalog):
    auto = plan(LLAMA8B, gpu_catalog, gpu="H100-80GB", gpus_per_node=1, max_model_len=8192)
    fp8 = plan(
        LLAMA8B, gpu_catalog, gpu="H100-80GB", gpus_per_node=1, max_model_len=8192, kv_cache_dtype="fp8"
    )
    assert fp8.kv_cache_bytes_per_token * 2 == auto.kv_cache_bytes_per_token
    a, b = auto.candidates[auto.chosen], fp8.candidates[fp8.chosen]
    assert b.kv_cache_tokens_per_instance == pytest.approx(2 * a.kv_cache_tokens_per_instance, abs=32)


def test_certificate_numbers_add_up(gpu_catalog):
    p = plan(LLAMA8B, gpu_catalog, gpu="H100-80GB", gpus_per_node=1, max_model_len=8192)
    c = p.candidates[p.chosen]
    cert = c.certificate
    assert cert is not None
    assert cert.requested_bytes_per_gpu == -(-81559 * 1024**2 * 9 // 10)
    assert cert.kv_available_bytes_per_gpu[0] == (
        cert.requested_bytes_per_gpu - cert.weight_bytes_per_gpu[0] - cert.reserve_bytes_per_gpu
    )
    assert cert.kv_cache_blocks == cert.kv_available_bytes_per_gpu[0] // cert.kv_bytes_per_block[0]
    assert c.kv_cache_tokens_per_instance == 16 * cert.kv_cache_blocks
    assert c.max_concurrent_requests == (cert.kv_cache_blocks - 1) // cert.blocks_per_request


def test_refusal_names_cause_and_nearest_fit(gpu_catalog):
    with pytest.raises(CapacityError) as err:
        plan(LLAMA8B, gpu_catalog, gpu="L4-24GB", gpus_per_node=4, max_model_len=32768, tp=1, pp=1)
    msg = str(err.value)
    assert msg.startswith(
        "llama-3.1-8b-instruct does not fit on 1x L4-24GB at TP=1 PP=1: weights 15.0 GiB + "
    )
    assert "reserve 2.5 GiB leave 2.8 GiB per GPU for KV, fewer than one max-model-len request" in msg
    assert "Nearest fit: TP=1 PP=2 on 2x L4-24GB" in msg
    assert "--max-model-len 22528 at TP=1 PP=1" in msg
    # The suggested length really fits.
    ok = plan(LLAMA8B, gpu_catalog, gpu="L4-24GB", gpus_per_node=4, max_model_len=22528, tp=1, pp=1)
    assert ok.candidates[ok.chosen].fits


def test_refusal_when_nothing_fits_suggests_a_bigger_card(gpu_catalog):
    with pytest.raises(CapacityError) as err:
        plan(CONFIGS / "meta-llama--Llama-3.1-70B-Instruct", gpu_catalog, gpu="T4-16GB", gpus_per_node=2,
             max_model_len=8192)  # fmt: skip
    msg = str(err.value)
    assert "fits no TP x PP on 2x T4-16GB" in msg
    assert "exceed the" in msg
    assert "--gpu " in msg  # a bigger catalog card on which it fits


def test_forced_invalid_tp_is_refused_with_vllms_reason(gpu_catalog):
    with pytest.raises(CapacityError, match=r"at TP=3 PP=1: vLLM refuses: num_attention_heads \(40\)"):
        plan(QWQ, gpu_catalog, gpu="H100-80GB", gpus_per_node=8, max_model_len=8192, tp=3)


def test_max_model_len_beyond_the_model_is_refused(gpu_catalog):
    with pytest.raises(CapacityError, match=r"exceeds qwq-32b's max_position_embeddings \(40960\)"):
        plan(QWQ, gpu_catalog, gpu="H100-80GB", gpus_per_node=8, max_model_len=65536)


def test_gpu_memory_gib_for_a_card_not_in_the_catalog(gpu_catalog):
    p = plan(
        LLAMA8B, gpu_catalog, gpu="MI300X-192GB", gpu_memory_gib=192, gpus_per_node=8, max_model_len=8192
    )
    assert p.gpu.memory_bytes == 192 * GIB and not p.gpu.from_catalog
    with pytest.raises(CatalogError, match=r"unknown GPU 'MI300X-192GB'.*--gpu-memory-gib"):
        plan(LLAMA8B, gpu_catalog, gpu="MI300X-192GB", gpus_per_node=8, max_model_len=8192)


def test_gpu_memory_gib_overrides_a_catalog_card(gpu_catalog):
    small = plan(
        LLAMA8B, gpu_catalog, gpu="H100-80GB", gpu_memory_gib=40, gpus_per_node=1, max_model_len=8192
    )
    big = plan(LLAMA8B, gpu_catalog, gpu="H100-80GB", gpus_per_node=1, max_model_len=8192)
    assert small.gpu.memory_bytes == 40 * GIB
    assert small.candidates[0].kv_cache_tokens_per_instance < big.candidates[0].kv_cache_tokens_per_instance


def test_capability_checks(gpu_catalog):
    with pytest.raises(CapacityError, match=r"fp8 weights need compute capability 8.0.*T4-16GB is 7.5"):
        plan(QWQ, gpu_catalog, gpu="T4-16GB", gpus_per_node=8, max_model_len=4096, quantization="fp8")
    t4 = plan(LLAMA8B, gpu_catalog, gpu="T4-16GB", gpus_per_node=4, max_model_len=4096)
    assert t4.serving.dtype == "float16"  # no bf16 on Turing


def test_seed_002_qwq_fp8_on_eight_16gb_cards(gpu_catalog):
    """Seed 002: QwQ-32B, fp8 weights and fp8 KV cache, 8 x 16 GB cards. "Needs at least 80 GB, so at
    least six cards" holds only from max-model-len 183,296 on, beyond QwQ's 40,960."""
    opts = dict(
        gpu="RTX4070TiS-16GB", gpus_per_node=8, quantization="fp8", kv_cache_dtype="fp8", reserve=Reserve()
    )
    p = plan(QWQ, gpu_catalog, max_model_len=40960, **opts)
    fitting = {(c.tp, c.pp) for c in p.candidates if c.fits}
    assert fitting == {(1, 4), (2, 2), (4, 1), (1, 5), (1, 6), (1, 7), (1, 8), (2, 3), (2, 4), (4, 2), (8, 1)}
    refused = {(c.tp, c.pp): c.reason for c in p.candidates if not c.fits}
    for tp in (3, 6):
        assert refused[(tp, 1)].startswith(
            f"vLLM refuses: num_attention_heads (40) is not divisible by TP={tp}"
        )
    best = p.candidates[p.chosen]
    assert (best.gpus_per_instance, best.instances_per_node) == (4, 2)

    arch, _ = load_model(QWQ)
    gpu = resolve_gpu(gpu_catalog, "RTX4070TiS-16GB")

    def fewest_cards(max_len: int) -> int:
        o = PlanOptions(max_model_len=max_len, allow_long_max_model_len=True, **opts)
        cands = enumerate_candidates(arch, resolve_serving(arch, o, gpu), gpu, o)
        return min(c.gpus_per_instance for c in cands if c.fits)

    assert fewest_cards(40960) == 4
    assert fewest_cards(183296 - 1024) == 5  # TP=1 x PP=5: TP=5 itself is refused
    assert fewest_cards(183296) == 6


def test_embedding_replicas_on_the_memory_left_over(gpu_catalog):
    p = plan(
        LLAMA8B, gpu_catalog, MINILM, gpu="L4-24GB", gpus_per_node=4, max_model_len=8192, numa_nodes=2,
        cpus_per_node=16, embedding=EmbeddingOptions(replicas=2),
    )  # fmt: skip
    node = p.nodes[0]
    emb = [i for i in node.instances if i.task == "embedding"]
    llm = [i for i in node.instances if i.task == "chat"]
    assert len(emb) == 2 and llm
    assert all("--runner" in i.vllm_args and "pooling" in i.vllm_args for i in emb)
    ports = [i.port for i in node.instances]
    assert len(ports) == len(set(ports))
    cpus = [c for i in node.instances for c in i.cpus]
    assert len(cpus) == len(set(cpus)) and set(cpus) <= set(range(16))
    for inst in node.instances:
        per_numa = 8
        assert all(c // per_numa == inst.numa_node for c in inst.cpus), inst.name
    for gpu, used in node.gpu_memory_utilization_by_gpu.items():
        assert used <= COLOCATION_MAX_UTILIZATION, gpu
    assert p.embedding is not None and p.embedding.model.name == "all-minilm-l6-v2"


def test_embedding_that_does_not_fit_names_the_fix(gpu_catalog):
    with pytest.raises(CapacityError, match=r"embedding replica 1 of 3 .*Lower --gpu-memory-utilization to"):
        plan(
            LLAMA8B, gpu_catalog, MINILM, gpu="L4-24GB", gpus_per_node=1, max_model_len=8192,
            gpu_memory_utilization=0.95, embedding=EmbeddingOptions(replicas=3),
        )  # fmt: skip


def test_same_input_same_plan(gpu_catalog):
    a = plan(QWQ, gpu_catalog, gpu="L40S-48GB", gpus_per_node=8, max_model_len=16384, numa_nodes=2)
    b = plan(QWQ, gpu_catalog, gpu="L40S-48GB", gpus_per_node=8, max_model_len=16384, numa_nodes=2)
    assert a.model_dump_json() == b.model_dump_json()


def test_nvlink_prefers_tp_and_pcie_prefers_pp(gpu_catalog):
    pcie = plan(LLAMA8B, gpu_catalog, gpu="L4-24GB", gpus_per_node=2, max_model_len=32768)
    nvl = plan(LLAMA8B, gpu_catalog, gpu="A100-40GB", gpu_memory_gib=20, gpus_per_node=2, max_model_len=32768)
    assert (pcie.candidates[0].tp, pcie.candidates[0].pp) == (1, 2)
    assert (nvl.candidates[0].tp, nvl.candidates[0].pp) == (2, 1)


# CLI: exit codes and one readable line, never a traceback.


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--gpu", "B300-288GB"], 3, "unknown GPU 'B300-288GB'"),
        (["--gpu", "L4-24GB", "--max-model-len", "131072", "--tp", "1"], 9, "Nearest fit"),
        (["--gpu", "L4-24GB", "--gpu-memory-utilization", "1.5"], 9, "--gpu-memory-utilization"),
        (["--gpu", "L4-24GB", "--numa-nodes", "3"], 9, "multiple of numa_nodes"),
    ],
)
def test_cli_errors(capsys, extra, code, message):
    argv = ["capacity", "plan", "--config", str(LLAMA8B), "--gpus-per-node", "4", "--max-model-len", "8192"]
    assert main(argv + extra) == code
    err = capsys.readouterr().err
    assert err.startswith("llmfleet: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_cli_bad_config(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 32')
    code = main(["capacity", "plan", "--config", str(tmp_path), "--gpu", "L4-24GB", "--gpus-per-node", "1",
                 "--max-model-len", "4096"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 9 and "truncated" in err and "Traceback" not in err
