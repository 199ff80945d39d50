"""``llmfleet plan|ready|status``: plan one model on this host, gate an instance, show what is deployed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmfleet.catalog.models import load_catalog
from llmfleet.cliargs import EXIT_OK, UsageError, add_command, dump_json, json_flag, positive_float
from llmfleet.deploy.cpuhost import held_on_host
from llmfleet.deploy.plan import DeploymentSettings, plan_model
from llmfleet.deploy.registry import DEFAULT_REGISTRY_DIR, deployed_plan, load_all, ports_held
from llmfleet.hosts.facts import HostFacts


def cmd_plan(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    entry = catalog.get(args.model)
    settings = json_flag(DeploymentSettings, "--settings-json", args.settings_json)
    if args.host_facts_json:
        host = json_flag(HostFacts, "--host-facts-json", args.host_facts_json)
    else:
        from llmfleet.hosts.facts import gather

        host = gather()[0]
    # The deployed plan carries this model's own ports; ports_held adds the ones other models hold, and
    # held_on_host their memory and CPU sets, which this model's plan must leave them (one host budget).
    taken, _ = ports_held(args.registry, args.model)
    previous = deployed_plan(args.registry, args.model)
    held = held_on_host([dep.plan for dep in load_all(args.registry)], catalog, except_model=args.model)
    plan = plan_model(args.model, entry, host, settings, ports_taken=taken, previous=previous, held=held)
    dump_json(plan.model_dump(mode="json"))
    return EXIT_OK


def cmd_ready(args: argparse.Namespace) -> int:
    from llmfleet.deploy.ready import confirm_alive, exercise, wait_ready

    main_pid = None
    if args.service:
        from llmfleet.deploy.status import service_pid

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
        from llmfleet.weights.golden import check, enforce, write_report

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


def cmd_fleet_status(args: argparse.Namespace) -> int:
    """``status --inventory``: the fleet placement, with every gateway's view of each instance."""
    import subprocess

    from llmfleet.errors import FleetError
    from llmfleet.fleet.render import PLACEMENT_FILE, read_previous
    from llmfleet.fleet.status import fleet_rows, gateway_metrics_urls, read_metrics, status_table

    placement, _ = read_previous(args.inventory)
    if not placement:
        raise FleetError(
            f"--inventory: {args.inventory / PLACEMENT_FILE} has no placement; run llmfleet fleet place"
        )
    if args.gateway_metrics:
        urls = {url: url for url in args.gateway_metrics}
    else:
        inventory = Path(sys.executable).parent / "ansible-inventory"
        proc = subprocess.run(
            [str(inventory), "-i", str(args.inventory), "--list"], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise FleetError(
                f"--inventory: ansible-inventory cannot read {args.inventory} "
                f"({(proc.stderr.strip().splitlines() or ['no output'])[-1]}); or pass --gateway-metrics URL"
            )
        urls = gateway_metrics_urls(json.loads(proc.stdout))
    views = {host: read_metrics(url) for host, url in urls.items()}
    rows = fleet_rows(placement, views)
    if args.json:
        dump_json({"gateways": urls, "instances": rows})
    else:
        sys.stdout.write(status_table(rows))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from llmfleet.deploy.status import status

    if args.inventory is not None:
        return cmd_fleet_status(args)

    if args.registry.exists() and not args.registry.is_dir():
        raise UsageError(
            f"--registry {args.registry} is a file; give the deployment records' directory "
            "(llmfleet_common_registry_dir, /var/lib/llmfleet/deployments by default)"
        )
    models = status(args.registry)
    if args.json:
        dump_json({"models": models})
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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``plan``, ``ready`` and ``status`` to the ``llmfleet`` subcommands."""

    p = add_command(
        sub,
        "plan",
        cmd_plan,
        "plan one model's instances on this host; prints the plan as JSON. With --config instead of "
        "--model it is `llmfleet capacity plan` (GPU capacity: TP x PP candidates, fit certificates)",
    )
    p.add_argument("--model", required=True)
    p.add_argument("--settings-json", required=True, help="DeploymentSettings as JSON")
    p.add_argument("--host-facts-json", help="HostFacts as JSON (default: gather from this host)")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)

    p = add_command(
        sub,
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

    p = add_command(
        sub, "status", cmd_status, "what is deployed on this host (or the fleet) and whether it answers"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)
    p.add_argument(
        "--inventory",
        type=Path,
        default=None,
        help="a fleet's inventory directory: every node's instances and each gateway's view of them",
    )
    p.add_argument(
        "--gateway-metrics",
        action="append",
        default=[],
        metavar="URL",
        help="with --inventory: a gateway's Prometheus URL (default: from the inventory's gateways)",
    )
