"""Workload profiles: YAML files under bench/profiles/ that say what a benchmark sends.

A profile lists experiments (input and output token lengths, a concurrency ladder, requests per step) and
the bounds every run keeps: a time limit per step and for the whole run, and a per-request timeout.
Errors name the file and the field (``experiments.0.concurrency: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmfleet.bench.errors import BenchError
from llmfleet.documents import parse_document


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Experiment(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    input_tokens: int = Field(ge=1, le=1_000_000, description="prompt length, shared prefix included")
    output_tokens: int = Field(ge=1, le=1_000_000, description="tokens generated per request")
    concurrency: list[int] = Field(min_length=1, description="the ladder: requests in flight at each step")
    requests: int = Field(ge=1, le=100_000, description="requests sent at each concurrency step")
    shared_prefix_tokens: int = Field(default=0, ge=0, description="leading tokens every prompt shares")

    @field_validator("concurrency")
    @classmethod
    def _ladder(cls, value: list[int]) -> list[int]:
        if any(c < 1 or c > 4096 for c in value):
            raise ValueError("every concurrency must be between 1 and 4096")
        if len(set(value)) != len(value):
            raise ValueError("concurrency values must be distinct")
        return value

    @model_validator(mode="after")
    def _prefix_fits(self) -> Experiment:
        if self.shared_prefix_tokens >= self.input_tokens:
            raise ValueError(
                f"shared_prefix_tokens ({self.shared_prefix_tokens}) must be smaller than "
                f"input_tokens ({self.input_tokens})"
            )
        return self


class Profile(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    description: str = ""
    api: Literal["completions", "chat"] = Field(
        default="completions",
        description="completions sends the prompt as is (exact input tokens); chat wraps it in the template",
    )
    ignore_eos: bool = Field(default=True, description="generate exactly output_tokens (vLLM extension)")
    temperature: float = Field(default=0.0, ge=0)
    seed: int = Field(default=0, description="seeds the generated prompts")
    warmup_requests: int = Field(
        default=1, ge=0, le=100, description="sent before each experiment, unmeasured"
    )
    request_timeout_s: float = Field(default=300.0, gt=0, le=3600)
    step_timeout_s: float = Field(default=600.0, gt=0, le=86400, description="bound of one concurrency step")
    run_timeout_s: float = Field(default=3600.0, gt=0, le=86400, description="bound of the whole run")
    experiments: list[Experiment] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Profile:
        names = [e.name for e in self.experiments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"experiment names must be unique; repeated: {', '.join(dupes)}")
        return self


def parse_profile(text: str, path: Path | str = "<profile>") -> Profile:
    return parse_document(
        Profile, text, path, BenchError, expected="name and experiments", fields_doc="bench/README.md"
    )


def load_profile(path: Path) -> Profile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot read the profile {path}: {exc.strerror}") from None
    return parse_profile(text, path)
