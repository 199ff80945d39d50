"""What the operator chooses for a capacity plan (PlanOptions, Reserve, EmbeddingOptions), the GPU it is
for (GpuSpec from catalog/gpus.yml) and how vLLM will hold the model on it (Serving: dtype, quantization,
KV cache dtype)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmfleet.capacity import kv
from llmfleet.capacity.modelconfig import ModelArch, Quantization
from llmfleet.catalog.gpus import GpuCatalog
from llmfleet.errors import CapacityError

GIB = 1024**3
MIB = 1024**2


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


class Reserve(BaseModel):
    """Non-KV memory per GPU that vLLM's profiling run takes besides the weights (explicit, not measured).

    activation: the peak of the profiling forward pass (max_num_batched_tokens of activations, sampler
    logits); cuda_graph: the captured CUDA graphs (vLLM estimates them since v0.21); framework: the CUDA
    context, cuBLAS/NCCL workspaces and other non-torch memory. The defaults (1.0 + 0.5 + 1.0 GiB) are an
    estimate for an 8B-class model at vLLM's default batch sizes; raise them for large vocabularies or
    long prefill chunks, and compare with vLLM's "Available KV cache memory" log line.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    activation_gib: float = Field(default=1.0, ge=0)
    cuda_graph_gib: float = Field(default=0.5, ge=0)
    framework_gib: float = Field(default=1.0, ge=0)

    @property
    def bytes(self) -> int:
        return int((self.activation_gib + self.cuda_graph_gib + self.framework_gib) * GIB)


# An embedding replica: no CUDA graphs with enforce-eager pooling, small activations.
EMBEDDING_RESERVE = Reserve(activation_gib=0.25, cuda_graph_gib=0.0, framework_gib=0.75)


class GpuSpec(BaseModel):
    """The card the plan is for: from catalog/gpus.yml, or given by --gpu-memory-gib."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    memory_bytes: int = Field(gt=0)
    interconnect: Literal["nvlink", "pcie", "unknown"]
    bf16: bool
    fp8: bool
    compute_capability: str | None
    from_catalog: bool


def resolve_gpu(catalog: GpuCatalog, name: str, memory_gib: float | None = None) -> GpuSpec:
    """The GPU ``name`` from the catalog; ``memory_gib`` overrides its memory, or describes a card the
    catalog does not list (its capabilities are then assumed, not checked)."""
    if name in catalog.gpus:
        g = catalog.gpus[name]
        memory = int(memory_gib * GIB) if memory_gib else g.memory_bytes
        return GpuSpec(
            name=name,
            memory_bytes=memory,
            interconnect=g.interconnect,
            bf16=g.bf16,
            fp8=g.fp8,
            compute_capability=g.compute_capability,
            from_catalog=True,
        )
    if memory_gib is None:
        catalog.get(name)  # raises the catalog's "unknown GPU" error, which names --gpu-memory-gib
    return GpuSpec(
        name=name,
        memory_bytes=int(memory_gib * GIB),
        interconnect="unknown",
        bf16=True,
        fp8=True,
        compute_capability=None,
        from_catalog=False,
    )


class EmbeddingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(default=2, ge=1)
    max_model_len: int | None = Field(default=None, gt=0)
    reserve: Reserve = EMBEDDING_RESERVE


class PlanOptions(BaseModel):
    """Everything the operator chooses; the model and the GPU catalog are the other inputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu: str
    gpu_memory_gib: float | None = Field(default=None, gt=0)
    gpus_per_node: int = Field(ge=1, le=64)
    nodes: int = Field(default=1, ge=1, le=1024)
    max_model_len: int = Field(gt=0)
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    dtype: Literal["auto", "bfloat16", "float16"] = "auto"
    quantization: Literal["auto", "fp8"] = "auto"
    block_size: int = Field(default=kv.VLLM_BLOCK_SIZE, ge=1)
    max_num_seqs: int = Field(default=256, ge=1)
    reserve: Reserve = Reserve()
    tp: int | None = Field(default=None, ge=1)
    pp: int | None = Field(default=None, ge=1)
    numa_nodes: int = Field(default=1, ge=1)
    cpus_per_node: int = Field(default=0, ge=0)
    base_port: int = Field(default=8100, ge=1024, le=65000)
    hosts: list[str] | None = None
    allow_long_max_model_len: bool = False
    embedding: EmbeddingOptions | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PlanOptions:
        if self.gpus_per_node % self.numa_nodes:
            raise ValueError(
                f"gpus_per_node ({self.gpus_per_node}) must be a multiple of numa_nodes ({self.numa_nodes})"
            )
        if self.cpus_per_node % self.numa_nodes:
            raise ValueError(
                f"cpus_per_node ({self.cpus_per_node}) must be a multiple of numa_nodes ({self.numa_nodes})"
            )
        if self.hosts is not None and len(self.hosts) != self.nodes:
            raise ValueError(f"{len(self.hosts)} host name(s) given for {self.nodes} node(s)")
        return self


class Serving(BaseModel):
    """How vLLM will hold the model: dtype, weight quantization, KV cache dtype."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: Literal["bfloat16", "float16"]
    quantization: Quantization
    quantization_arg: str | None
    kv_cache_dtype: str
    kv_dtype_bytes: int


def resolve_serving(arch: ModelArch, options: PlanOptions, gpu: GpuSpec) -> Serving:
    """vLLM's ``--dtype auto``: the config's dtype; float32 becomes bfloat16 (float16 on cards without
    bf16); bfloat16 becomes float16 on cards without bf16; AWQ/GPTQ run in float16."""
    if options.dtype != "auto":
        dtype = options.dtype
        if dtype == "bfloat16" and not gpu.bf16:
            raise CapacityError(f"{gpu.name} has no bfloat16 support; use --dtype float16 or auto")
    elif arch.quantization.method in ("awq", "gptq"):
        dtype = "float16"
    elif arch.dtype in ("float32", "bfloat16"):
        dtype = "bfloat16" if gpu.bf16 else "float16"
    else:
        dtype = "float16"
    quant, arg = arch.quantization, None
    if options.quantization == "fp8" and quant.method != "fp8":
        if quant.method != "none":
            raise CapacityError(
                f"{arch.name} is already {quant.method}-quantized; --quantization fp8 needs an unquantized "
                "checkpoint"
            )
        quant, arg = Quantization(method="fp8", bits=8), "fp8"
    cc = float(gpu.compute_capability) if gpu.compute_capability else None
    if cc is not None:
        if quant.method == "fp8" and cc < 8.0:
            raise CapacityError(
                f"fp8 weights need compute capability 8.0 or newer (Marlin fp8 on Ampere, native from 8.9); "
                f"{gpu.name} is {gpu.compute_capability}. Pick another --gpu or an unquantized model"
            )
        if quant.method in ("awq", "gptq") and cc < 7.5:
            raise CapacityError(f"{quant.method} needs compute capability 7.5 or newer; {gpu.name} is {cc}")
        if options.kv_cache_dtype != "auto" and cc < 8.0:
            raise CapacityError(
                f"an fp8 KV cache needs compute capability 8.0 or newer; {gpu.name} is "
                f"{gpu.compute_capability}. "
                "Use --kv-cache-dtype auto"
            )
    return Serving(
        dtype=dtype,
        quantization=quant,
        quantization_arg=arg,
        kv_cache_dtype=options.kv_cache_dtype,
        kv_dtype_bytes=kv.kv_dtype_bytes(options.kv_cache_dtype, dtype),
    )
