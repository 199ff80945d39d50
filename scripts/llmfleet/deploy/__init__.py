"""Serving one model on one host: the plan (ports, CPUs, KV cache, vLLM arguments), the deployment registry,
the readiness gate, and status. ``instance_wrapper.py`` runs beside each instance (the roles copy it)."""

from llmfleet.deploy.plan import DeploymentSettings, ModelPlan, plan_model
from llmfleet.deploy.ready import confirm_alive, exercise, wait_ready
from llmfleet.deploy.registry import DEFAULT_REGISTRY_DIR, Deployment, load_all

__all__ = [
    "DEFAULT_REGISTRY_DIR",
    "Deployment",
    "DeploymentSettings",
    "ModelPlan",
    "confirm_alive",
    "exercise",
    "load_all",
    "plan_model",
    "wait_ready",
]
