"""The model catalog: load, validate and look up models.

The catalog is YAML (``catalog/models.yml``). Every error names the file, the model and the field, so
an operator can fix a typo without reading this code.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmfleet.documents import parse_document
from llmfleet.errors import CatalogError, UnknownModelError
from llmfleet.paths import REPO_ROOT

SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex sha256")]
# The one rule for a model's name: it names the catalog entry, the served model, the staged directory, the
# instances (<name>-<n>) and, in the gateway, an HAProxy backend and map keys. Lower-case letters, digits,
# '.' and '-' (nothing HAProxy's config parser or a map file would interpret), at most 63 characters.
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9.-]{0,62}$"
MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
MODEL_NAME = Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]
MODEL_NAME_RULE = (
    "lower-case letters, digits, '.' and '-', starting with a letter or digit, at most 63 characters"
)


class _Strict(BaseModel):
    # forbid: a misspelt key ("max_modle_len") is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class PypiGgufSource(_Strict):
    """A GGUF file shipped inside a PyPI wheel, converted once to safetensors at import."""

    kind: Literal["pypi_gguf"]
    package: str
    version: str
    wheel_sha256: SHA256
    gguf_member: str = Field(description="path of the .gguf file inside the wheel")
    gguf_sha256: SHA256


class PypiSnapshotSource(_Strict):
    """A ready model folder (safetensors, tokenizer, config) shipped inside a PyPI wheel.

    Only the pinned files are imported, each checked against its sha256.
    """

    kind: Literal["pypi_snapshot"]
    package: str
    version: str
    wheel_sha256: SHA256
    member_dir: str = Field(pattern=r"^[\w./-]+/$", description="folder inside the wheel, ending in /")
    files: dict[str, SHA256] = Field(min_length=1, description="path inside member_dir -> sha256")


class HuggingFaceSource(_Strict):
    """A Hugging Face repository pinned to a commit, every file pinned by sha256."""

    kind: Literal["huggingface"]
    repo_id: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    revision: str = Field(pattern=r"^[0-9a-f]{40}$", description="a full commit hash, never a branch")
    files: dict[str, SHA256] = Field(min_length=1)


class S3Source(_Strict):
    """A prefix in an S3 bucket (the fleet's model store), every file pinned by sha256."""

    kind: Literal["s3"]
    uri: str = Field(pattern=r"^s3://[a-z0-9.-]{3,63}/.+")
    files: dict[str, SHA256] = Field(min_length=1)


ModelSource = Annotated[
    PypiGgufSource | PypiSnapshotSource | HuggingFaceSource | S3Source, Field(discriminator="kind")
]


class Architecture(_Strict):
    """The facts the planner needs before the weights are on the host (KV bytes per token and so on).

    They are checked against the model's own config.json at import, so the two cannot drift apart.
    """

    family: str
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)

    @model_validator(mode="after")
    def _gqa_groups_divide(self) -> Architecture:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        return self


# Bytes of one element of each weight dtype the catalog and the capacity planner know.
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}

# Seed 002's rule. vLLM arguments that change what the model outputs are fixed per model: the catalog's
# `serving` block and the planner set them, and neither an inventory (deployment_plan_extra_args) nor a
# sweep may override them. Each maps to the reason given when a deploy tries.
FIXED_ARGS: dict[str, str] = {
    "--dtype": "the precision of the weights and activations (catalog serving.dtype)",
    "--quantization": "the weights' quantization",
    "-q": "the weights' quantization",
    "--kv-cache-dtype": "the precision of the KV cache",
    "--max-model-len": "the context length (catalog serving.max_model_len)",
    "--speculative-config": "speculative decoding",
    "--speculative-model": "speculative decoding",
    "--num-speculative-tokens": "speculative decoding",
    "--chat-template": "the chat template (catalog serving.chat_template)",
    "--chat-template-content-format": "how the chat template renders messages",
    "--model": "the weights being served (the planner sets the staged copy)",
    "--tokenizer": "the tokenizer",
    "--revision": "the weights' revision",
    "--tokenizer-revision": "the tokenizer's revision",
    "--hf-overrides": "the model's configuration",
    "--generation-config": "the default sampling parameters",
    "--override-generation-config": "the default sampling parameters",
    "--seed": "the sampling seed",
    "--served-model-name": "the name clients and the gateway route on (the planner sets it)",
    "--runner": "what the model computes (generation or pooling; the catalog's task)",
}

