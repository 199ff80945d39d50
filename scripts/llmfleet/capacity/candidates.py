"""Plan a model's GPU capacity: the TP x PP candidates (fit), the best fit or the one forced with
``tp``/``pp``, its placement on every node with co-located embedding replicas (placement), or the refusal
that names the nearest fit (refusals).

The inputs (PlanOptions, Reserve, ...) are in llmfleet.capacity.options; each name is imported from the
module that defines it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from llmfleet.capacity import kv
from llmfleet.capacity.fit import OBJECTIVE, Candidate, enumerate_candidates
from llmfleet.capacity.modelconfig import ModelArch, ModelSource
from llmfleet.capacity.options import (
    EmbeddingOptions,
    GpuSpec,
    PlanOptions,
    Serving,
    resolve_gpu,
    resolve_serving,
)
from llmfleet.capacity.params import checkpoint_weight_bytes, stage_weight_bytes
from llmfleet.capacity.placement import (
    EmbeddingPlan,
    ModelSummary,
    NodePlacement,
    place,
    summarize,
)
from llmfleet.capacity.refusals import refusal
from llmfleet.catalog.gpus import GpuCatalog
from llmfleet.errors import CapacityError, CapacityRefusal


class CapacityPlan(BaseModel):
    """The planner's answer. ``candidates`` is ranked; ``chosen`` indexes it (None when nothing fits)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelSummary
    gpu: GpuSpec
    options: PlanOptions
    serving: Serving
    objective: str
    kv_cache_bytes_per_token: int
    weight_bytes: int
    weight_bytes_from: str
    candidates: list[Candidate]
    chosen: int | None
    embedding: EmbeddingPlan | None
    nodes: list[NodePlacement]


def weight_scale_for(arch: ModelArch, source: ModelSource) -> tuple[float, str]:
    """Scale the computed weights to the checkpoint's stated size: ``checkpoint_bytes / computed``.

    The structure (which GPU holds which part) comes from config.json; the safetensors files, where
    present, correct the total (e.g. for tensors the config does not describe).
    """
    if source.checkpoint_bytes is None:
        return 1.0, "computed from config.json"
    computed = checkpoint_weight_bytes(arch)
    scale = source.checkpoint_bytes / computed
    return (
        scale,
        f"{source.checkpoint_bytes_from} ({source.checkpoint_bytes} bytes; x{scale:.4f} of computed)",
    )


def plan_capacity(
    arch: ModelArch,
    source: ModelSource,
    options: PlanOptions,
    catalog: GpuCatalog,
    embedding: tuple[ModelArch, ModelSource] | None = None,
) -> CapacityPlan:
    """Plan one model (and optional embedding replicas) on ``options.nodes`` identical GPU nodes."""
    gpu = resolve_gpu(catalog, options.gpu, options.gpu_memory_gib)
    if options.max_model_len > arch.max_position_embeddings and not options.allow_long_max_model_len:
        raise CapacityError(
            f"--max-model-len {options.max_model_len} exceeds {arch.name}'s max_position_embeddings "
            f"({arch.max_position_embeddings}); vLLM refuses it. Lower --max-model-len, or pass "
            "--allow-long-max-model-len (VLLM_ALLOW_LONG_MAX_MODEL_LEN=1) for a model with RoPE scaling"
        )
    serving = resolve_serving(arch, options, gpu)
    scale, scale_from = weight_scale_for(arch, source)
    cands = enumerate_candidates(arch, serving, gpu, options, scale)
    asked = None
    if options.tp is not None or options.pp is not None:
        tp, pp = options.tp or 1, options.pp or 1
        if tp * pp > options.gpus_per_node:
            raise CapacityError(
                f"TP={tp} x PP={pp} needs {tp * pp} GPUs per instance; a node has {options.gpus_per_node}. "
                "Instances spanning nodes are not planned; lower --tp/--pp"
            )
        asked = next(c for c in cands if c.tp == tp and c.pp == pp)
        chosen_idx = cands.index(asked) if asked.fits else None
    else:
        chosen_idx = 0 if cands and cands[0].fits else None
    if chosen_idx is None:
        raise CapacityRefusal(
            refusal(arch, serving, gpu, options, cands, catalog, scale, asked),
            [c.model_dump(mode="json") for c in cands],
        )
    chosen = cands[chosen_idx]
    emb_input = None
    if embedding is not None:
        e_arch, _ = embedding
        e_opts = options.embedding or EmbeddingOptions()
        e_serving = resolve_serving(
            e_arch, options.model_copy(update={"quantization": "auto", "kv_cache_dtype": "auto"}), gpu
        )
        emb_input = (e_arch, e_opts, e_serving)
    nodes, emb_plan = place(arch, serving, options, chosen, gpu, emb_input)
    if emb_plan is not None and embedding is not None:
        emb_plan = emb_plan.model_copy(update={"model": summarize(embedding[0], embedding[1])})
    whole = stage_weight_bytes(arch, serving.quantization, serving.dtype, 1, 1)[0]
    return CapacityPlan(
        model=summarize(arch, source),
        gpu=gpu,
        options=options,
        serving=serving,
        objective=OBJECTIVE,
        kv_cache_bytes_per_token=kv.kv_bytes_per_token(arch, serving.kv_dtype_bytes),
        weight_bytes=int(whole * scale),
        weight_bytes_from=scale_from,
        candidates=cands,
        chosen=chosen_idx,
        embedding=emb_plan,
        nodes=nodes,
    )
