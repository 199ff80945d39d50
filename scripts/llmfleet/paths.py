"""Where the checkout's data files live: the package runs from ``scripts/`` of the repository."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
