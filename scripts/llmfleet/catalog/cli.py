"""``llmfleet catalog check|list|show``: the model catalog's subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from llmfleet.catalog.models import load_catalog
from llmfleet.cliargs import EXIT_OK, add_command, dump_json


def cmd_catalog_check(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    print(f"catalog OK: {len(catalog.models)} model(s), default {catalog.default_model}")
    return EXIT_OK


def cmd_catalog_list(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    if args.json:
        dump_json({"default_model": catalog.default_model, "models": sorted(catalog.models)})
    else:
        for name, entry in sorted(catalog.models.items()):
            mark = "*" if name == catalog.default_model else " "
            print(f"{mark} {name:32} {entry.task:9} {','.join(entry.profiles):8} {entry.source.kind}")
    return EXIT_OK


def cmd_catalog_show(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    dump_json(catalog.get(args.model).model_dump(mode="json"))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``catalog`` and its actions to the ``llmfleet`` subcommands."""

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str, parent=sub):  # type: ignore[no-untyped-def]
        return add_command(parent, name, func, help_text)

    catalog = sub.add_parser("catalog", help="validate and list the model catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    add("check", cmd_catalog_check, "validate the catalog; errors name the model and field", catalog_sub)
    p = add("list", cmd_catalog_list, "list the models (* marks the default)", catalog_sub)
    p.add_argument("--json", action="store_true")
    p = add("show", cmd_catalog_show, "print one model's entry as JSON", catalog_sub)
    p.add_argument("model")
