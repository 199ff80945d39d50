from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.errors import WeightsError
from llmfleet.weights import manifest as weights
from llmfleet.weights.importer import check_architecture
from llmfleet.weights.manifest import read_manifest, write_manifest
from llmfleet.weights.staged import verify


@pytest.fixture
def store_copy(tmp_path: Path) -> Path:
    src = tmp_path / "store" / "m" / "rev1"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"a": 1}')
    (src / "model.safetensors").write_bytes(b"\x00\x01" * 5000)
    (src / "sub" / "tokenizer.json").write_text("{}")
    write_manifest(src, "m", "rev1", {"kind": "test"})
    return src


def test_manifest_lists_every_file_with_hash_and_size(store_copy):
    manifest = read_manifest(store_copy)
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "sub/tokenizer.json"}
    assert manifest["files"]["model.safetensors"]["size"] == 10000
    assert not list(store_copy.glob(".*tmp"))


def test_verify_names_the_file_and_both_hashes(store_copy):
    (store_copy / "config.json").write_text('{"a": 2}')
    (problem,) = verify(store_copy)
    assert "config.json" in problem
    assert read_manifest(store_copy)["files"]["config.json"]["sha256"] in problem
    assert weights.sha256_file(store_copy / "config.json") in problem


def test_verify_reports_a_missing_file(store_copy):
    (store_copy / "sub" / "tokenizer.json").unlink()
    assert verify(store_copy) == [f"{store_copy / 'sub' / 'tokenizer.json'}: missing"]


def test_architecture_mismatch_names_the_fields(catalog):
    arch = catalog.get("smollm2-135m-instruct").architecture
    config = {
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 9,
        "hidden_size": 576,
        "vocab_size": 49152,
        "head_dim": 64,
    }
    with pytest.raises(WeightsError, match=r"num_key_value_heads: catalog 3, config\.json 9"):
        check_architecture(config, arch)
    config["num_key_value_heads"] = 3
    check_architecture(config, arch)


def test_config_without_kv_heads_means_one_kv_head_per_attention_head(catalog):
    arch = catalog.get("all-minilm-l6-v2").architecture
    bert = {"num_hidden_layers": 6, "num_attention_heads": 12, "hidden_size": 384, "vocab_size": 30522}
    check_architecture(bert, arch)
