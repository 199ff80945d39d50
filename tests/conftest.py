"""Shared fixtures: the real catalog, and a CPU host like the ones this project runs on."""

from __future__ import annotations

import pytest

from hosttools import pytest_configure, pytest_runtest_setup  # noqa: F401  (hooks: a required host tool missing fails)
from llmfleet.catalog import Catalog, load_catalog
from llmfleet.plan import DeploymentSettings, HostFacts

GIB = 1024**3


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture
def cpu_host() -> HostFacts:
    return HostFacts(hostname="node-a", cpus=[0, 1], memory_bytes=24 * GIB, gpu_count=0)


@pytest.fixture
def cpu_settings() -> DeploymentSettings:
    return DeploymentSettings(profile="cpu")
