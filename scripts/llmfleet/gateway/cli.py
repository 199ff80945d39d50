"""``llmfleet gateway ...`` and ``llmfleet keys ...``: render the gateway, rotate instances, manage keys."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from llmfleet.catalog.models import load_catalog
from llmfleet.cliargs import (
    EXIT_OK,
    add_command,
    add_group,
    dump_json,
    json_flag,
    non_negative_float,
    positive_int,
)
from llmfleet.deploy.registry import DEFAULT_REGISTRY_DIR, load_all
from llmfleet.errors import GatewayError, LlmfleetError
from llmfleet.gateway.policy import GatewaySettings

# One source for where a gateway lives: GatewaySettings' defaults, which the gateway role also starts from.
_GATEWAY_DEFAULTS = {name: field.default for name, field in GatewaySettings.model_fields.items()}
DEFAULT_GATEWAY_CONFIG_DIR = Path(_GATEWAY_DEFAULTS["config_dir"])
DEFAULT_GATEWAY_SOCKET = Path(_GATEWAY_DEFAULTS["runtime_dir"]) / "haproxy.sock"


def _catalog_models(args: argparse.Namespace) -> list[str]:
    return sorted(load_catalog(args.catalog).models)


def cmd_gateway_sync_keys(args: argparse.Namespace) -> int:
    from llmfleet.gateway.keys import sync_declared_keys
    from llmfleet.gateway.policy import load_policy

    policy = load_policy(args.policy_file)
    changes = sync_declared_keys(args.keys_dir, dict(policy.keys), _catalog_models(args))
    print(json.dumps({"changed": any(changes.values()), **changes}, sort_keys=True))
    return EXIT_OK


def cmd_gateway_render(args: argparse.Namespace) -> int:
    from llmfleet.gateway.haproxy import render_gateway
    from llmfleet.gateway.keys import GATEWAY_STATE_FILE, load_api_keys, state_json
    from llmfleet.gateway.policy import GatewaySettings, load_policy

    settings = json_flag(GatewaySettings, "--settings-json", args.settings_json)
    policy = load_policy(args.policy_file)
    plans = [dep.plan for dep in load_all(args.registry)]
    files = render_gateway(settings, policy, plans, load_api_keys(args.keys_dir))
    files[GATEWAY_STATE_FILE] = state_json(settings, policy, args.keys_dir, args.registry)
    dump_json(files)
    return EXIT_OK


def cmd_gateway_render_apim(args: argparse.Namespace) -> int:
    from llmfleet.gateway.apim import render_apim
    from llmfleet.gateway.keys import load_api_keys
    from llmfleet.gateway.policy import load_policy

    policy = load_policy(args.policy_file)
    plans = [dep.plan for dep in load_all(args.registry)]
    files = render_apim(policy, plans, load_api_keys(args.keys_dir))
    for name, text in files.items():
        path = args.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(json.dumps({"out": str(args.out), "files": sorted(files)}))
    return EXIT_OK


def cmd_gateway_drain(args: argparse.Namespace) -> int:
    from llmfleet.gateway.rotation import drain

    print(json.dumps(drain(args.socket, args.model, args.instance, args.timeout), sort_keys=True))
    return EXIT_OK


def cmd_gateway_readmit(args: argparse.Namespace) -> int:
    from llmfleet.gateway.rotation import readmit

    print(json.dumps(readmit(args.socket, args.model, args.instance), sort_keys=True))
    return EXIT_OK


def _key_policy(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from llmfleet.gateway.policy import KeyPolicy

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    return KeyPolicy(
        models=models,
        rpm=args.rpm,
        tokens_per_minute=args.tokens_per_minute,
        tokens_per_day=args.tokens_per_day,
    )


def _push(args: argparse.Namespace) -> dict[str, object]:
    from llmfleet.gateway.keys import load_state, write_and_push_maps

    state = load_state(args.gateway_config_dir)
    plans = [dep.plan for dep in load_all(Path(state.registry_dir))]
    return write_and_push_maps(state, plans)


def cmd_keys_add(args: argparse.Namespace) -> int:
    from llmfleet.gateway.keys import add_key, load_state, revoke_key

    state = load_state(args.gateway_config_dir)
    secret = add_key(Path(state.keys_dir), args.name, _key_policy(args), _catalog_models(args))
    try:
        result = _push(args)
    except (LlmfleetError, OSError) as exc:
        # The secret has not been shown, so a key that stayed would be one nobody can use: take it back
        # out, and the maps with it, so that the gateway and the store agree again.
        revoke_key(Path(state.keys_dir), args.name)
        with contextlib.suppress(LlmfleetError, OSError):  # the first error is the one to report
            _push(args)
        raise GatewayError(
            f"key {args.name!r} was not added: the gateway's maps could not be updated ({exc}); "
            "nothing changed. Fix the gateway (llmfleet status, its log) and run keys add again"
        ) from None
    if args.json:
        dump_json({"name": args.name, "key": secret, **result})
    else:
        print(secret)
        live = result["pushed_to_running_gateway"]
        where = "live now" if live else "in the map files (gateway not running)"
        print(f"key {args.name!r} added, {where}. This is the only time the key is shown.", file=sys.stderr)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    from llmfleet.gateway.keys import list_keys, load_state

    keys = list_keys(Path(load_state(args.gateway_config_dir).keys_dir))
    if args.json:
        dump_json({"keys": keys})
        return EXIT_OK

    def limit(value: object) -> str:
        return "-" if value is None else str(value)

    print(f"{'NAME':20} {'SOURCE':7} {'RPM':>6} {'TOK/MIN':>9} {'TOK/DAY':>11}  MODELS")
    for key in keys:
        print(
            f"{key['name']!s:20} {key['source']!s:7} {limit(key['rpm']):>6} "
            f"{limit(key['tokens_per_minute']):>9} {limit(key['tokens_per_day']):>11}  "
            f"{','.join(key['models'])}"  # type: ignore[arg-type]
        )
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from llmfleet.gateway.keys import load_state, revoke_key

    revoke_key(Path(load_state(args.gateway_config_dir).keys_dir), args.name)
    result = _push(args)
    print(json.dumps({"revoked": args.name, **result}, sort_keys=True))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``gateway`` and ``keys`` and their actions to the ``llmfleet`` subcommands."""

    gateway_sub = add_group(sub, "gateway", "API keys and the HAProxy configuration")
    policy_help = "gateway policy YAML (default: built-in)"
    p = add_command(
        gateway_sub, "sync-keys", cmd_gateway_sync_keys, "make the key store match the policy's keys"
    )
    p.add_argument("--keys-dir", type=Path, required=True)
    p.add_argument("--policy-file", type=Path, default=None, help=policy_help)
    p = add_command(
        gateway_sub, "render", cmd_gateway_render, "render haproxy.cfg, Lua, maps as JSON {file: text}"
    )
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)
    p.add_argument("--keys-dir", type=Path, required=True)
    p.add_argument("--settings-json", default="{}", help="GatewaySettings as JSON")
    p.add_argument("--policy-file", type=Path, default=None, help=policy_help)

    p = add_command(
        gateway_sub, "render-apim", cmd_gateway_render_apim, "write the same policy for Azure APIM"
    )
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)
    p.add_argument("--keys-dir", type=Path, default=DEFAULT_GATEWAY_CONFIG_DIR / "keys")
    p.add_argument("--policy-file", type=Path, default=None, help=policy_help)
    p.add_argument("--out", type=Path, required=True, help="folder for api-policy.xml, products, backends")

    socket_help = f"HAProxy's admin socket (default {DEFAULT_GATEWAY_SOCKET})"
    p = add_command(
        gateway_sub, "drain", cmd_gateway_drain, "stop new requests to an instance; wait for in-flight"
    )
    p.add_argument("--socket", type=Path, default=DEFAULT_GATEWAY_SOCKET, help=socket_help)
    p.add_argument("--model", required=True)
    p.add_argument("--instance", required=True)
    p.add_argument(
        "--timeout", type=non_negative_float, default=120.0, help="seconds to wait for in-flight requests"
    )
    p = add_command(gateway_sub, "readmit", cmd_gateway_readmit, "put a drained instance back into rotation")
    p.add_argument("--socket", type=Path, default=DEFAULT_GATEWAY_SOCKET, help=socket_help)
    p.add_argument("--model", required=True)
    p.add_argument("--instance", required=True)

    keys_sub = add_group(sub, "keys", "API keys: add, list, revoke (live, no reload)")

    def keys_command(name: str, func: Callable[[argparse.Namespace], int], help_text: str):  # type: ignore[no-untyped-def]
        p = add_command(keys_sub, name, func, help_text)
        p.add_argument(
            "--gateway-config-dir",
            type=Path,
            default=DEFAULT_GATEWAY_CONFIG_DIR,
            help=f"the gateway's config directory (default {DEFAULT_GATEWAY_CONFIG_DIR})",
        )
        return p

    p = keys_command("add", cmd_keys_add, "create a key; prints it once")
    p.add_argument("name")
    p.add_argument("--models", required=True, help="comma-separated model names, or * for all")
    p.add_argument("--rpm", type=positive_int, default=None, help="requests per minute")
    p.add_argument("--tokens-per-minute", type=positive_int, default=None)
    p.add_argument("--tokens-per-day", type=positive_int, default=None)
    p.add_argument("--json", action="store_true")
    p = keys_command("list", cmd_keys_list, "list keys, their models and limits (no secrets)")
    p.add_argument("--json", action="store_true")
    p = keys_command("revoke", cmd_keys_revoke, "remove a key; it stops working at once")
    p.add_argument("name")
