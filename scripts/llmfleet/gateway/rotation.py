"""Take an instance out of the gateway's rotation and put it back, over HAProxy's admin socket.

A rolling redeploy drains an instance before replacing it: ``set server <backend>/<server> state drain``
stops new requests to it (health checks go on), and the requests it is serving finish; ``scur`` in
``show stat`` counts them. Once the replacement passes the readiness gate, ``state ready`` re-admits it.

An instance the gateway does not know (a first deploy, a new instance, no gateway running yet) is
simply not in rotation: there is nothing to drain, and that is not an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmfleet.errors import GatewayError
from llmfleet.gateway.keys import admin_command

POLL_S = 0.25


@dataclass(frozen=True)
class ServerState:
    in_rotation: bool  # the gateway knows the server
    status: str = ""  # show stat's status: UP, DOWN, DRAIN, MAINT, ...
    sessions: int = 0  # requests in flight on it


def backend_name(model: str) -> str:
    return f"model_{model}"


def stat_rows(socket_path: Path) -> list[dict[str, str]]:
    """``show stat`` as one {column: value} per proxy and server; none when HAProxy is not running."""
    if not socket_path.exists():
        return []
    try:
        answer = admin_command(socket_path, "show stat")
    except (ConnectionRefusedError, FileNotFoundError):
        return []
    header, *rows = answer.lstrip("# ").splitlines()
    columns = header.split(",")
    return [dict(zip(columns, row.split(","), strict=False)) for row in rows if row]


def server_state(socket_path: Path, model: str, instance: str) -> ServerState:
    """The server's row in ``show stat``; not in rotation when the socket or the server is absent."""
    for fields in stat_rows(socket_path):
        if fields.get("pxname") == backend_name(model) and fields.get("svname") == instance:
            return ServerState(
                in_rotation=True,
                status=fields.get("status", ""),
                sessions=int(fields.get("scur") or 0),
            )
    return ServerState(in_rotation=False)


def _set_state(socket_path: Path, model: str, instance: str, state: str) -> None:
    answer = admin_command(socket_path, f"set server {backend_name(model)}/{instance} state {state}")
    if answer.strip():
        raise GatewayError(f"HAProxy refused to set {instance} of {model} to {state}: {answer.strip()}")


def drain(
    socket_path: Path,
    model: str,
    instance: str,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, object]:
    """Stop new requests to the instance and wait (at most timeout_s) for its in-flight ones to finish.

    Returns what happened; ``in_flight_left`` > 0 means the bound was reached and the caller replaces
    the instance anyway (its remaining requests fail or are retried elsewhere by the gateway).
    """
    before = server_state(socket_path, model, instance)
    if not before.in_rotation:
        return {"in_rotation": False, "drained": False, "in_flight_left": 0, "waited_s": 0.0}
    _set_state(socket_path, model, instance, "drain")
    start = clock()
    state = server_state(socket_path, model, instance)
    while state.sessions > 0 and clock() - start < timeout_s:
        sleep(POLL_S)
        state = server_state(socket_path, model, instance)
    return {
        "in_rotation": True,
        "drained": True,
        "in_flight_at_start": before.sessions,
        "in_flight_left": state.sessions,
        "waited_s": round(clock() - start, 2),
    }


def readmit(socket_path: Path, model: str, instance: str) -> dict[str, object]:
    """Put a drained instance back into rotation (HAProxy sends it traffic once its checks pass)."""
    state = server_state(socket_path, model, instance)
    if not state.in_rotation:
        return {"in_rotation": False, "readmitted": False}
    _set_state(socket_path, model, instance, "ready")
    return {"in_rotation": True, "readmitted": True}
