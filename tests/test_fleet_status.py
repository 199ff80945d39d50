"""``llmfleet status --inventory``: the placement joined with each gateway's view of every instance.

tests/data/haproxy/metrics-one-server.txt is HAProxy 2.6's own exporter output (the server lines of
/metrics), read from the gateway that `pytest -m e2e tests/e2e/test_deploy_local.py` deploys, with one
instance up and checked L7OK.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from pathlib import Path

import pytest

from llmfleet.cli import main
from llmfleet.fleet.place import PlacedInstance
from llmfleet.fleet.status import ServerView, fleet_rows, gateway_metrics_urls, parse_metrics, status_table

REPO = Path(__file__).resolve().parents[1]
METRICS = (REPO / "tests" / "data" / "haproxy" / "metrics-one-server.txt").read_text()
MODEL = "smollm2-135m-instruct"


def test_haproxys_metrics_give_each_servers_state_check_and_requests_in_flight():
    assert parse_metrics(METRICS) == {
        (MODEL, f"{MODEL}-0"): ServerView(state="UP", check="L7OK", in_flight=0),
    }


def drained(text: str, server: str) -> str:
    """The same metrics with ``server`` draining and 3 requests in flight on it."""
    out = []
    for line in text.splitlines():
        if f'server="{server}"' in line and line.startswith("haproxy_server_status"):
            line = line[:-1] + ("1" if 'state="DRAIN"' in line else "0")
        if f'server="{server}"' in line and line.startswith("haproxy_server_current_sessions"):
            line = line.rsplit(" ", 1)[0] + " 3"
        out.append(line)
    return "\n".join(out)


def test_rows_show_every_placed_instance_with_each_gateways_view_and_the_strays():
    placement = {
        "node-a": [PlacedInstance(name=f"{MODEL}-0", model=MODEL, port=8100, gpus=[0])],
        "node-b": [PlacedInstance(name=f"{MODEL}-1", model=MODEL)],
    }
    stray = METRICS.replace(f"{MODEL}-0", "old-0").replace(f"model_{MODEL}", "model_old")
    views = {
        "gw-1": parse_metrics(drained(METRICS, f"{MODEL}-0") + "\n" + stray),
        "gw-2": "unreachable (connection refused)",
    }
    rows = fleet_rows(placement, views)
    assert [(r["node"], r["instance"]) for r in rows] == [
        ("node-a", f"{MODEL}-0"),
        ("node-b", f"{MODEL}-1"),
        ("-", "old-0"),
    ]
    assert rows[0]["gateways"]["gw-1"] == {"state": "DRAIN", "check": "L7OK", "in_flight": 3}
    assert rows[1]["gateways"]["gw-1"]["state"] == "ABSENT"
    assert rows[0]["gateways"]["gw-2"]["state"] == "UNKNOWN"
    table = status_table(rows)
    assert "DRAIN L7OK 3 in flight" in table
    assert "gateway gw-2: unreachable (connection refused)" in table


def test_the_gateways_metrics_urls_come_from_the_inventory(tmp_path):
    (tmp_path / "hosts.yml").write_text(
        "all:\n  children:\n    gateways:\n      hosts:\n"
        "        gw-1: {ansible_host: 10.0.0.5, gateway_metrics_port: 9404}\n"
        "        gw-2: {gateway_metrics_url: 'http://127.0.0.1:38404/metrics'}\n"
    )
    listing = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-inventory"), "-i", str(tmp_path), "--list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert gateway_metrics_urls(json.loads(listing)) == {
        "gw-1": "http://10.0.0.5:9404/metrics",
        "gw-2": "http://127.0.0.1:38404/metrics",
    }


@pytest.fixture
def metrics_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = METRICS.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()


def test_status_inventory_reads_the_placement_and_a_real_http_endpoint(tmp_path, metrics_server, capsys):
    (tmp_path / "fleet.yml").write_text(
        f"nodes:\n  l4-01: {{gpu: L4-24GB, gpus: 1}}\n  l4-02: {{gpu: L4-24GB, gpus: 1}}\n"
        f"models:\n  {MODEL}: {{replicas: 2}}\n"
    )
    assert main(["fleet", "place", "--inventory", str(tmp_path)]) == 0
    capsys.readouterr()
    argv = ["status", "--inventory", str(tmp_path), "--gateway-metrics", metrics_server, "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["instances"]
    assert [(r["node"], r["instance"], r["gateways"][metrics_server]["state"]) for r in rows] == [
        ("l4-01", f"{MODEL}-0", "UP"),
        ("l4-02", f"{MODEL}-1", "ABSENT"),
    ]
