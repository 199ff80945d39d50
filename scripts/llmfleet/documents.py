"""The YAML documents operators write by hand (the model catalog, workload profiles): parsed and validated
into their models, every problem raised as the document's own error class, each naming the field."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from llmfleet.errors import LlmfleetError, yaml_problem

Document = TypeVar("Document", bound=BaseModel)


def explain(where: Path | str, exc: ValidationError, fields_doc: str, hidden: Collection[str] = ()) -> str:
    """Every problem of ``exc`` on its own line, by field; ``hidden`` location parts (a discriminated
    union's tag, for one) are left out, since a reader never wrote them."""
    lines = [f"{where}: {exc.error_count()} problem(s):"]
    for item in exc.errors():
        loc = ".".join(str(p) for p in item["loc"] if p not in hidden)
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = f"unknown field (misspelt? see {fields_doc} for the fields)"
        lines.append(f"  {loc or '<top level>'}: {msg}")
    return "\n".join(lines)


def parse_document(
    model: type[Document],
    text: str,
    where: Path | str,
    error: type[LlmfleetError],
    *,
    expected: str,
    fields_doc: str,
    hidden: Collection[str] = (),
) -> Document:
    """``text`` as ``model``. ``expected`` says what the top level holds (for a document that is no
    mapping); ``fields_doc`` is where its fields are described."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{where}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise error(f"{where}: expected a mapping with {expected}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(explain(where, exc, fields_doc, hidden)) from None
