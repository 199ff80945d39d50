"""Errors the CLI maps to exit codes. Each message says what is wrong and how to fix it."""

from __future__ import annotations

from typing import Any


class LlmfleetError(Exception):
    """Base class: a problem the operator can fix. The CLI prints the message, no traceback."""

    exit_code = 1


class CatalogError(LlmfleetError):
    exit_code = 3


class UnknownModelError(LlmfleetError):
    exit_code = 4

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(
            f"unknown model {name!r}. Models in the catalog: {', '.join(known)}. "
            "Pick one of these with -e model=NAME, or add an entry to catalog/models.yml."
        )


class PlanError(LlmfleetError):
    exit_code = 5


class WeightsError(LlmfleetError):
    exit_code = 6


class GatewayError(LlmfleetError):
    exit_code = 7


class NotReadyError(LlmfleetError):
    exit_code = 8


class StoreLockedError(WeightsError):
    """Another writer holds the model store's lock (and its lease has not run out)."""


class CapacityError(LlmfleetError):
    """The capacity planner cannot read a model's config, or the model does not fit as asked."""

    exit_code = 9


class CapacityRefusal(CapacityError):
    """No TP x PP fits: the message says why and what is nearest; ``candidates`` are every one weighed,
    each with ``fits`` and its reason, for ``capacity plan --json`` to print all the same."""

    def __init__(self, message: str, candidates: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.candidates = candidates


class InventoryError(LlmfleetError):
    """Terraform's outputs cannot be read or turned into an Ansible inventory."""

    exit_code = 10


class TopologyError(LlmfleetError):
    """nvidia-smi output or sysfs cannot be read, or a GPU set cannot be placed on one NUMA node."""

    exit_code = 11


class CompatError(LlmfleetError):
    """The host's driver, GPUs or free memory do not fit the image or the plan."""

    exit_code = 12


class GoldenMismatchError(NotReadyError):
    """An instance answers, but not like the reference implementation's golden output."""


def yaml_problem(exc: Any) -> str:
    """A YAML parse error in one line: where (line and column, 1-based) and what, without the excerpt
    PyYAML prints over several lines."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{where}{problem}" + (f" ({context})" if context else "")


class FleetError(LlmfleetError):
    """The fleet file is wrong, or the fleet has no room for what it asks."""

    exit_code = 14
