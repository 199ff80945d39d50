"""What is deployed on a host: one JSON record per model under the registry directory.

The deploy playbook writes a record after the model is ready; undeploy removes it. The gateway is
rendered from these records, and ``llmfleet status`` reads them, so they are the one list of what a
host serves. A gateway host keeps a copy of every node's records, one folder per node
(``<registry>/<node>/<model>.json``, collected by the gateway role), and reads them all the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from llmfleet.deploy.plan import ModelPlan
from llmfleet.errors import LlmfleetError

DEFAULT_STATE_DIR = Path("/var/lib/llmfleet")
DEFAULT_REGISTRY_DIR = DEFAULT_STATE_DIR / "deployments"


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    endpoint: str
    api_key_file: str
    weights_path: str
    # Who runs the instances: supervisord programs "vllm-<instance>", or systemd units
    # "llmfleet-vllm-<instance>.service". Records from before systemd support were all supervisord.
    service_manager: Literal["supervisord", "systemd"] = "supervisord"
    supervisorctl: list[str]
    log_dir: str
    plan: ModelPlan


def record_path(registry_dir: Path, model: str) -> Path:
    return registry_dir / f"{model}.json"


def render_record(deployment: Deployment) -> str:
    """Deterministic text, so rewriting an unchanged record is not a change."""
    return json.dumps(deployment.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def load_all(registry_dir: Path) -> list[Deployment]:
    if not registry_dir.is_dir():
        return []
    out = []
    for path in sorted(registry_dir.glob("*.json")) + sorted(registry_dir.glob("*/*.json")):
        try:
            out.append(Deployment.model_validate_json(path.read_text()))
        except ValueError as exc:
            raise LlmfleetError(
                f"{path} is not a valid deployment record ({exc}); undeploy that model"
            ) from None
    return out


def ports_held(registry_dir: Path, except_model: str) -> tuple[set[int], list[int]]:
    """Ports other models hold on this host, and the ports ``except_model`` had last time."""
    taken: set[int] = set()
    previous: list[int] = []
    for dep in load_all(registry_dir):
        ports = [inst.port for inst in dep.plan.instances]
        if dep.model == except_model:
            previous = ports
        else:
            taken.update(ports)
    return taken, previous


def deployed_plan(registry_dir: Path, model: str) -> ModelPlan | None:
    """The plan ``model`` is deployed with now, if it is."""
    return next((dep.plan for dep in load_all(registry_dir) if dep.model == model), None)


def write_record(registry_dir: Path, deployment: Deployment) -> bool:
    registry_dir.mkdir(parents=True, exist_ok=True)
    path = record_path(registry_dir, deployment.model)
    text = render_record(deployment)
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True
