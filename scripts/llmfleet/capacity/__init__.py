"""The GPU capacity planner: a model's architecture from its config.json (modelconfig), parameter and KV
cache arithmetic (params, kv), the operator's options and the GPU (options), TP x PP candidates with fit
certificates (fit), their placement on the nodes with embedding replicas (placement), the refusal naming
the nearest fit (refusals), the plan that ties them together (candidates) and the Ansible inventory it
renders (render)."""

from llmfleet.capacity.candidates import CapacityPlan, plan_capacity
from llmfleet.capacity.modelconfig import ModelArch, load_model
from llmfleet.capacity.options import PlanOptions

__all__ = ["CapacityPlan", "ModelArch", "PlanOptions", "load_model", "plan_capacity"]
