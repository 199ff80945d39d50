"""``llmfleet fleet place|show|scale|remove|drain|undrain|add-node``: the fleet's placement.

Each change is one command: it rewrites fleet.yml (scale, remove, drain, undrain, add-node), places again
(what runs stays where it is), writes fleet-placement.yml and prints the nodes it changed with the
playbook run that applies it to those nodes only.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from llmfleet.catalog.gpus import DEFAULT_GPU_CATALOG, load_gpu_catalog
from llmfleet.catalog.models import load_catalog
from llmfleet.cliargs import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_command,
    add_group,
    dump_json,
    non_negative_int,
    positive_int,
    validation_summary,
)
from llmfleet.errors import FleetError
from llmfleet.fleet.place import FleetPlacement, place_fleet
from llmfleet.fleet.render import (
    PLACEMENT_FILE,
    changed_nodes,
    check_env,
    model_changes,
    read_previous,
    render_placement,
    write_placement,
)
from llmfleet.fleet.spec import SPEC_FILE, FleetSpec, ModelWant, Node, load_spec, render_spec


@dataclass(frozen=True)
class _Placed:
    placement: FleetPlacement
    text: str
    changed: list[str]
    by_model: dict[str, dict[str, list[str]]]


def _place(args: argparse.Namespace, spec: FleetSpec) -> _Placed:
    env: Path = args.inventory
    check_env(env)
    previous, before = read_previous(env)
    placement = place_fleet(
        spec,
        load_catalog(args.catalog),
        load_gpu_catalog(args.gpu_catalog),
        env,
        previous=previous,
        rebalance=getattr(args, "rebalance", False),
    )
    return _Placed(
        placement,
        render_placement(placement),
        changed_nodes(before, placement),
        model_changes(previous, placement),
    )


def _report(args: argparse.Namespace, placed: _Placed, wrote: bool) -> None:
    """The placement, and the playbook runs that apply it: each model's, on the nodes it changed."""
    env, placement = args.inventory, placed.placement
    if args.json:
        extra = {"changed_nodes": placed.changed, "changes": placed.by_model, "written": wrote}
        dump_json({**extra, **placement.model_dump(mode="json")})
        return
    sys.stdout.write(placement_table(placement))
    state = "written" if wrote else "not written"
    if not placed.changed:
        print(f"\n{env / PLACEMENT_FILE}: {state}; no instance changed, so no node needs a playbook run")
        return
    print(f"\n{env / PLACEMENT_FILE}: {state}; nodes changed: {', '.join(placed.changed)}")
    for model, change in placed.by_model.items():
        # New instances first, so the model keeps its capacity while the old ones go.
        for playbook in ("deploy", "undeploy"):
            if change[playbook]:
                print(
                    f"apply: ansible-playbook -i {env} {playbook}-model.yml -e model={model} "
                    f"--limit '{','.join(change[playbook])},gateways'"
                )


def placement_table(placement: FleetPlacement) -> str:
    lines = [f"{'NODE':24} {'KIND':22} {'INSTANCE':36} {'PORT':>5}  GPUS"]
    for name, node in placement.nodes.items():
        kind = node.describe + (" (drained)" if node.drained else "")
        if not node.instances:
            lines.append(f"{name:24} {kind:22} {'-':36} {'':>5}  free {node.gpus_free}")
        for inst in node.instances:
            port = "" if inst.port is None else str(inst.port)
            gpus = ",".join(map(str, inst.gpus)) or "-"
            lines.append(f"{name:24} {kind:22} {inst.name:36} {port:>5}  {gpus}")
    return "\n".join(lines) + "\n"


def cmd_fleet_place(args: argparse.Namespace) -> int:
    spec = load_spec(args.inventory / SPEC_FILE)
    if args.policy:
        spec = spec.model_copy(update={"policy": args.policy})
    placed = _place(args, spec)
    path = args.inventory / PLACEMENT_FILE
    if args.check:
        current = path.exists() and path.read_text(encoding="utf-8") == placed.text
        _report(args, placed, False)
        if not current:
            print(f"{path} is not current: run llmfleet fleet place", file=sys.stderr)
        return EXIT_OK if current else EXIT_FAILED
    _report(args, placed, write_placement(args.inventory, placed.text))
    return EXIT_OK


def cmd_fleet_show(args: argparse.Namespace) -> int:
    previous, _ = read_previous(args.inventory)
    if not previous:
        raise FleetError(f"{args.inventory / PLACEMENT_FILE}: no placement yet; run llmfleet fleet place")
    _report(args, _place(args, load_spec(args.inventory / SPEC_FILE)), False)
    return EXIT_OK


def _change(args: argparse.Namespace, spec: FleetSpec) -> int:
    """Place the changed spec; write fleet.yml and the placement only when it places."""
    placed = _place(args, spec)
    (args.inventory / SPEC_FILE).write_text(render_spec(spec), encoding="utf-8")
    _report(args, placed, write_placement(args.inventory, placed.text))
    return EXIT_OK


