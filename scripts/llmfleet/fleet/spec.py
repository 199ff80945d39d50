"""The fleet file, ``inventories/<env>/fleet.yml``: the nodes the fleet has and the models it should serve,
with their replica counts. Operators write it, or change it with ``llmfleet fleet scale|remove|drain|...``;
``llmfleet fleet place`` turns it into the placement (llmfleet.fleet.place)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmfleet.catalog.models import MODEL_NAME
from llmfleet.documents import parse_document
from llmfleet.errors import FleetError

SPEC_FILE = "fleet.yml"
FIELDS_DOC = "docs/fleet.md"
# An Ansible inventory host name, as the placement file writes it under llm_nodes.
NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Node(_Strict):
    """One server. A GPU node names its GPU and count, or an AWS instance type (catalog/gpus.yml), or a
    ``llmfleet gpu-facts`` JSON read on the node itself; a CPU node gives its CPUs and memory."""

    profile: Literal["gpu", "cpu"] = "gpu"
    gpu: str | None = Field(default=None, description="a GPU name of catalog/gpus.yml, e.g. A100-80GB")
    gpus: int | None = Field(default=None, ge=1, le=64)
    instance_type: str | None = Field(default=None, description="an AWS instance type of catalog/gpus.yml")
    facts: str | None = Field(default=None, description="`llmfleet gpu-facts` output, relative to fleet.yml")
    numa_nodes: int = Field(default=1, ge=1, le=8)
    cpus: int = Field(default=0, ge=0, description="CPU cores; on a GPU node, split between its GPUs")
    memory_gib: float | None = Field(default=None, gt=0, description="CPU nodes: the host's memory")
    memory_budget_fraction: float = Field(default=0.8, gt=0, le=1)
    share_cpus: bool = Field(default=False, description="CPU nodes: instances may share CPUs")
    base_port: int = Field(default=8100, ge=1024, le=65000)
    address: str | None = Field(
        default=None,
        description="the private address vLLM listens on and the gateways reach; default: ansible_host",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.:-]*$",
    )
    drained: bool = Field(default=False, description="in maintenance: no instance is placed here")

    @model_validator(mode="after")
    def _one_description(self) -> Node:
        if self.profile == "cpu":
            if self.cpus < 1 or self.memory_gib is None:
                raise ValueError("a CPU node needs cpus and memory_gib")
            if self.gpu or self.gpus or self.instance_type or self.facts:
                raise ValueError("a CPU node has no gpu, gpus, instance_type or facts; set profile: gpu")
            return self
        given = [bool(self.gpu or self.gpus), bool(self.instance_type), bool(self.facts)]
        if sum(given) != 1:
            raise ValueError("a GPU node needs exactly one of: gpu and gpus, instance_type, facts")
        if given[0] and not (self.gpu and self.gpus):
            raise ValueError("gpu and gpus go together: the GPU's name and how many the node has")
        return self


class ModelWant(_Strict):
    """How many instances of a model the fleet serves, and how each is sized."""

    replicas: int = Field(ge=0, le=1024)
    profile: Literal["gpu", "cpu"] | None = Field(
        default=None, description="where it may run; default: GPU nodes first, then CPU nodes"
    )
    tp: int | None = Field(default=None, ge=1)
    pp: int | None = Field(default=None, ge=1)
    max_model_len: int | None = Field(default=None, gt=0, description="default: the catalog's")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    kv_cache_gib: int = Field(default=1, ge=1, description="CPU nodes: each instance's KV cache")
    cpus_per_instance: int = Field(default=1, ge=1, description="CPU nodes")
    config: str | None = Field(
        default=None,
        description="an HF config.json for a model the catalog does not list (planning only; GPU nodes)",
    )


class FleetSpec(_Strict):
    schema_version: Literal[1] = 1
    policy: Literal["binpack", "spread"] = "binpack"
    nodes: dict[str, Node] = Field(min_length=1)
    models: dict[MODEL_NAME, ModelWant] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _node_names(self) -> FleetSpec:
        import re

        bad = sorted(name for name in self.nodes if not re.match(NODE_NAME_PATTERN, name))
        if bad:
            raise ValueError(
                f"node name(s) {', '.join(bad)} are not inventory host names ({NODE_NAME_PATTERN})"
            )
        for name, node in self.nodes.items():
            if node.cpus % node.numa_nodes:
                raise ValueError(f"nodes.{name}: cpus ({node.cpus}) must be a multiple of numa_nodes")
        return self


def load_spec(path: Path) -> FleetSpec:
    if not path.is_file():
        raise FleetError(
            f"{path}: no fleet file; write one (see {FIELDS_DOC}) or start it with "
            f"`llmfleet fleet add-node --inventory {path.parent} NODE ...`"
        )
    return parse_document(
        FleetSpec,
        path.read_text(encoding="utf-8"),
        path,
        FleetError,
        expected="nodes and models",
        fields_doc=FIELDS_DOC,
    )


SPEC_HEADER = (
    "---\n"
    "# The fleet: its nodes and the models it serves (see docs/fleet.md). `llmfleet fleet scale|remove|\n"
    "# drain|undrain|add-node` rewrite this file (comments are not kept); `llmfleet fleet place` reads it.\n"
)


def render_spec(spec: FleetSpec) -> str:
    """The file as the fleet commands write it: defaults left out, keys sorted."""
    data = spec.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("nodes", {})
    data.setdefault("models", {})
    data["schema_version"] = 1
    # A model scaled to 0 keeps its entry (and its sizing); exclude_defaults would drop `replicas: 0`.
    for name, want in spec.models.items():
        data["models"].setdefault(name, {})["replicas"] = want.replicas
    return SPEC_HEADER + yaml.safe_dump(data, sort_keys=True, default_flow_style=False, width=100)
