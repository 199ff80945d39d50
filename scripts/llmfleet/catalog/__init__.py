"""The model catalog (``catalog/models.yml``) and the GPU catalog (``catalog/gpus.yml``): what can be served
and on what. Every other package reads models and GPU types through here."""

from llmfleet.catalog.gpus import DEFAULT_GPU_CATALOG, GpuCatalog, GpuModel, load_gpu_catalog
from llmfleet.catalog.models import Catalog, ModelEntry, load_catalog, revision_id

__all__ = [
    "DEFAULT_GPU_CATALOG",
    "Catalog",
    "GpuCatalog",
    "GpuModel",
    "ModelEntry",
    "load_catalog",
    "load_gpu_catalog",
    "revision_id",
]
