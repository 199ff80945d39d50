"""``llmfleet catalog check|list|show``: the model catalog's subcommands."""

from __future__ import annotations

import argparse

from llmfleet.catalog.models import load_catalog
from llmfleet.cliargs import EXIT_OK, add_command, add_group, dump_json


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

    catalog_sub = add_group(sub, "catalog", "validate and list the model catalog")
    add_command(
        catalog_sub, "check", cmd_catalog_check, "validate the catalog; errors name the model and field"
    )
    p = add_command(catalog_sub, "list", cmd_catalog_list, "list the models (* marks the default)")
    p.add_argument("--json", action="store_true")
    p = add_command(catalog_sub, "show", cmd_catalog_show, "print one model's entry as JSON")
    p.add_argument("model")
