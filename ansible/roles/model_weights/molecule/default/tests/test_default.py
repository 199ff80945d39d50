"""Real state after the model_weights role on a host where llmfleet_common installed llmfleet.

The staged files' sha256 equal the store manifest's, the copy was renamed into place (no partial left,
the stale one replaced), gc kept the 2 newest revisions, and the host's own CLI verifies the copy and
refuses a damaged one."""

import json
import os
from pathlib import Path

MODEL = "all-minilm-l6-v2"
REVISION = "synthetic-1"  # a local build (converge.yml publishes it with --revision), not the catalog's
STORE = f"/var/lib/llmfleet/store/{MODEL}/{REVISION}"
SERVING = f"/var/lib/llmfleet/serving/{MODEL}"
STAGED = f"{SERVING}/{REVISION}"
LLMFLEET = "/opt/llmfleet/llmfleet-venv/bin/llmfleet --catalog /etc/llmfleet/catalog/models.yml"
# molecule runs these tests from a copy; the role's own directory is in the environment.
REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).resolve().parents[2]


def manifest(host, directory):
    return json.loads(host.file(f"{directory}/manifest.json").content_string)


def test_llmfleet_runs_from_the_hosts_own_venv_with_the_catalog_copied(host):
    assert host.run("/opt/llmfleet/llmfleet-venv/bin/llmfleet --version").rc == 0
    catalog = host.file("/etc/llmfleet/catalog/models.yml")
    assert catalog.content_string == (REPO / "catalog" / "models.yml").read_text()
    assert host.check_output(f"{LLMFLEET} catalog list --json").count(MODEL) == 1


def test_staged_files_hash_to_the_store_manifest(host):
    store = manifest(host, STORE)
    assert manifest(host, STAGED) == store
    files = store["files"]
    assert sorted(files) == ["1_Pooling/extra.bin", "config.json", "model.safetensors"]
    listed = host.check_output(f"cd {STAGED} && find . -type f ! -name manifest.json | sort").split()
    assert listed == [f"./{rel}" for rel in sorted(files)], "exactly the manifest's files"
    for rel, meta in files.items():
        digest = host.check_output(f"sha256sum {STAGED}/{rel}").split()[0]
        assert digest == meta["sha256"], rel
        assert host.file(f"{STAGED}/{rel}").size == meta["size"]
        # The same bytes as the store's copy, not merely a self-consistent manifest.
        assert digest == host.check_output(f"sha256sum {STORE}/{rel}").split()[0]


def test_the_copy_was_renamed_into_place_and_the_stale_partial_is_gone(host):
    entries = host.check_output(f"ls -A {SERVING}").split()
    assert not [e for e in entries if e.startswith(".")], f"leftovers beside the revisions: {entries}"
    leftovers = host.check_output(f"find {SERVING} -name '*.part' -o -name '*.ok' -o -name '*.tmp'")
    assert leftovers == ""
    assert host.file(STAGED).is_directory and host.file(STAGED).mode == 0o755


def test_gc_kept_the_two_newest_revisions(host):
    assert sorted(host.check_output(f"ls {SERVING}").split()) == sorted([REVISION, "old-2"])


def test_the_hosts_cli_verifies_the_copy_and_names_a_damaged_file(host):
    ok = host.run(f"{LLMFLEET} weights verify {MODEL} --path {STAGED}")
    assert ok.rc == 0 and "verified" in ok.stdout
    host.check_output(f"rm -rf /tmp/damaged && cp -a {STAGED} /tmp/damaged")
    flip = "f = open('/tmp/damaged/model.safetensors', 'r+b'); f.seek(100); b = f.read(1); f.seek(100); "
    host.check_output(f'python3 -c "{flip}f.write(bytes([b[0] ^ 0xFF]))"')
    bad = host.run(f"{LLMFLEET} weights verify {MODEL} --path /tmp/damaged")
    want = manifest(host, STAGED)["files"]["model.safetensors"]["sha256"]
    assert bad.rc == 6 and "model.safetensors" in bad.stderr and want in bad.stderr
