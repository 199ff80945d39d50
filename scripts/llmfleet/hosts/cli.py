"""``llmfleet host-facts``, ``gpu-facts``, ``preflight gpu`` and ``inventory from-terraform``: what a host is.

``host-facts`` and ``gpu-facts`` describe the host; ``preflight gpu`` is the check before launch.

Both print JSON on stdout. ``preflight gpu`` exits 1 when a check refuses, after printing every refusal (each
names its fix), so the preflight role can show them all at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmfleet.cliargs import EXIT_OK, add_command, add_group, dump_json
from llmfleet.errors import CompatError
from llmfleet.hosts.facts import gather as gather_host_facts
from llmfleet.hosts.gpucompat import DEFAULT_COMPAT, load_compat, preflight
from llmfleet.hosts.tfinventory import register as register_inventory
from llmfleet.hosts.topology import gather


def _topology(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    return gather(sysfs_root=args.sysfs_root, fixture_dir=args.fixture)


def cmd_host_facts(args: argparse.Namespace) -> int:
    facts, gpus = gather_host_facts()
    dump_json({**facts.model_dump(), "gpus": gpus})
    return EXIT_OK


def cmd_gpu_facts(args: argparse.Namespace) -> int:
    topo = _topology(args)
    json.dump(topo.model_dump(mode="json"), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


def cmd_preflight_gpu(args: argparse.Namespace) -> int:
    plan = None
    if args.plan_json:
        text = sys.stdin.read() if args.plan_json == "-" else Path(args.plan_json).read_text(encoding="utf-8")
        try:
            plan = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CompatError(f"--plan-json {args.plan_json} is not JSON: {exc}") from None
    result = preflight(_topology(args), load_compat(args.compat), args.image_version, plan, args.host)
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    for refusal in result["refusals"]:
        print(f"llmfleet: refused ({refusal['check']}): {refusal['message']}", file=sys.stderr)
    return 0 if result["ok"] else 1


def _source_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sysfs-root", type=Path, default=Path("/sys"), help="where sysfs is (default /sys)")
    p.add_argument(
        "--fixture",
        type=Path,
        default=None,
        help="read recorded nvidia-smi output and sysfs from this folder instead (tests/fixtures/nvidia/*)",
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``host-facts``, ``gpu-facts``, ``preflight gpu`` and ``inventory`` to the subcommands."""
    add_command(sub, "host-facts", cmd_host_facts, "print this host's CPUs, memory and GPUs as JSON")
    text = "print this GPU host's topology as JSON: GPUs, PCI ids, NUMA nodes, local CPUs, NVLink islands"
    p = sub.add_parser("gpu-facts", help=text, description=text)
    _source_arguments(p)
    p.set_defaults(func=cmd_gpu_facts)

    pre_sub = add_group(sub, "preflight", "checks before anything starts on a host", metavar="CHECK")
    text = (
        "check driver vs the image's CUDA, GPU count/model vs the plan, planned memory vs free, "
        "NUMA placement; prints JSON with each instance's cpuset"
    )
    p = pre_sub.add_parser("gpu", help=text, description=text)
    p.add_argument("--image-version", required=True, help="a vLLM image version from images/compat.yml")
    p.add_argument("--plan-json", help="`llmfleet capacity plan --json` output (a file, or - for stdin)")
    p.add_argument("--host", help="which node of the plan this host is (default: the first)")
    p.add_argument("--compat", type=Path, default=DEFAULT_COMPAT, help="the compatibility matrix")
    _source_arguments(p)
    p.set_defaults(func=cmd_preflight_gpu)
    register_inventory(sub)