# Arguments that only change placement and speed: an inventory may set them and a sweep may vary them.
TUNABLE_ARGS: frozenset[str] = frozenset(
    {
        "--tensor-parallel-size",
        "-tp",
        "--pipeline-parallel-size",
        "-pp",
        "--data-parallel-size",
        "--enable-expert-parallel",
        "--max-num-seqs",
        "--max-num-batched-tokens",
        "--enable-chunked-prefill",
        "--enable-prefix-caching",
        "--no-enable-prefix-caching",
        "--gpu-memory-utilization",
        "--block-size",
        "--swap-space",
        "--enforce-eager",
    }
)


def arg_flag(arg: str) -> str | None:
    """The option an argv item names, normalised as vLLM's parser does (``--max_model_len=2`` ->
    ``--max-model-len``); ``None`` for a value."""
    if not arg.startswith("-") or arg == "-" or arg.lstrip("-").replace(".", "").isdigit():
        return None
    flag = arg.split("=", 1)[0]
    return "--" + flag[2:].replace("_", "-") if flag.startswith("--") else flag


def fixed_args_in(args: list[str]) -> list[tuple[str, str]]:
    """The (option, reason) pairs of ``args`` that seed 002's rule keeps fixed per model."""
    found = []
    for arg in args:
        flag = arg_flag(arg)
        if flag in FIXED_ARGS:
            found.append((flag, FIXED_ARGS[flag]))
    return found


class Serving(_Strict):
    """Arguments that change what the model outputs. Fixed per model; a sweep never varies them."""

    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    max_model_len: int = Field(gt=0)
    chat_template: str | None = Field(default=None, description="path to a Jinja chat template")


class ModelEntry(_Strict):
    description: str
    license: str
    task: Literal["chat", "embedding"]
    source: ModelSource
    architecture: Architecture
    serving: Serving
    profiles: list[Literal["cpu", "gpu"]] = Field(min_length=1)


class Catalog(_Strict):
    schema_version: Literal[1]
    default_model: MODEL_NAME
    models: dict[MODEL_NAME, ModelEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_is_listed(self) -> Catalog:
        if self.default_model not in self.models:
            raise ValueError(
                f"default_model {self.default_model!r} is not among models: {', '.join(sorted(self.models))}"
            )
        return self

    def get(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(name, sorted(self.models)) from None


def default_catalog_path() -> Path:
    """``catalog/models.yml`` at the repository root (this package lives in ``scripts/llmfleet``)."""
    return REPO_ROOT / "catalog" / "models.yml"


_SOURCE_KINDS = ("pypi_gguf", "pypi_snapshot", "huggingface", "s3")


def parse_catalog(text: str, path: Path) -> Catalog:
    # Discriminated unions add the tag ("pypi_gguf") to an error's location; it is noise for a reader.
    return parse_document(
        Catalog,
        text,
        path,
        CatalogError,
        expected="schema_version, default_model and models",
        fields_doc="catalog/README.md",
        hidden=_SOURCE_KINDS,
    )


def load_catalog(path: Path | None = None) -> Catalog:
    path = path or default_catalog_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read the model catalog {path}: {exc.strerror}") from None
    return parse_catalog(text, path)


def revision_id(entry: ModelEntry) -> str:
    """A short, stable name for the exact bytes a source points at: it names the staged directory."""
    src = entry.source
    if isinstance(src, PypiGgufSource):
        return src.gguf_sha256[:12]
    if isinstance(src, PypiSnapshotSource):
        return src.wheel_sha256[:12]
    if isinstance(src, S3Source):
        joined = "".join(f"{name}:{digest}\n" for name, digest in sorted(src.files.items()))
        return hashlib.sha256(joined.encode()).hexdigest()[:12]
    return src.revision[:12]
