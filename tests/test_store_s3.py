"""The S3 store and S3 imports against a real local S3 API: moto's server on 127.0.0.1, ephemeral port.

Credentials are fake and set in the environment; the AWS config files are pointed at nothing, so no
test can reach a real account.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path

import pytest

from llmfleet.catalog.models import S3Source
from llmfleet.cli import main
from llmfleet.errors import StoreLockedError, WeightsError
from llmfleet.weights import import_model, publish, read_manifest, stage, verify, write_manifest
from llmfleet.weights.fs_store import FsStore
from llmfleet.weights.locks import LockInfo
from llmfleet.weights.publishing import publish_dir
from llmfleet.weights.s3_store import S3Store, s3_client

MINILM_CONFIG = {"num_hidden_layers": 6, "num_attention_heads": 12, "hidden_size": 384, "vocab_size": 30522}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch, tmp_path):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    client = s3_client()
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


def snapshot(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(MINILM_CONFIG))
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 3000)
    (path / "sub" / "tokenizer.json").write_text("{}")
    return path


def keys(client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_publish_uploads_every_file_then_the_manifest(s3, tmp_path):
    client, bucket = s3
    store = S3Store(bucket, "fleet")
    seen = {}

    def before_commit() -> None:
        seen["keys"] = keys(client, bucket)

    changed, where, manifest = publish_dir(
        store, "m", "r1", snapshot(tmp_path / "snap"), {"kind": "t"}, before_commit=before_commit
    )
    assert changed and where == f"s3://{bucket}/fleet/m/r1"
    # Right before the manifest: all files (and the writer's lock) are there, the manifest is not.
    files = ["fleet/m/r1/config.json", "fleet/m/r1/model.safetensors", "fleet/m/r1/sub/tokenizer.json"]
    assert seen["keys"] == ["fleet/m/.lock", *files]
    assert keys(client, bucket) == sorted([*files, "fleet/m/r1/manifest.json"])
    assert store.manifest("m", "r1") == manifest
    data = (tmp_path / "snap" / "model.safetensors").read_bytes()
    assert manifest["files"]["model.safetensors"] == {"sha256": sha(data), "size": len(data)}
    assert not publish(store, "m", "r1", tmp_path / "snap").changed


def test_a_mismatch_while_uploading_publishes_nothing(s3, tmp_path):
    client, bucket = s3
    src = snapshot(tmp_path / "snap")
    write_manifest(src, "m", "r1", {"kind": "t"})
    pinned = read_manifest(src)["files"]["config.json"]["sha256"]
    (src / "config.json").write_text("{}")
    with pytest.raises(WeightsError) as err:
        publish(S3Store(bucket, "fleet"), "m", "r1", src)
    assert "config.json" in str(err.value) and pinned in str(err.value) and sha(b"{}") in str(err.value)
    assert keys(client, bucket) == []  # uploaded objects removed, lock released


def test_stage_from_s3_in_parallel_chunks(s3, tmp_path):
    _, bucket = s3
    store = S3Store(bucket, "fleet")
    publish(store, "m", "r1", snapshot(tmp_path / "snap"))
    target = tmp_path / "serving" / "m" / "r1"
    outcome = stage(store, "m", "r1", target, workers=4, chunk=64 * 1024)
    assert outcome.changed and verify(target) == []
    assert (target / "model.safetensors").read_bytes() == (
        tmp_path / "snap" / "model.safetensors"
    ).read_bytes()
    assert not stage(store, "m", "r1", target).changed


def test_a_golden_output_beside_an_s3_revision_is_staged_with_it(s3, tmp_path):
    from llmfleet.weights import golden as g
    from llmfleet.weights.manifest import GOLDEN

    client, bucket = s3
    store = S3Store(bucket, "fleet")
    with pytest.raises(WeightsError, match="not a complete revision"):
        store.write_sidecar("m", "r1", GOLDEN, b"{}")
    publish(store, "m", "r1", snapshot(tmp_path / "snap"))
    assert store.read_sidecar("m", "r1", GOLDEN) is None
    output = {"kind": "embedding", "input": "x", "input_token_ids": [1], "pooling": "mean", "normalize": True,
              "embedding": [1.0], "reference": {"implementation": "t", "transformers": "5", "torch": "2",
                                                "device": "cpu", "dtype": "float32"}}  # fmt: skip
    unbound = g.Golden(model="m", revision="r1", weights_sha256="", recorded_at="t", output=output)
    data = g.to_bytes(g.bind(unbound, store.manifest("m", "r1")))
    store.write_sidecar("m", "r1", GOLDEN, data)
    assert "fleet/m/r1/golden.json" in keys(client, bucket)
    assert GOLDEN not in store.manifest("m", "r1")["files"], "not part of the immutable revision"
    target = tmp_path / "serving" / "m" / "r1"
    outcome = stage(store, "m", "r1", target, workers=2)
    assert outcome.changed and "golden output staged" in outcome.detail
    assert (target / GOLDEN).read_bytes() == data and verify(target) == []


def test_stage_from_s3_stops_on_a_damaged_object(s3, tmp_path):
    client, bucket = s3
    store = S3Store(bucket, "fleet")
    publish(store, "m", "r1", snapshot(tmp_path / "snap"))
    client.put_object(Bucket=bucket, Key="fleet/m/r1/sub/tokenizer.json", Body=b"[]")
    with pytest.raises(WeightsError) as err:
        stage(store, "m", "r1", tmp_path / "serving" / "m" / "r1")
    message = str(err.value)
    assert f"s3://{bucket}/fleet/m/r1/sub/tokenizer.json" in message
    assert f"manifest sha256 {sha(b'{}')}" in message and f"read sha256 {sha(b'[]')}" in message
    assert not (tmp_path / "serving" / "m" / "r1").exists()


def test_the_s3_lock_is_a_conditional_put_and_names_its_holder(s3):
    client, bucket = s3
    store = S3Store(bucket, "fleet")
    first = store.lock("m", owner="first")
    first.acquire(0)
    try:
        with pytest.raises(
            StoreLockedError, match=r"s3://.*/fleet/m/\.lock is locked by another writer: first"
        ):
            store.lock("m", owner="second").acquire(0)
    finally:
        first.release()
    assert keys(client, bucket) == []


def test_a_crashed_writers_s3_lock_is_broken_after_its_lease(s3, tmp_path):
    client, bucket = s3
    stale = LockInfo("t0", "crashed", "node-b", 4242, time.time() - 1)
    client.put_object(Bucket=bucket, Key="fleet/m/.lock", Body=stale.to_bytes())
    assert publish(S3Store(bucket, "fleet"), "m", "r1", snapshot(tmp_path / "snap")).changed
    live = LockInfo("t1", "busy", "node-b", 4242, time.time() + 3600)
    client.put_object(Bucket=bucket, Key="fleet/m/.lock", Body=live.to_bytes())
    with pytest.raises(StoreLockedError, match="busy"):
        publish(S3Store(bucket, "fleet"), "m", "r2", tmp_path / "snap")


def test_a_writer_whose_lock_was_broken_cannot_publish(s3, tmp_path, monkeypatch):
    client, bucket = s3
    store = S3Store(bucket, "fleet")
    slow = store.lock("m", owner="slow")
    slow.acquire(0)
    # Another writer judges the lock stale (say the slow one stalled past its lease) and takes it over.
    monkeypatch.setattr(LockInfo, "stale", lambda self: True)
    fast = store.lock("m", owner="fast")
    fast.acquire(0)
    with pytest.raises(WeightsError, match="lost the lock"):
        slow.check()
    fast.release()
    slow.release()  # does not delete a lock that is not its own
    assert keys(client, bucket) == []


def s3_source(client, bucket: str, files: dict[str, bytes]) -> S3Source:
    for rel, data in files.items():
        client.put_object(Bucket=bucket, Key=f"upstream/emb/v1/{rel}", Body=data)
    return S3Source(
        kind="s3", uri=f"s3://{bucket}/upstream/emb/v1/", files={k: sha(v) for k, v in files.items()}
    )


def test_import_from_an_s3_prefix_checks_every_pin(s3, tmp_path, catalog):
    client, bucket = s3
    files = {"config.json": json.dumps(MINILM_CONFIG).encode(), "model.safetensors": b"\x05" * 300_000}
    source = s3_source(client, bucket, files)
    client.put_object(Bucket=bucket, Key="upstream/emb/v1/unpinned.txt", Body=b"not pinned")
    entry = catalog.get("all-minilm-l6-v2").model_copy(update={"source": source})
    outcome = import_model("emb", entry, tmp_path / "store", "unused", "unused", workers=3)
    assert outcome.changed
    published = Path(outcome.path)
    assert sorted(read_manifest(published)["files"]) == ["config.json", "model.safetensors"]
    assert read_manifest(published)["source"]["uri"] == source.uri
    assert verify(published) == []
    assert not import_model("emb", entry, tmp_path / "store", "unused", "unused").changed


def test_import_from_s3_into_an_s3_store(s3, tmp_path, catalog):
    client, bucket = s3
    files = {"config.json": json.dumps(MINILM_CONFIG).encode(), "model.safetensors": b"\x06" * 1000}
    entry = catalog.get("all-minilm-l6-v2").model_copy(update={"source": s3_source(client, bucket, files)})
    outcome = import_model("emb", entry, f"s3://{bucket}/store", "unused", "unused")
    assert outcome.changed and outcome.path.startswith(f"s3://{bucket}/store/emb/")
    revision = outcome.path.rsplit("/", 1)[1]
    assert sorted(S3Store(bucket, "store").manifest("emb", revision)["files"]) == sorted(files)


def test_a_tampered_s3_object_stops_the_import_naming_both_hashes(s3, tmp_path, catalog):
    client, bucket = s3
    files = {"config.json": json.dumps(MINILM_CONFIG).encode(), "model.safetensors": b"\x05" * 1000}
    source = s3_source(client, bucket, files)
    client.put_object(Bucket=bucket, Key="upstream/emb/v1/model.safetensors", Body=b"\x09" * 1000)
    entry = catalog.get("all-minilm-l6-v2").model_copy(update={"source": source})
    store = tmp_path / "store"
    with pytest.raises(WeightsError) as err:
        import_model("emb", entry, store, "unused", "unused")
    message = str(err.value)
    assert (
        "model.safetensors" in message and sha(b"\x05" * 1000) in message and sha(b"\x09" * 1000) in message
    )
    assert not any(store.rglob("manifest.json"))
    assert sorted(p.name for p in store.rglob("*") if p.name.startswith(".")) == []


def test_a_missing_s3_object_is_named(s3, tmp_path, catalog):
    client, bucket = s3
    files = {"config.json": json.dumps(MINILM_CONFIG).encode()}
    source = s3_source(client, bucket, files)
    source = source.model_copy(update={"files": {**source.files, "gone.bin": "0" * 64}})
    entry = catalog.get("all-minilm-l6-v2").model_copy(update={"source": source})
    with pytest.raises(WeightsError, match=r"s3://.*/upstream/emb/v1/gone\.bin \(pinned in the catalog\)"):
        import_model("emb", entry, tmp_path / "store", "unused", "unused")


def test_cli_publish_to_s3_then_stage_from_s3(s3, tmp_path, capsys):
    _, bucket = s3
    src = snapshot(tmp_path / "snap")
    url = f"s3://{bucket}/fleet"
    assert main(["weights", "publish", "m", "--from", str(src), "--store", url, "--revision", "r1"]) == 0
    published = json.loads(capsys.readouterr().out)
    assert published["changed"] and published["path"] == f"{url}/m/r1"
    serving = tmp_path / "serving"
    argv = ["weights", "stage", "m", "--store", url, "--serving-root", str(serving), "--revision", "r1"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(serving / "m" / "r1")
    assert verify(serving / "m" / "r1") == []
    # And store to store: from S3 back into a filesystem store.
    fs = tmp_path / "fs-store"
    argv = ["weights", "publish", "m", "--from-store", url, "--store", str(fs), "--revision", "r1"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["changed"]
    assert FsStore(fs).manifest("m", "r1")["files"] == S3Store(bucket, "fleet").manifest("m", "r1")["files"]
