"""Shared fixtures: the real catalog, a CPU host like the ones this project runs on, and small HTTP
servers on loopback for the tests that talk to one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hosttools import pytest_configure, pytest_runtest_setup  # noqa: F401  (hooks: a required host tool missing fails)
from llmfleet.catalog.models import Catalog, load_catalog
from llmfleet.deploy.plan import DeploymentSettings
from llmfleet.hosts.facts import HostFacts

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


@pytest.fixture
def serve() -> Iterator[Callable[[type[BaseHTTPRequestHandler]], str]]:
    """``serve(Handler)`` answers on a free loopback port in a thread and returns its base URL; every
    server started this way is shut down after the test."""
    servers: list[ThreadingHTTPServer] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
