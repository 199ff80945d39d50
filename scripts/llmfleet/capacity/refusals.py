"""The refusal message when nothing fits: the cause, and the nearest candidate that does fit."""

from __future__ import annotations

from llmfleet.capacity.fit import Candidate, enumerate_candidates, evaluate
from llmfleet.capacity.modelconfig import ModelArch
from llmfleet.capacity.options import MIB, GpuSpec, PlanOptions, Serving, resolve_gpu, resolve_serving
from llmfleet.catalog.gpus import GpuCatalog
from llmfleet.errors import CapacityError


def _nearest_fit(cands: list[Candidate], gpus: int) -> Candidate | None:
    fits = [c for c in cands if c.fits]
    if not fits:
        return None
    return min(fits, key=lambda c: (abs(c.gpus_per_instance - gpus), c.gpus_per_instance, c.tp, c.pp))


def _readable_len(n: int) -> int:
    """A max-model-len suggestion: ``n`` rounded down to a multiple of 1024 when that is at least 1024."""
    return n // 1024 * 1024 if n >= 1024 else n


def refusal(
    arch: ModelArch,
    serving: Serving,
    gpu: GpuSpec,
    options: PlanOptions,
    cands: list[Candidate],
    catalog: GpuCatalog,
    weight_scale: float,
    asked: Candidate | None,
) -> str:
    """The refusal message: the cause, and the nearest candidate that fits (another TP x PP, a shorter
    --max-model-len, an fp8 KV cache, or a bigger card from the catalog)."""
    if asked is not None:
        head = (
            f"{arch.name} does not fit on {asked.gpus_per_instance}x {gpu.name} "
            f"at TP={asked.tp} PP={asked.pp}"
        )
        cause = asked.reason or ""
        basis = asked
    else:
        head = f"{arch.name} fits no TP x PP on {options.gpus_per_node}x {gpu.name}"
        valid = [c for c in cands if c.valid]
        basis = (
            max(valid, key=lambda c: (c.gpus_per_instance, c.max_model_len_that_fits, -c.tp))
            if valid
            else None
        )
        cause = (
            f"with all {basis.gpus_per_instance} GPUs (TP={basis.tp} PP={basis.pp}): {basis.reason}"
            if basis
            else "; ".join(sorted({c.reason or "" for c in cands}))
        )
    options_left: list[str] = []
    near = _nearest_fit(cands, asked.gpus_per_instance if asked else options.gpus_per_node)
    if near is not None:
        options_left.append(near.summary(gpu.name))
    if basis is not None and basis.valid and basis.max_model_len_that_fits > 0:
        options_left.append(
            f"--max-model-len {_readable_len(basis.max_model_len_that_fits)} at TP={basis.tp} PP={basis.pp}"
        )
    if serving.kv_cache_dtype == "auto" and basis is not None and basis.valid:
        fp8_opts = options.model_copy(update={"kv_cache_dtype": "fp8"})
        fp8_serving = serving.model_copy(update={"kv_cache_dtype": "fp8", "kv_dtype_bytes": 1})
        trial = evaluate(arch, fp8_serving, gpu, fp8_opts, basis.tp, basis.pp, weight_scale)
        if trial.fits:
            options_left.append(f"--kv-cache-dtype fp8 at TP={basis.tp} PP={basis.pp}")
    if near is None and gpu.from_catalog:
        for name, spec in sorted(catalog.gpus.items(), key=lambda kv_: kv_[1].memory_mib):
            if spec.memory_mib <= gpu.memory_bytes // MIB:
                continue
            other = resolve_gpu(catalog, name)
            try:
                other_serving = resolve_serving(arch, options.model_copy(update={"gpu": name}), other)
            except CapacityError:
                continue
            found = _nearest_fit(
                enumerate_candidates(arch, other_serving, other, options, weight_scale), options.gpus_per_node
            )
            if found is not None:
                options_left.append(f"--gpu {name}: " + found.summary(name))
                break
    nearest = " Nearest fit: " + ", or ".join(options_left) + "." if options_left else " Nothing nearby fits."
    return f"{head}: {cause}.{nearest}"
