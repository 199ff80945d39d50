"""The API key store and the `llmfleet keys` / `gateway sync-keys` commands (no HAProxy needed here;
tests/test_gateway_haproxy.py checks that changes reach a running gateway without a reload)."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path

import pytest

from llmfleet.cli import main
from llmfleet.errors import GatewayError
from llmfleet.gateway.keys import (
    STORE_FILE,
    add_key,
    list_keys,
    load_api_keys,
    revoke_key,
    state_json,
    sync_declared_keys,
)
from llmfleet.gateway.policy import GatewayPolicy, GatewaySettings, KeyPolicy, hash_key

MODELS = ["smollm2-135m-instruct", "all-minilm-l6-v2"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_added_key_is_stored_hashed_and_shown_once(tmp_path: Path) -> None:
    secret = add_key(tmp_path, "alice", KeyPolicy(models=["smollm2-135m-instruct"], rpm=10), MODELS)
    store_text = (tmp_path / STORE_FILE).read_text()
    assert secret not in store_text and hash_key(secret) in store_text
    assert mode(tmp_path / STORE_FILE) == 0o600
    assert not (tmp_path / "alice.key").exists(), "a CLI key has no key file: it is shown once"
    [key] = load_api_keys(tmp_path)
    assert (key.name, key.sha256, key.policy.rpm) == ("alice", hash_key(secret), 10)
    [listed] = list_keys(tmp_path)
    assert listed["source"] == "cli" and listed["models"] == ["smollm2-135m-instruct"]
    assert secret not in json.dumps(listed)


def test_adding_an_existing_name_is_refused(tmp_path: Path) -> None:
    add_key(tmp_path, "alice", KeyPolicy())
    with pytest.raises(GatewayError, match="exists already; revoke it first"):
        add_key(tmp_path, "alice", KeyPolicy())


def test_unknown_model_for_a_key_names_the_catalog(tmp_path: Path) -> None:
    with pytest.raises(GatewayError, match=r"unknown model\(s\) smollm3.*smollm2-135m-instruct"):
        add_key(tmp_path, "alice", KeyPolicy(models=["smollm3"]), MODELS)
    assert not (tmp_path / STORE_FILE).exists(), "nothing is written when the input is refused"


def test_revoke_removes_the_key_and_its_file(tmp_path: Path) -> None:
    sync_declared_keys(tmp_path, {"default": KeyPolicy()})
    assert (tmp_path / "default.key").exists()
    revoke_key(tmp_path, "default")
    assert load_api_keys(tmp_path) == [] and not (tmp_path / "default.key").exists()
    with pytest.raises(GatewayError, match=r"no API key named 'default'\. Keys: none"):
        revoke_key(tmp_path, "default")


def test_sync_keeps_a_key_clients_hold_and_follows_the_policy(tmp_path: Path) -> None:
    held = "sk-llmfleet-already-in-use-0123456789abcd"
    (tmp_path / "default.key").write_text(held + "\n")
    assert sync_declared_keys(tmp_path, {"default": KeyPolicy()}) == {
        "created": ["default"],
        "updated": [],
        "removed": [],
    }
    assert load_api_keys(tmp_path)[0].sha256 == hash_key(held), "the existing key file is reused"
    assert sync_declared_keys(tmp_path, {"default": KeyPolicy()}) == {
        "created": [],
        "updated": [],
        "removed": [],
    }
    changes = sync_declared_keys(tmp_path, {"default": KeyPolicy(rpm=5), "ci": KeyPolicy()})
    assert changes == {"created": ["ci"], "updated": ["default"], "removed": []}
    assert (tmp_path / "default.key").read_text().strip() == held
    cli_secret = add_key(tmp_path, "alice", KeyPolicy())
    changes = sync_declared_keys(tmp_path, {"default": KeyPolicy(rpm=5)})
    assert changes == {"created": [], "updated": [], "removed": ["ci"]}
    assert not (tmp_path / "ci.key").exists()
    names = {key.name: key.sha256 for key in load_api_keys(tmp_path)}
    assert names == {"alice": hash_key(cli_secret), "default": hash_key(held)}, "CLI keys are left alone"


def test_sync_refuses_to_take_over_a_cli_key(tmp_path: Path) -> None:
    add_key(tmp_path, "alice", KeyPolicy())
    with pytest.raises(GatewayError, match="added with `llmfleet keys add` and is also declared"):
        sync_declared_keys(tmp_path, {"alice": KeyPolicy(rpm=1)})


def _add_many(keys_dir: str, prefix: str) -> None:
    for index in range(10):
        add_key(Path(keys_dir), f"{prefix}{index}", KeyPolicy())


def test_concurrent_adds_lose_no_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_many, args=(str(tmp_path), p)) for p in ("a", "b", "c")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(load_api_keys(tmp_path)) == 30


def test_damaged_store_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    (tmp_path / STORE_FILE).write_text('{"schema_version": 1, "keys": {"x": {"sha256": "nope"}}}')
    with pytest.raises(GatewayError, match=r"is damaged.*restore it from a backup"):
        load_api_keys(tmp_path)


@pytest.fixture
def gateway_config(tmp_path: Path) -> Path:
    """A gateway config dir as a deploy leaves it, with no HAProxy running."""
    config_dir, keys_dir, registry = tmp_path / "gw", tmp_path / "gw" / "keys", tmp_path / "registry"
    for directory in (config_dir, keys_dir, registry):
        directory.mkdir(parents=True)
    settings = GatewaySettings(config_dir=str(config_dir), runtime_dir=str(tmp_path / "run"))
    (config_dir / "gateway.json").write_text(state_json(settings, GatewayPolicy(), keys_dir, registry))
    return config_dir


def test_cli_keys_add_list_revoke(gateway_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--gateway-config-dir", str(gateway_config)]
    assert (
        main(["keys", "add", "bob", "--models", "smollm2-135m-instruct", "--tokens-per-day", "9", *base]) == 0
    )
    out, err = capsys.readouterr()
    secret = out.strip()
    assert secret.startswith("sk-llmfleet-") and "only time the key is shown" in err
    assert "gateway not running" in err
    keys_map = (gateway_config / "keys.map").read_text()
    assert f"{hash_key(secret)} bob\n" in keys_map
    assert (gateway_config / "key-tpd.map").read_text().endswith("bob 9\n")

    assert main(["keys", "list", "--json", *base]) == 0
    listed = json.loads(capsys.readouterr().out)["keys"]
    assert [(k["name"], k["tokens_per_day"]) for k in listed] == [("bob", 9)]

    assert main(["keys", "revoke", "bob", *base]) == 0
    capsys.readouterr()
    assert hash_key(secret) not in (gateway_config / "keys.map").read_text()
    assert main(["keys", "revoke", "bob", *base]) == 7
    assert "no API key named 'bob'" in capsys.readouterr().err


def test_cli_keys_add_unknown_model_fails_without_change(
    gateway_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["keys", "add", "bob", "--models", "gpt-5", "--gateway-config-dir", str(gateway_config)])
    assert rc == 7
    assert "unknown model(s) gpt-5" in capsys.readouterr().err
    assert not (gateway_config / "keys.map").exists()


def test_cli_keys_without_a_deployed_gateway_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "list", "--gateway-config-dir", str(tmp_path)]) == 7
    assert "Deploy first (make deploy)" in capsys.readouterr().err


def test_cli_keys_add_that_cannot_reach_the_maps_adds_no_key(
    gateway_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An admin socket that answers every command with an error, as a HAProxy that cannot find the map
    would: the key must not stay in the store, since its secret was never shown."""
    import socket
    import threading

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(run_dir / "haproxy.sock"))
    server.listen(8)

    def refuse() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"Unknown map identifier. Please use #<id> or <file>.\n")

    threading.Thread(target=refuse, daemon=True).start()
    try:
        rc = main(["keys", "add", "bob", "--models", "*", "--gateway-config-dir", str(gateway_config)])
    finally:
        server.close()
    out, err = capsys.readouterr()
    assert rc == 7 and out == ""
    assert "key 'bob' was not added" in err and "Unknown map identifier" in err and "nothing changed" in err
    assert "bob" not in json.dumps(list_keys(gateway_config / "keys"))
    assert " bob\n" not in (gateway_config / "keys.map").read_text(), "the map files were not put back"
