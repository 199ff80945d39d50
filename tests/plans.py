"""Build ModelPlan objects directly, for tests that need a plan but not the planner."""

from __future__ import annotations

from llmfleet.deploy.plan import Instance, KvCache, ModelPlan


def make_plan(model: str, ports: list[int], host: str = "127.0.0.1") -> ModelPlan:
    cache = KvCache(bytes_per_token=1, space_bytes=1, tokens=1, max_concurrency_at_max_len=1.0)
    instances = [
        Instance(
            name=f"{model}-{index}",
            model=model,
            task="chat",
            port=port,
            url=f"http://{host}:{port}",
            cpus=[index],
            kv_cache=cache,
            argv=[],
            env={},
        )
        for index, port in enumerate(ports)
    ]
    return ModelPlan(
        model=model,
        host="test",
        profile="cpu",
        revision="r1",
        weights_path=f"/w/{model}",
        instances=instances,
    )
