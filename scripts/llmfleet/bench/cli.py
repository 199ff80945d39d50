"""``llmfleet bench run|compare|list|crosscheck`` and ``llmfleet sweep``: argparse only; the work is
elsewhere in this package."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmfleet.cliargs import add_group, positive_float, positive_int
from llmfleet.deploy.registry import DEFAULT_REGISTRY_DIR

DEFAULT_DB = Path("bench/results/results.sqlite")


def cmd_bench_run(args: argparse.Namespace) -> int:
    from llmfleet.bench.profile import load_profile
    from llmfleet.bench.runner import resolve_target, run_profile
    from llmfleet.bench.store import ResultStore

    profile = load_profile(args.profile)
    model = args.model or _default_model(args)
    resolved = resolve_target(
        model,
        args.target,
        args.api or profile.api,
        args.registry,
        args.base_url,
        args.api_key_file,
        args.tokenizer,
    )
    if args.api and args.api != profile.api:
        profile = profile.model_copy(update={"api": args.api})
    with ResultStore(args.db) as store:
        try:
            run = run_profile(profile, resolved, store, args.registry, label=args.label)
        except KeyboardInterrupt:
            return 130
        if args.json:
            print(json.dumps({"run_id": run.id, "status": run.status, "db": str(args.db)}))
        else:
            from llmfleet.bench.compare import compare_table

            print(compare_table([store.load_run(run.id)]), end="")
            print(f"run {run.id} ({run.status}) stored in {args.db}")
    return 0 if run.status == "complete" else 1


def _default_model(args: argparse.Namespace) -> str:
    from llmfleet.catalog.models import load_catalog

    return load_catalog(getattr(args, "catalog", None)).default_model


def cmd_bench_list(args: argparse.Namespace) -> int:
    from llmfleet.bench.store import ResultStore

    with ResultStore(args.db) as store:
        rows = store.list_runs()
    print(f"{'RUN':24} {'CREATED':21} {'STATUS':12} {'PROFILE':16} {'TARGET':9} LABEL")
    for run_id, created, label, status, profile, target in rows:
        print(f"{run_id:24} {created:21} {status:12} {profile:16} {target:9} {label}")
    return 0


def cmd_bench_compare(args: argparse.Namespace) -> int:
    from llmfleet.bench.compare import compare_report, plot_runs
    from llmfleet.bench.store import ResultStore

    with ResultStore(args.db) as store:
        runs = [store.load_run(r) for r in args.runs]
    report = compare_report(runs)
    print(report, end="")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.md").write_text(report, encoding="utf-8")
        written = [args.out / "compare.md"]
        if not args.no_plots:
            written += plot_runs(runs, args.out)
        print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def cmd_bench_crosscheck(args: argparse.Namespace) -> int:
    from llmfleet.bench.crosscheck import crosscheck

    model = args.model or _default_model(args)
    result = crosscheck(
        model=model,
        target=args.target,
        registry_dir=args.registry,
        db=args.db,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        concurrency=args.concurrency,
        requests=args.requests,
        vllm_python=args.vllm_python,
        tolerance=args.tolerance,
        out=args.out,
        rounds=args.rounds,
    )
    print(result.report, end="")
    return 0 if result.agree else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    from llmfleet.bench.sweep import run_sweep

    outcome = run_sweep(
        model=args.model,
        vary=args.vary,
        profile_path=args.profile,
        objective=args.objective,
        slos=args.slo,
        db=args.db,
        write_to=args.write_to,
        report_dir=args.report_dir,
        deploy_timeout_s=args.deploy_timeout,
        keep_going=args.keep_going,
    )
    print(outcome.summary, end="")
    return 0 if outcome.winner is not None else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"results database (default {DEFAULT_DB})")

    bench_sub = add_group(sub, "bench", "benchmark a deployment; compare runs")

    p = bench_sub.add_parser("run", help="run a workload profile against a deployment; store the results")
    p.set_defaults(func=cmd_bench_run)
    p.add_argument("--profile", type=Path, required=True, help="workload profile YAML (see bench/profiles/)")
    p.add_argument(
        "--target",
        choices=["gateway", "instance"],
        default="gateway",
        help="through the gateway (with its key) or straight to the first instance",
    )
    p.add_argument("--model", help="deployed model (default: the catalog's default)")
    p.add_argument(
        "--base-url", help="override the URL from the deployment record (loopback only), e.g. .../v1"
    )
    p.add_argument(
        "--api-key-file", type=Path, help="override the gateway key file from the deployment record"
    )
    p.add_argument("--tokenizer", type=Path, help="folder with tokenizer.json (default: the served weights)")
    p.add_argument("--api", choices=["completions", "chat"], help="override the profile's api")
    p.add_argument("--label", default="", help="a name for this run in compare tables")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)
    p.add_argument("--json", action="store_true", help="print only the run id as JSON")
    common(p)

    p = bench_sub.add_parser("list", help="list the stored runs")
    p.set_defaults(func=cmd_bench_list)
    common(p)

    p = bench_sub.add_parser("compare", help="runs side by side: a table, and PNG plots with --out")
    p.set_defaults(func=cmd_bench_compare)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or labels) from `bench list`")
    p.add_argument("--out", type=Path, help="report folder: compare.md, ttft.png, throughput.png")
    p.add_argument("--no-plots", action="store_true")
    common(p)

    p = bench_sub.add_parser(
        "crosscheck",
        help="run this bench and `vllm bench serve` on the same workload; compare within a tolerance",
    )
    p.set_defaults(func=cmd_bench_crosscheck)
    p.add_argument("--model", help="deployed model (default: the catalog's default)")
    p.add_argument("--target", choices=["gateway", "instance"], default="instance")
    p.add_argument("--input-tokens", type=positive_int, default=128)
    p.add_argument("--output-tokens", type=positive_int, default=64)
    p.add_argument("--concurrency", type=positive_int, default=4)
    p.add_argument("--requests", type=positive_int, default=16)
    p.add_argument(
        "--tolerance", type=positive_float, default=0.10, help="largest relative difference accepted"
    )
    p.add_argument(
        "--rounds", type=positive_int, default=2, help="ABBA rounds: 2 runs ours, vllm, vllm, ours"
    )
    p.add_argument("--vllm-python", default="/opt/llmfleet/vllm-venv/bin/python")
    p.add_argument("--out", type=Path, help="folder for the vllm bench serve JSON and the report")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_DIR)
    common(p)

    p = sub.add_parser(
        "sweep",
        help="deploy candidate configurations (isolated ports and dirs), benchmark each, keep the best",
    )
    p.set_defaults(func=cmd_sweep)
    p.add_argument("--model", required=True)
    p.add_argument(
        "--vary",
        action="append",
        required=True,
        metavar="KNOB=V1,V2",
        help="a tunable knob and its values, e.g. max_num_seqs=4,16 (repeat for a grid)",
    )
    p.add_argument("--profile", type=Path, required=True)
    p.add_argument(
        "--objective",
        default="max:output_throughput",
        help="max:METRIC or min:METRIC over the steps that meet every SLO (default max:output_throughput)",
    )
    p.add_argument("--slo", action="append", default=[], help="e.g. 'p95_ttft_ms<2000' (repeatable)")
    p.add_argument(
        "--write-to",
        type=Path,
        default=None,
        help="where the winner goes (default inventories/local/sweeps/MODEL.yml)",
    )
    p.add_argument(
        "--report-dir", type=Path, default=None, help="compare report folder (default bench/results/sweep-ID)"
    )
    p.add_argument("--deploy-timeout", type=positive_float, default=1800.0, help="seconds per deploy")
    p.add_argument(
        "--keep-going", action="store_true", help="a candidate that fails to deploy is skipped, not fatal"
    )
    common(p)