def cmd_fleet_scale(args: argparse.Namespace) -> int:
    spec = load_spec(args.inventory / SPEC_FILE)
    old = spec.models.get(args.model, ModelWant(replicas=0))
    want = ModelWant.model_validate({**old.model_dump(), "replicas": args.replicas})
    return _change(args, spec.model_copy(update={"models": {**spec.models, args.model: want}}))


def cmd_fleet_remove(args: argparse.Namespace) -> int:
    spec = load_spec(args.inventory / SPEC_FILE)
    if args.model not in spec.models:
        raise UsageError(
            f"MODEL: {args.model!r} is not in {args.inventory / SPEC_FILE}; "
            f"it has {', '.join(spec.models) or 'none'}"
        )
    models = {m: w for m, w in spec.models.items() if m != args.model}
    return _change(args, spec.model_copy(update={"models": models}))


def _set_drained(args: argparse.Namespace, drained: bool) -> int:
    spec = load_spec(args.inventory / SPEC_FILE)
    if args.node not in spec.nodes:
        raise UsageError(
            f"NODE: {args.node!r} is not in {args.inventory / SPEC_FILE}; it has {', '.join(spec.nodes)}"
        )
    node = spec.nodes[args.node].model_copy(update={"drained": drained})
    return _change(args, spec.model_copy(update={"nodes": {**spec.nodes, args.node: node}}))


def cmd_fleet_drain(args: argparse.Namespace) -> int:
    return _set_drained(args, True)


def cmd_fleet_undrain(args: argparse.Namespace) -> int:
    return _set_drained(args, False)


def cmd_fleet_add_node(args: argparse.Namespace) -> int:
    path = args.inventory / SPEC_FILE
    spec = load_spec(path) if path.exists() else None
    if spec is not None and args.node in spec.nodes:
        raise UsageError(f"NODE: {args.node!r} is in {path} already; edit it there, or pick another name")
    fields = {
        "profile": "cpu" if args.memory_gib is not None else "gpu",
        "gpu": args.gpu,
        "gpus": args.gpus,
        "instance_type": args.instance_type,
        "facts": args.facts,
        "numa_nodes": args.numa_nodes,
        "cpus": args.cpus,
        "memory_gib": args.memory_gib,
    }
    try:
        node = Node.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        problem = validation_summary(exc)
        raise UsageError(
            f"add-node {args.node}: {problem}. Give --gpu and --gpus, --instance-type, --facts, or "
            "--cpus with --memory-gib"
        ) from None
    if spec is None:
        spec = FleetSpec(nodes={args.node: node})
    else:
        spec = spec.model_copy(update={"nodes": {**spec.nodes, args.node: node}})
    return _change(args, spec)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``fleet`` and its actions to the ``llmfleet`` subcommands."""
    fleet = add_group(
        sub, "fleet", "place models across the fleet's nodes (fleet.yml -> fleet-placement.yml)"
    )

    def command(name: str, func, help_text: str) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        p = add_command(fleet, name, func, help_text)
        p.add_argument(
            "--inventory", type=Path, required=True, help="the inventory directory, e.g. inventories/prod"
        )
        p.add_argument("--gpu-catalog", type=Path, default=DEFAULT_GPU_CATALOG)
        p.add_argument("--json", action="store_true", help="the placement as JSON")
        return p

    p = command("place", cmd_fleet_place, "place fleet.yml's models on its nodes; write fleet-placement.yml")
    p.add_argument("--rebalance", action="store_true", help="place every instance afresh (moves what runs)")
    p.add_argument(
        "--policy", choices=["binpack", "spread"], default=None, help="override fleet.yml's policy"
    )
    p.add_argument("--check", action="store_true", help="exit 1 when fleet-placement.yml is not current")
    command("show", cmd_fleet_show, "the placement, node by node")
    p = command("scale", cmd_fleet_scale, "set a model's replicas (adds the model); place again")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("replicas", metavar="REPLICAS", type=non_negative_int)
    p = command("remove", cmd_fleet_remove, "remove a model from the fleet; place again")
    p.add_argument("model", metavar="MODEL")
    p = command("drain", cmd_fleet_drain, "take a node out for maintenance: its instances move; place again")
    p.add_argument("node", metavar="NODE")
    p = command("undrain", cmd_fleet_undrain, "put a drained node back; place again (nothing moves back)")
    p.add_argument("node", metavar="NODE")
    p = command("add-node", cmd_fleet_add_node, "add a node to fleet.yml (creating it); place again")
    p.add_argument("node", metavar="NODE")
    p.add_argument("--gpu", help="GPU name in catalog/gpus.yml")
    p.add_argument("--gpus", type=positive_int, help="how many GPUs")
    p.add_argument("--instance-type", help="AWS instance type in catalog/gpus.yml")
    p.add_argument("--facts", help="`llmfleet gpu-facts` JSON, relative to the inventory directory")
    p.add_argument("--numa-nodes", type=positive_int, default=None)
    p.add_argument("--cpus", type=positive_int, default=None)
    p.add_argument("--memory-gib", type=float, default=None, help="a CPU node's memory")
