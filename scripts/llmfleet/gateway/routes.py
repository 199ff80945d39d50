"""What the gateway routes, whichever renderer writes it (HAProxy or Azure APIM): one backend per model
with its servers, checked against each other, and the keys checked before any of them reach a file."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from llmfleet.catalog.models import MODEL_NAME_RE, MODEL_NAME_RULE
from llmfleet.deploy.plan import ModelPlan
from llmfleet.errors import GatewayError
from llmfleet.gateway.policy import (
    INSTANCE_NAME_RE,
    SHA256_HEX_RE,
    ApiKey,
    GatewayPolicy,
    PoolPolicy,
    _check_key_name,
)


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    weight: int = 1
    backup: bool = False


@dataclass(frozen=True)
class Backend:
    name: str
    model: str
    balance: str
    servers: list[Server]
    # affinity pools: HAProxy's hash-balance-factor (the most, in % of the average, one server takes).
    balance_factor: int | None = None


def server_address(model: str, url: str) -> str:
    """host:port for a ``server`` line; HAProxy takes the text after the last colon as the port."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise GatewayError(
            f"model {model!r}: instance URL {url!r} is not of the form http://HOST:PORT; "
            "the gateway talks plain HTTP to each instance"
        )
    return f"{parts.hostname}:{port}"


def plan_backends(plans: list[ModelPlan], policy: GatewayPolicy) -> list[Backend]:
    """One backend per model, its servers every instance of the model on every host: a fleet's gateway
    gets each node's plans (deployment records), and a model placed on several nodes is one pool."""
    # A pool for a model not deployed here is not an error: a policy may be written before its model
    # is deployed, or outlive an undeploy.
    seen_addresses: dict[str, str] = {}
    backends: list[Backend] = []
    by_model: dict[str, list[ModelPlan]] = {}
    for plan in plans:
        by_model.setdefault(plan.model, []).append(plan)
    for model in sorted(by_model):
        plan = _merged(model, by_model[model])
        if not MODEL_NAME_RE.match(plan.model):
            raise GatewayError(
                f"model name {plan.model!r} cannot be served through the gateway: it must match "
                f"{MODEL_NAME_RE.pattern} ({MODEL_NAME_RULE}), because it becomes an "
                "HAProxy backend name and a map key; rename it in catalog/models.yml"
            )
        if not plan.instances:
            raise GatewayError(f"model {plan.model!r} has no instances to route to; plan at least one")
        pool = policy.pools.get(plan.model, PoolPolicy())
        names = {instance.name for instance in plan.instances}
        strays = sorted((set(pool.weights) | set(pool.backup_instances)) - names)
        if strays:
            raise GatewayError(
                f"gateway policy pools.{plan.model} names instance(s) {', '.join(strays)} that the plan does "
                f"not have; its instances are {', '.join(sorted(names))}"
            )
        candidates = [
            (inst.name, inst.url, pool.weights.get(inst.name, 1), inst.name in pool.backup_instances)
            for inst in sorted(plan.instances, key=lambda i: i.name)
        ] + [(extra.name, extra.url, extra.weight, extra.backup) for extra in pool.extra_servers]
        servers: list[Server] = []
        for name, url, weight, backup in candidates:
            if not INSTANCE_NAME_RE.match(name):
                raise GatewayError(
                    f"model {plan.model!r}: instance name {name!r} is not a valid HAProxy server "
                    "name (letters, digits and ._- only)"
                )
            if name in {server.name for server in servers}:
                raise GatewayError(f"model {plan.model!r}: two servers are named {name!r}; rename one")
            address = server_address(plan.model, url)
            if address in seen_addresses:
                raise GatewayError(
                    f"instances {seen_addresses[address]!r} and {name!r} both listen on {address}; "
                    "each instance needs its own port"
                )
            seen_addresses[address] = name
            servers.append(Server(name=name, address=address, weight=weight, backup=backup))
        if all(server.backup for server in servers):
            raise GatewayError(
                f"gateway policy pools.{plan.model}: every server is a backup, so none would take traffic; "
                "leave at least one instance out of backup_instances"
            )
        backends.append(
            Backend(
                name=f"model_{plan.model}",
                model=plan.model,
                balance=pool.balance,
                servers=servers,
                balance_factor=pool.affinity_balance_factor if pool.balance == "affinity" else None,
            )
        )
    return backends


def _merged(model: str, plans: list[ModelPlan]) -> ModelPlan:
    """The model's plans on all hosts as one: their instances together. Instance names must be unique
    across hosts, since the gateway names a server by its instance (a fleet placement makes them so)."""
    if len(plans) == 1:
        return plans[0]
    where: dict[str, str] = {}
    for plan in sorted(plans, key=lambda p: p.host):
        for inst in plan.instances:
            if inst.name in where:
                raise GatewayError(
                    f"model {model!r}: instance {inst.name!r} is deployed on both {where[inst.name]} and "
                    f"{plan.host}; the gateway names each instance once. Place the fleet with "
                    "`llmfleet fleet place`, which names instances uniquely across nodes, and deploy again"
                )
            where[inst.name] = plan.host
    instances = [inst for plan in plans for inst in plan.instances]
    return plans[0].model_copy(
        update={"instances": instances, "host": ",".join(sorted(p.host for p in plans))}
    )


def checked_keys(keys: list[ApiKey]) -> list[ApiKey]:
    """Keys sorted by name; a plaintext key passed by mistake fails here, not in a file."""
    seen: set[str] = set()
    for key in keys:
        _check_key_name(key.name)
        if key.name in seen:
            raise GatewayError(f"API key {key.name!r} is listed twice")
        seen.add(key.name)
        if not SHA256_HEX_RE.match(key.sha256):
            raise GatewayError(
                f"API key {key.name!r}: expected the lower-case hex sha256 of the key (see hash_key), "
                "not the key itself"
            )
    return sorted(keys, key=lambda k: k.name)
