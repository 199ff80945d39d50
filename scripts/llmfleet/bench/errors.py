"""Errors of the bench and sweep commands (exit codes away from the core CLI's 1-10)."""

from __future__ import annotations

from llmfleet.errors import LlmfleetError


class BenchError(LlmfleetError):
    exit_code = 20


class SweepError(LlmfleetError):
    exit_code = 21
