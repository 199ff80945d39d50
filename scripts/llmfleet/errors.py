"""Errors the CLI maps to exit codes. Each message says what is wrong and how to fix it."""

from __future__ import annotations


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
