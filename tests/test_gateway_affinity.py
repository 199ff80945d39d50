"""The affinity pool, through the real HAProxy: requests that share a session or a prompt prefix meet on one
instance (where vLLM's prefix cache holds that prefix), distinct prefixes spread, and a busy instance sheds
to the next instead of taking everything. The instances are the stdlib backend (fast, and enough here:
what is checked is where HAProxy sends a request, which it decides before any instance answers)."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmfleet.gateway.haproxy import render_gateway
from llmfleet.gateway.keys import load_api_keys, sync_declared_keys
from llmfleet.gateway.policy import DeclaredKey, GatewayPolicy, GatewaySettings, PoolPolicy
from plans import make_plan
from test_gateway_haproxy import HAPROXY, KEY, call, free_port, pytestmark, start_fake_backend, stop

__all__ = ["pytestmark"]  # skipped, or failed under make, without HAProxy, as the module it comes from

MODEL = "aff"
INSTANCES = [f"{MODEL}-0", f"{MODEL}-1"]
BEARER = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def gateway_port(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("affinity")
    dirs = {name: root / name for name in ("etc", "run", "keys", "quota")}
    for directory in dirs.values():
        directory.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = []
        for name in INSTANCES:
            proc, port = start_fake_backend(MODEL, name, root / "backends.log")
            procs.append(proc)
            ports.append(port)
        settings = GatewaySettings(
            listen_port=free_port(),
            metrics_port=free_port(),
            config_dir=str(dirs["etc"]),
            runtime_dir=str(dirs["run"]),
            quota_dir=str(dirs["quota"]),
        )
        policy = GatewayPolicy(
            pools={MODEL: PoolPolicy(balance="affinity", affinity_balance_factor=150)},
            affinity_prefix_bytes=64,
            keys={"default": DeclaredKey()},
        )
        (dirs["keys"] / "default.key").write_text(KEY + "\n")
        sync_declared_keys(dirs["keys"], dict(policy.keys))
        files = render_gateway(settings, policy, [make_plan(MODEL, ports)], load_api_keys(dirs["keys"]))
        for name, text in files.items():
            (dirs["etc"] / name).write_text(text)
        log = (root / "haproxy.log").open("wb")
        proc = subprocess.Popen(
            [str(HAPROXY), "-W", "-db", "-f", str(dirs["etc"] / "haproxy.cfg")], stdout=log, stderr=log
        )
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if call(settings.metrics_port, "GET", "/metrics").status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        # Both instances pass their first health check before any request is counted.
        time.sleep(2.5)
        yield settings.listen_port
    finally:
        for proc in reversed(procs):
            stop(proc)


def instance(port: int, body: dict, headers: dict[str, str] | None = None) -> str:
    resp = call(port, "POST", "/v1/chat/completions", {"model": MODEL, **body}, {**BEARER, **(headers or {})})
    assert resp.status == 200, resp.body
    return resp.headers["x-instance-id"]


def chat(system: str, user: str) -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}


def test_a_shared_prompt_prefix_keeps_to_one_instance(gateway_port):
    system = "You are the support assistant of Example Corp. Answer in one short paragraph, politely."
    seen = {instance(gateway_port, chat(system, f"question {n}")) for n in range(12)}
    assert len(seen) == 1, f"one system prompt went to {sorted(seen)}"


def test_distinct_prefixes_spread_over_both_instances(gateway_port):
    counts = Counter(
        instance(gateway_port, chat(f"tenant {n:03d}: a prompt of its own", "hi")) for n in range(40)
    )
    assert set(counts) == set(INSTANCES), counts
    assert max(counts.values()) <= 30, f"consistent hashing left one instance most of the traffic: {counts}"


def test_a_session_header_or_the_user_field_keeps_a_conversation_on_one_instance(gateway_port):
    by_header = {
        instance(gateway_port, chat(f"prompt {n}", "hi"), {"X-Session-Id": "s-42"}) for n in range(10)
    }
    by_user = {instance(gateway_port, {**chat(f"prompt {n}", "hi"), "user": "u-7"}) for n in range(10)}
    assert len(by_header) == 1 and len(by_user) == 1


def test_a_busy_instance_sheds_to_the_next_instead_of_taking_all(gateway_port):
    """Six slow requests with one prefix at once: the bounded load (150 % of the average in flight) sends
    some to the other instance, where plain consistent hashing would queue all six on one."""
    body = {**chat("one shared system prompt for every request in this burst", "wait"), "fake_delay_ms": 1500}
    with ThreadPoolExecutor(max_workers=6) as pool:
        seen = Counter(pool.map(lambda _: instance(gateway_port, body), range(6)))
    assert set(seen) == set(INSTANCES), f"all six went to one instance: {seen}"


def test_the_rendered_backend_hashes_the_affinity_key(tmp_path: Path):
    policy = GatewayPolicy(pools={MODEL: PoolPolicy(balance="affinity", affinity_balance_factor=125)})
    cfg = render_gateway(GatewaySettings(), policy, [make_plan(MODEL, [8100, 8101])], [])["haproxy.cfg"]
    backend = cfg.split(f"backend model_{MODEL}", 1)[1]
    for line in ("balance hash var(txn.affinity)", "hash-type consistent", "hash-balance-factor 125"):
        assert line in backend
    plain = render_gateway(GatewaySettings(), GatewayPolicy(), [make_plan(MODEL, [8100])], [])["haproxy.cfg"]
    assert "txn.affinity" not in plain, "a gateway without affinity pools computes no affinity key"
