"""API keys: a store of hashed keys with their policies, and changes pushed to a running gateway.

The store is one JSON file, ``<keys_dir>/keys.json`` (mode 0600): per key name its sha256, the models it
may use, its limits, and where it came from ("policy": declared in the gateway policy file and kept in
step with it by the deploy; "cli": added with ``llmfleet keys add``). Plaintext keys are never stored:
``keys add`` prints a new key once; keys declared in the policy get a key file (``<name>.key``, 0600) so
that the operator of this host can read it, as ``make deploy`` promises for the default key.

A change rewrites the map files and replaces their contents in the running HAProxy over its admin socket
("prepare map" / "add map @ver" / "commit map"), which is atomic per map and needs no reload: streams in
flight are untouched and the token counters keep counting.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmfleet.deploy.plan import ModelPlan
from llmfleet.errors import GatewayError
from llmfleet.gateway.haproxy import MAP_FILES, render_maps
from llmfleet.gateway.policy import (
    KEY_FILE_SUFFIX,
    ApiKey,
    GatewayPolicy,
    GatewaySettings,
    KeyPolicy,
    _check_key_name,
    ensure_key_file,
    hash_key,
    new_key,
    read_key_file,
)

STORE_FILE = "keys.json"
GATEWAY_STATE_FILE = "gateway.json"
SOCKET_TIMEOUT_S = 5.0


class StoredKey(KeyPolicy):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: Literal["policy", "cli"]
    created: str


class _Store(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    keys: dict[str, StoredKey] = Field(default_factory=dict)


class GatewayState(BaseModel):
    """What the last deploy rendered the gateway from; lets ``llmfleet keys`` re-render the maps alone."""

    model_config = ConfigDict(extra="forbid")

    settings: GatewaySettings
    policy: GatewayPolicy
    keys_dir: str
    registry_dir: str


def _store_path(keys_dir: Path) -> Path:
    return keys_dir / STORE_FILE


@contextlib.contextmanager
def _locked(keys_dir: Path) -> Iterator[None]:
    """One writer at a time: two `keys add` racing must not lose one of the keys."""
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(keys_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _load(keys_dir: Path) -> _Store:
    path = _store_path(keys_dir)
    if not path.exists():
        return _Store()
    try:
        return _Store.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise GatewayError(
            f"key store {path} is damaged ({exc.errors()[0]['msg']}); restore it from a backup, or delete it "
            "and re-run the deploy (keys declared in the policy come back; keys added with `keys add` do not)"
        ) from None


def _atomic_write(path: Path, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(keys_dir: Path, store: _Store) -> None:
    _atomic_write(_store_path(keys_dir), store.model_dump_json(indent=2) + "\n", 0o600)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_models(policy: KeyPolicy, known_models: list[str] | None) -> None:
    if known_models is None:
        return
    unknown = sorted(set(policy.models) - set(known_models) - {"*"})
    if unknown:
        raise GatewayError(
            f"unknown model(s) {', '.join(unknown)} for an API key. Models in the catalog: "
            f"{', '.join(sorted(known_models))} (or * for every model)"
        )


def _policy_of(key: KeyPolicy) -> KeyPolicy:
    """Only the policy fields (a StoredKey or DeclaredKey carries more)."""
    return KeyPolicy(**key.model_dump(include=set(KeyPolicy.model_fields)))


def load_api_keys(keys_dir: Path) -> list[ApiKey]:
    """The keys the gateway lets in, as the renderer wants them."""
    store = _load(keys_dir)
    return [ApiKey(name, key.sha256, _policy_of(key)) for name, key in sorted(store.keys.items())]


def list_keys(keys_dir: Path) -> list[dict[str, object]]:
    """Every key with its policy and origin; never a secret (the store holds none)."""
    store = _load(keys_dir)
    return [
        {"name": name, **key.model_dump(exclude={"sha256"}), "sha256_prefix": key.sha256[:12]}
        for name, key in sorted(store.keys.items())
    ]


def add_key(keys_dir: Path, name: str, policy: KeyPolicy, known_models: list[str] | None = None) -> str:
    """Create a key and return its secret: the only time it is shown. An existing name is refused."""
    _check_key_name(name)
    _check_models(policy, known_models)
    with _locked(keys_dir):
        store = _load(keys_dir)
        if name in store.keys:
            raise GatewayError(
                f"API key {name!r} exists already; revoke it first (llmfleet keys revoke {name}) or pick "
                "another name"
            )
        secret = new_key()
        store.keys[name] = StoredKey(
            **policy.model_dump(), sha256=hash_key(secret), source="cli", created=_now()
        )
        _save(keys_dir, store)
    return secret


def revoke_key(keys_dir: Path, name: str) -> None:
    """Remove a key from the store, and its key file if it has one."""
    with _locked(keys_dir):
        store = _load(keys_dir)
        if name not in store.keys:
            known = ", ".join(sorted(store.keys)) or "none"
            raise GatewayError(f"no API key named {name!r}. Keys: {known}")
        del store.keys[name]
        _save(keys_dir, store)
        (keys_dir / f"{name}{KEY_FILE_SUFFIX}").unlink(missing_ok=True)


def sync_declared_keys(
    keys_dir: Path, declared: dict[str, KeyPolicy], known_models: list[str] | None = None
) -> dict[str, list[str]]:
    """Make the store match the policy file's keys: create missing ones (secret in <name>.key), update
    changed policies, remove keys the policy no longer declares. Keys added with the CLI are left alone.

    An existing key file is reused, so a key clients already hold survives redeploys and store loss.
    """
    changes: dict[str, list[str]] = {"created": [], "updated": [], "removed": []}
    for name, policy in declared.items():
        _check_key_name(name)
        _check_models(policy, known_models)
    with _locked(keys_dir):
        store = _load(keys_dir)
        for name, policy in sorted(declared.items()):
            ensure_key_file(keys_dir, name)
            digest = hash_key(read_key_file(keys_dir / f"{name}{KEY_FILE_SUFFIX}"))
            wanted = StoredKey(
                **_policy_of(policy).model_dump(),
                sha256=digest,
                source="policy",
                created=store.keys[name].created if name in store.keys else _now(),
            )
            current = store.keys.get(name)
            if current is None:
                changes["created"].append(name)
            elif current != wanted:
                if current.source == "cli":
                    raise GatewayError(
                        f"API key {name!r} was added with `llmfleet keys add` and is also declared in the "
                        "gateway policy; revoke the CLI key or rename the declared one"
                    )
                changes["updated"].append(name)
            store.keys[name] = wanted
        for name in sorted(store.keys):
            if store.keys[name].source == "policy" and name not in declared:
                del store.keys[name]
                (keys_dir / f"{name}{KEY_FILE_SUFFIX}").unlink(missing_ok=True)
                changes["removed"].append(name)
        if any(changes.values()) or not _store_path(keys_dir).exists():
            _save(keys_dir, store)
    return changes


# --- pushing map changes to a running HAProxy ---------------------------------------------------------


def admin_command(socket_path: Path, command: str) -> str:
    """One command on HAProxy's admin socket (non-interactive: it answers and closes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(SOCKET_TIMEOUT_S)
        sock.connect(str(socket_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _map_entries(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def replace_map(socket_path: Path, map_path: Path, text: str) -> None:
    """Atomically replace a loaded map's entries with those in ``text`` (no reload)."""
    answer = admin_command(socket_path, f"prepare map {map_path}")
    marker = "New version created:"
    if marker not in answer:
        raise GatewayError(f"HAProxy refused `prepare map {map_path}`: {answer.strip()}")
    version = answer.split(marker, 1)[1].split()[0]
    entries = _map_entries(text)
    if entries:
        payload = "\n".join(entries)
        answer = admin_command(socket_path, f"add map @{version} {map_path} <<\n{payload}\n")
        if answer.strip():
            raise GatewayError(f"HAProxy refused the new entries of {map_path}: {answer.strip()}")
    answer = admin_command(socket_path, f"commit map @{version} {map_path}")
    if answer.strip():
        raise GatewayError(f"HAProxy refused `commit map` for {map_path}: {answer.strip()}")


def write_and_push_maps(state: GatewayState, plans: list[ModelPlan]) -> dict[str, object]:
    """Render the maps from the store, write the files, and load them into HAProxy if it runs."""
    keys = load_api_keys(Path(state.keys_dir))
    maps = render_maps(plans, keys, state.policy)
    config_dir = Path(state.settings.config_dir)
    changed = []
    for name in MAP_FILES:
        path = config_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != maps[name]:
            _atomic_write(path, maps[name], 0o640)
            changed.append(name)
    socket_path = Path(state.settings.runtime_dir) / "haproxy.sock"
    pushed = False
    if socket_path.exists():
        try:
            for name in changed:
                replace_map(socket_path, config_dir / name, maps[name])
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # not running: it reads the files when it starts
        else:
            pushed = True
    return {"maps_changed": changed, "pushed_to_running_gateway": pushed and bool(changed)}


def load_state(config_dir: Path) -> GatewayState:
    path = config_dir / GATEWAY_STATE_FILE
    try:
        return GatewayState.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GatewayError(
            f"{path} does not exist: no gateway was deployed with this config dir. Deploy first "
            "(make deploy), or pass --gateway-config-dir with the gateway's config directory"
        ) from None


def state_json(settings: GatewaySettings, policy: GatewayPolicy, keys_dir: Path, registry_dir: Path) -> str:
    state = GatewayState(
        settings=settings, policy=policy, keys_dir=str(keys_dir), registry_dir=str(registry_dir)
    )
    return json.dumps(state.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
