"""``llmfleet status --inventory``: every node, model and instance of the fleet placement, with each gateway's
view of the instance: its state (UP, DRAIN, DOWN, MAINT), its last health check and its requests in flight.

The gateways' views come from their Prometheus endpoints (HAProxy's exporter, ``haproxy_server_status``
and friends), so the status needs no way into the nodes: only the gateways reach vLLM. Parsing and joining
are pure functions of the placement and the metrics text.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from llmfleet.fleet.place import PlacedInstance

_SAMPLE = re.compile(r"^(?P<metric>haproxy_server_\w+)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
BACKEND_PREFIX = "model_"


@dataclass(frozen=True)
class ServerView:
    state: str  # UP, DOWN, DRAIN, MAINT, NOLB
    check: str  # the last health check's result: L7OK, L4CON, ...
    in_flight: int


def parse_metrics(text: str) -> dict[tuple[str, str], ServerView]:
    """{(model, instance): view} from HAProxy's Prometheus exporter, for the model backends only."""
    state: dict[tuple[str, str], str] = {}
    check: dict[tuple[str, str], str] = {}
    sessions: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group("labels")))
        proxy, server = labels.get("proxy", ""), labels.get("server", "")
        if not proxy.startswith(BACKEND_PREFIX) or not server:
            continue
        key = (proxy[len(BACKEND_PREFIX) :], server)
        value = float(m.group("value"))
        metric = m.group("metric")
        if metric == "haproxy_server_status" and value == 1:
            state[key] = labels.get("state", "?")
        elif metric == "haproxy_server_check_status" and value == 1:
            check[key] = labels.get("state", "?")
        elif metric == "haproxy_server_current_sessions":
            sessions[key] = int(value)
    return {
        key: ServerView(state=state.get(key, "?"), check=check.get(key, "-"), in_flight=sessions.get(key, 0))
        for key in sorted(set(state) | set(sessions))
    }


def read_metrics(url: str, timeout: float = 5.0) -> dict[tuple[str, str], ServerView] | str:
    """A gateway's view, or why it could not be read (the gateway is down, say): the status still shows
    the rest."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return parse_metrics(reply.read().decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"unreachable ({reason})"


def fleet_rows(
    placement: dict[str, list[PlacedInstance]], views: dict[str, dict[tuple[str, str], ServerView] | str]
) -> list[dict[str, Any]]:
    """One row per placed instance, with every gateway's view of it; then any instance a gateway routes
    that the placement does not have (node ``-``), which a deploy or an undeploy left behind."""
    rows = []
    placed = set()
    for node in sorted(placement):
        for inst in placement[node]:
            placed.add((inst.model, inst.name))
            rows.append(_row(node, inst.model, inst.name, inst.gpus, inst.port, views))
    strays = sorted({key for view in views.values() if isinstance(view, dict) for key in view} - placed)
    rows += [_row("-", model, name, [], None, views) for model, name in strays]
    return rows


def _row(node, model, name, gpus, port, views) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    gateways = {}
    for gateway, view in sorted(views.items()):
        if isinstance(view, str):
            gateways[gateway] = {"state": "UNKNOWN", "check": view, "in_flight": None}
        elif (model, name) in view:
            v = view[(model, name)]
            gateways[gateway] = {"state": v.state, "check": v.check, "in_flight": v.in_flight}
        else:
            gateways[gateway] = {"state": "ABSENT", "check": "-", "in_flight": None}
    return {"node": node, "model": model, "instance": name, "gpus": gpus, "port": port, "gateways": gateways}


def status_table(rows: list[dict[str, Any]]) -> str:
    gateways = sorted({g for row in rows for g in row["gateways"]})
    head = f"{'NODE':20} {'MODEL':28} {'INSTANCE':32} {'GPUS':8}" + "".join(f" {g[:22]:22}" for g in gateways)
    lines = [head]
    for row in rows:
        gpus = ",".join(map(str, row["gpus"])) or "-"
        cells = ""
        for g in gateways:
            v = row["gateways"][g]
            flight = "" if v["in_flight"] is None else f" {v['in_flight']} in flight"
            cells += f" {(v['state'] + ' ' + v['check'] + flight)[:22]:22}"
        lines.append(f"{row['node']:20} {row['model']:28} {row['instance']:32} {gpus:8}{cells}")
    unreadable = {g: row["gateways"][g]["check"] for row in rows for g in gateways
                  if row["gateways"][g]["state"] == "UNKNOWN"}  # fmt: skip
    lines += [f"gateway {g}: {why}" for g, why in sorted(unreadable.items())]
    return "\n".join(lines) + "\n"


def gateway_metrics_urls(inventory_json: dict[str, Any]) -> dict[str, str]:
    """{gateway host: its metrics URL} from ``ansible-inventory --list`` output: ``gateway_metrics_url`` where
    the inventory sets it, else ``http://<ansible_host>:<gateway_metrics_port or 8404>/metrics``."""
    hostvars = inventory_json.get("_meta", {}).get("hostvars", {})
    urls = {}
    for host in _group_hosts(inventory_json, "gateways"):
        own = hostvars.get(host, {})
        url = own.get("gateway_metrics_url")
        if not url:
            address = own.get("ansible_host", host)
            url = f"http://{address}:{own.get('gateway_metrics_port', 8404)}/metrics"
        urls[host] = str(url)
    return urls


def _group_hosts(inventory_json: dict[str, Any], group: str) -> list[str]:
    found: list[str] = []
    entry = inventory_json.get(group, {})
    found += entry.get("hosts", [])
    for child in entry.get("children", []):
        found += _group_hosts(inventory_json, child)
    return sorted(set(found))
