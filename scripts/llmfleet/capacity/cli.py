"""``llmfleet capacity plan|render``: the capacity planner's subcommands.

``llmfleet.cli`` calls :func:`register` on its subparsers; nothing else in the CLI knows about them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmfleet.capacity.candidates import plan_capacity
from llmfleet.capacity.modelconfig import load_model
from llmfleet.capacity.options import EmbeddingOptions, PlanOptions, Reserve
from llmfleet.capacity.render import plan_json, plan_table, render_inventory, write_inventory
from llmfleet.catalog.gpus import DEFAULT_GPU_CATALOG, load_gpu_catalog
from llmfleet.cliargs import add_group
from llmfleet.errors import CapacityError, CapacityRefusal


def _options(args: argparse.Namespace) -> PlanOptions:
    try:
        return PlanOptions(
            gpu=args.gpu,
            gpu_memory_gib=args.gpu_memory_gib,
            gpus_per_node=args.gpus_per_node,
            nodes=args.nodes,
            max_model_len=args.max_model_len,
            kv_cache_dtype=args.kv_cache_dtype,
            gpu_memory_utilization=args.gpu_memory_utilization,
            dtype=args.dtype,
            quantization=args.quantization,
            block_size=args.block_size,
            max_num_seqs=args.max_num_seqs,
            reserve=Reserve(
                activation_gib=args.reserve_activation_gib,
                cuda_graph_gib=args.reserve_cuda_graph_gib,
                framework_gib=args.reserve_framework_gib,
            ),
            tp=args.tp,
            pp=args.pp,
            numa_nodes=args.numa_nodes,
            cpus_per_node=args.cpus_per_node,
            base_port=args.base_port,
            hosts=args.hosts.split(",") if args.hosts else None,
            allow_long_max_model_len=args.allow_long_max_model_len,
            embedding=EmbeddingOptions(replicas=args.embedding_replicas) if args.embedding_config else None,
        )
    except ValueError as exc:
        problems = getattr(exc, "errors", None)
        if callable(problems):
            detail = "; ".join(
                f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-') or 'options'}: {e['msg']}"
                for e in problems()
            )
        else:
            detail = str(exc)
        raise CapacityError(f"invalid options: {detail}") from None


def _plan(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    arch, source = load_model(args.config)
    if args.name:
        arch = arch.model_copy(update={"name": args.name})
    embedding = None
    if args.embedding_config:
        e_arch, e_source = load_model(args.embedding_config)
        if args.embedding_name:
            e_arch = e_arch.model_copy(update={"name": args.embedding_name})
        embedding = (e_arch, e_source)
    return plan_capacity(arch, source, _options(args), load_gpu_catalog(args.gpu_catalog), embedding)


def cmd_capacity_plan(args: argparse.Namespace) -> int:
    try:
        plan = _plan(args)
    except CapacityRefusal as refused:
        if args.json:
            # A tool still gets every candidate and why it does not fit; the exit code says no.
            report = {"fits": False, "reason": str(refused), "candidates": refused.candidates}
            json.dump(report, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
        raise
    if args.json:
        json.dump(plan_json(plan), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(plan_table(plan))
    return 0


def cmd_capacity_render(args: argparse.Namespace) -> int:
    plan = _plan(args)
    command = args.command_line or None
    files = render_inventory(plan, args.env, command)
    if args.out is None:
        for rel, text in files.items():
            sys.stdout.write(f"# ==> {rel} <==\n{text}")
        return 0
    for path in write_inventory(files, args.out):
        print(path)
    return 0


def _add_plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="the model's config.json, or its directory")
    p.add_argument(
        "--name", help="served model name (default: its Hugging Face folder, or the file name of --config)"
    )
    p.add_argument("--gpu", required=True, help="GPU name from catalog/gpus.yml, e.g. L4-24GB")
    p.add_argument("--gpu-memory-gib", type=float, help="memory per GPU, for a card not in the catalog")
    p.add_argument("--gpu-catalog", type=Path, default=DEFAULT_GPU_CATALOG)
    p.add_argument("--gpus-per-node", type=int, required=True)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--max-model-len", type=int, required=True)
    p.add_argument("--kv-cache-dtype", choices=["auto", "fp8", "fp8_e4m3", "fp8_e5m2"], default="auto")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float16"], default="auto")
    p.add_argument(
        "--quantization", choices=["auto", "fp8"], default="auto", help="fp8: vLLM's online fp8 weights"
    )
    p.add_argument("--block-size", type=int, default=16, help="KV block size (vLLM's default 16)")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--reserve-activation-gib", type=float, default=Reserve().activation_gib)
    p.add_argument("--reserve-cuda-graph-gib", type=float, default=Reserve().cuda_graph_gib)
    p.add_argument("--reserve-framework-gib", type=float, default=Reserve().framework_gib)
    p.add_argument(
        "--tp", type=int, help="force this tensor-parallel size (refused with a reason if it fails)"
    )
    p.add_argument("--pp", type=int, help="force this pipeline-parallel size")
    p.add_argument(
        "--numa-nodes", type=int, default=1, help="NUMA nodes per host (GPUs and CPUs split evenly)"
    )
    p.add_argument("--cpus-per-node", type=int, default=0, help="CPU cores per host to pin (0: do not pin)")
    p.add_argument("--base-port", type=int, default=8100)
    p.add_argument("--hosts", help="comma-separated host names, one per node (default gpu-node-01, ...)")
    p.add_argument("--allow-long-max-model-len", action="store_true")
    p.add_argument("--embedding-config", type=Path, help="co-locate replicas of this embedding model")
    p.add_argument("--embedding-name")
    p.add_argument("--embedding-replicas", type=int, default=2)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``capacity plan`` and ``capacity render`` to the ``llmfleet`` subparsers."""
    capacity_sub = add_group(sub, "capacity", "GPU capacity planner: TP x PP, KV cache, replicas, inventory")
    text = "prove a model fits GPUs before launch; rank every TP x PP (table, or --json)"
    p = capacity_sub.add_parser("plan", help=text, description=text)
    _add_plan_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_capacity_plan)
    text = "render inventories/<env>/ host_vars and group_vars from the plan"
    p = capacity_sub.add_parser("render", help=text, description=text)
    _add_plan_arguments(p)
    p.add_argument("--env", required=True, help="inventory name: files go to inventories/<env>/")
    p.add_argument("--out", type=Path, help="repository root to write under (default: print to stdout)")
    p.add_argument(
        "--command-line",
        default=None,
        help="command to record in the generated header (default: none)",
    )
    p.set_defaults(func=cmd_capacity_render)
