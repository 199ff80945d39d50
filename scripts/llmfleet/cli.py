"""The ``llmfleet`` command: each domain package adds its subcommands; this module only dispatches.

Machine-facing subcommands (used by the playbooks) print JSON on stdout; errors go to stderr as one
readable message with a non-zero exit code, never a traceback (``llmfleet.cliargs`` is that one layer,
and lists the exit codes). Where each subcommand lives: ``llmfleet/<domain>/cli.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from llmfleet import __version__
from llmfleet.bench.cli import register as register_bench
from llmfleet.capacity.cli import register as register_capacity
from llmfleet.catalog.cli import register as register_catalog
from llmfleet.cliargs import OneLineParser, flag_names, run
from llmfleet.deploy.cli import register as register_deploy
from llmfleet.fleet.cli import register as register_fleet
from llmfleet.gateway.cli import register as register_gateway
from llmfleet.hosts.cli import register as register_hosts
from llmfleet.weights.cli import register as register_weights

# In the order `llmfleet --help` lists them: what a deploy runs, first to last, then the tools around it.
DOMAINS = (
    register_catalog,
    register_hosts,
    register_deploy,
    register_fleet,
    register_weights,
    register_gateway,
    register_capacity,
    register_bench,
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="llmfleet", description="Plan, deploy and gate open LLMs.")
    parser.add_argument("--version", action="version", version=f"llmfleet {__version__}")
    parser.add_argument(
        "--catalog", type=Path, default=None, help="model catalog (default: catalog/models.yml)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in DOMAINS:
        register(sub)
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
