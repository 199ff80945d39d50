"""Golden outputs through the weights code: recorded at import, backfilled for old revisions, kept out
of the manifest, staged beside the weights, carried by publish; filesystem and S3 stores.

The reference implementation stands in (``llmfleet.weights.golden.record`` is replaced by a function that
returns a fixed output and records what it was asked); it runs for real in tests/test_golden_record.py
and in the end-to-end deploy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmfleet.errors import WeightsError
from llmfleet.weights import golden as g
from llmfleet.weights import import_model, publish, read_manifest, stage, verify, write_manifest
from llmfleet.weights.fs_store import FsStore
from llmfleet.weights.manifest import GOLDEN, local_files
from test_weights_import import pinned_snapshot

REFERENCE = {
    "implementation": "transformers",
    "transformers": "5",
    "torch": "2",
    "device": "cpu",
    "dtype": "f32",
}
OUTPUT = {"kind": "embedding", "input": "a fox", "input_token_ids": [1], "pooling": "mean", "normalize": True,
          "embedding": [0.6, 0.8], "reference": REFERENCE}  # fmt: skip


class FakeReference:
    """Stands in for golden.record: returns OUTPUT, or nothing with a reason, and counts its calls."""

    def __init__(self, unavailable: str | None = None) -> None:
        self.unavailable = unavailable
        self.calls: list[tuple[Path, list[str]]] = []

    def __call__(self, model_dir, model, revision, manifest, task, dtype, python, **_):  # type: ignore[no-untyped-def]
        # The reference must see the complete model: every file there while it runs.
        self.calls.append((Path(model_dir), local_files(Path(model_dir))))
        if self.unavailable:
            return None, self.unavailable
        digest = g.weights_digest(manifest) if manifest is not None else ""
        return g.Golden(
            model=model, revision=revision, weights_sha256=digest, recorded_at="t", output=OUTPUT
        ), "ok"


@pytest.fixture
def snapshot(tmp_path, catalog):
    return pinned_snapshot(tmp_path, catalog)


@pytest.fixture
def reference(monkeypatch):
    fake = FakeReference()
    monkeypatch.setattr(g, "record", fake)
    return fake


def test_import_records_the_golden_output_beside_the_revision_not_in_its_manifest(
    tmp_path, snapshot, reference
):
    entry, pip, _ = snapshot
    outcome = import_model("emb", entry, tmp_path / "store", converter_python="py", pip_python=pip)
    assert outcome.changed and "golden output recorded: a 2-dimensional embedding" in outcome.detail
    revision = Path(outcome.path)
    (_, seen_files) = reference.calls[0]
    assert seen_files == ["config.json", "model.safetensors"], "the reference ran on the whole scratch copy"
    manifest = read_manifest(revision)
    assert GOLDEN not in manifest["files"]
    golden = g.load(revision / GOLDEN)
    assert golden.weights_sha256 == g.weights_digest(manifest), "bound to the published weights"
    assert verify(revision) == []
    again = import_model("emb", entry, tmp_path / "store", converter_python="py", pip_python=pip)
    assert not again.changed and len(reference.calls) == 1


def test_a_revision_imported_before_golden_outputs_gets_one_recorded_in_place(tmp_path, snapshot, reference):
    entry, pip, _ = snapshot
    store = tmp_path / "store"
    old = import_model("emb", entry, store, converter_python="py", pip_python=pip, golden=False)
    assert old.changed and "no golden output recorded (not asked to)" in old.detail
    assert not (Path(old.path) / GOLDEN).exists() and not reference.calls
    manifest_before = (Path(old.path) / "manifest.json").read_bytes()
    backfill = import_model("emb", entry, store, converter_python="py", pip_python=pip)
    assert backfill.changed and "already in the store; golden output recorded" in backfill.detail
    assert reference.calls[0][0] == Path(old.path), "a filesystem store is read in place"
    assert (Path(old.path) / "manifest.json").read_bytes() == manifest_before, "the revision is unchanged"
    assert g.load(Path(old.path) / GOLDEN).weights_sha256 == g.weights_digest(json.loads(manifest_before))
    assert not import_model("emb", entry, store, converter_python="py", pip_python=pip).changed


def test_where_the_reference_cannot_run_nothing_is_recorded_and_the_outcome_says_why(
    tmp_path, snapshot, monkeypatch
):
    entry, pip, _ = snapshot
    monkeypatch.setattr(g, "record", FakeReference(unavailable="no torch here"))
    outcome = import_model("emb", entry, tmp_path / "store", converter_python="py", pip_python=pip)
    assert outcome.changed and "no golden output recorded (no torch here)" in outcome.detail
    assert not (Path(outcome.path) / GOLDEN).exists()
    later = import_model("emb", entry, tmp_path / "store", converter_python="py", pip_python=pip)
    assert not later.changed and "no torch here" in later.detail


def test_weights_over_the_limit_get_no_golden_output(tmp_path, snapshot, reference):
    entry, pip, _ = snapshot
    outcome = import_model("emb", entry, tmp_path / "store", converter_python="py", pip_python=pip,
                           golden_max_bytes=100)  # fmt: skip
    assert "over the 0.0 GiB the CPU reference is run on" in outcome.detail and not reference.calls


def make_store(tmp_path: Path, golden: bool = True) -> tuple[FsStore, dict]:
    directory = tmp_path / "store" / "m" / "r1"
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    (directory / "w.bin").write_bytes(b"w" * 1000)
    manifest = write_manifest(directory, "m", "r1", {"kind": "test"})
    store = FsStore(tmp_path / "store")
    if golden:
        unbound = g.Golden(model="m", revision="r1", weights_sha256="", recorded_at="t", output=OUTPUT)
        store.write_sidecar("m", "r1", GOLDEN, g.to_bytes(g.bind(unbound, manifest)))
    return store, manifest


def test_stage_puts_golden_json_beside_the_staged_weights(tmp_path):
    store, _ = make_store(tmp_path)
    target = tmp_path / "serving" / "m" / "r1"
    first = stage(store, "m", "r1", target)
    assert first.changed and "golden output staged" in first.detail
    assert (target / GOLDEN).read_bytes() == store.read_sidecar("m", "r1", GOLDEN)
    assert verify(target) == [], "golden.json is not a manifest file, and the weights verify"
    assert not stage(store, "m", "r1", target).changed


def test_a_golden_output_recorded_after_staging_is_staged_on_the_fast_path(tmp_path):
    store, manifest = make_store(tmp_path, golden=False)
    target = tmp_path / "serving" / "m" / "r1"
    stage(store, "m", "r1", target)
    assert not (target / GOLDEN).exists()
    golden = g.Golden(model="m", revision="r1", weights_sha256=g.weights_digest(manifest), recorded_at="t",
                      output=OUTPUT)  # fmt: skip
    store.write_sidecar("m", "r1", GOLDEN, g.to_bytes(golden))
    later = stage(store, "m", "r1", target)
    assert later.changed and later.detail.endswith("golden output staged")
    assert g.load(target / GOLDEN) == golden


def test_a_golden_output_of_other_weights_is_not_staged(tmp_path):
    store, _ = make_store(tmp_path, golden=False)
    other = g.Golden(model="m", revision="r1", weights_sha256="0" * 64, recorded_at="t", output=OUTPUT)
    store.write_sidecar("m", "r1", GOLDEN, g.to_bytes(other))
    outcome = stage(store, "m", "r1", tmp_path / "serving" / "m" / "r1")
    assert "golden output not staged" in outcome.detail and "other weights" in outcome.detail
    assert not (tmp_path / "serving" / "m" / "r1" / GOLDEN).exists()


def test_publishing_a_staged_copy_carries_its_golden_output(tmp_path):
    store, _ = make_store(tmp_path)
    staged = tmp_path / "serving" / "m" / "r1"
    stage(store, "m", "r1", staged)
    other = FsStore(tmp_path / "other")
    outcome = publish(other, "m", "r1", staged)
    assert outcome.changed and "golden output copied" in outcome.detail
    assert GOLDEN not in read_manifest(Path(outcome.path))["files"]
    assert other.read_sidecar("m", "r1", GOLDEN) == store.read_sidecar("m", "r1", GOLDEN)
    assert not publish(other, "m", "r1", staged).changed


def test_sidecars_are_only_the_known_names_and_only_beside_a_complete_revision(tmp_path):
    store, _ = make_store(tmp_path, golden=False)
    with pytest.raises(WeightsError, match="not a sidecar"):
        store.write_sidecar("m", "r1", "config.json", b"{}")
    with pytest.raises(WeightsError, match="not a complete revision"):
        store.write_sidecar("m", "r2", GOLDEN, b"{}")
    assert store.read_sidecar("m", "r1", GOLDEN) is None
