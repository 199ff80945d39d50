"""Render the gateway policy for Azure API Management, from the same model the HAProxy gateway uses.

For teams that front their fleet with APIM rather than (or in front of) HAProxy. The output is what an
APIM administrator imports, laid out the way APIM scopes policies:

* ``api-policy.xml``: the API-scope policy: body limit, routing on the body's ``model`` to one backend
  pool per model (404 for an unknown model), retries, streaming without buffering, telemetry headers.
* ``products/<key>.xml``: one product per llmfleet API key: which models it may use (403 otherwise),
  requests per minute (``rate-limit-by-key``), tokens per minute and per day (``llm-token-limit``).
  APIM issues the subscription keys itself: subscribe each client to its product.
* ``backends.json``: one backend per instance (with a circuit breaker) and one pool per model, in the
  shape of the ARM/Bicep ``Microsoft.ApiManagement/service/backends`` ``properties``.

Only elements and attributes from Microsoft's policy reference are used; tests/test_apim.py checks the
structure. Like the HAProxy renderer this is a pure function: same input, same bytes.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from llmfleet.deploy.plan import ModelPlan
from llmfleet.gateway.policy import (
    INFERENCE_PATHS,
    ApiKey,
    GatewayPolicy,
)
from llmfleet.gateway.routes import checked_keys, plan_backends

# HAProxy's retry conditions that have an APIM equivalent (a response status); connection failures show
# up in APIM as an exception with no response, which `context.Response == null` catches.
_STATUS_CONDITIONS = {"401", "403", "404", "408", "425", "500", "501", "502", "503", "504"}
_CONNECTION_CONDITIONS = {"conn-failure", "empty-response", "response-timeout", "junk-response"}
_MODEL_VARIABLE = '(string)context.Variables["llmfleetModel"]'
# preserveContent: without it the backend would receive an empty body.
_BODY_MODEL = '(string)context.Request.Body?.As<JObject>(preserveContent: true)?["model"] ?? ""'


def _pool_id(model: str) -> str:
    return f"llmfleet-pool-{model}"


def _backend_id(model: str, server: str) -> str:
    # Planned instances are named MODEL-N already; extra servers get the model prefixed.
    return f"llmfleet-{server}" if server.startswith(f"{model}-") else f"llmfleet-{model}-{server}"


def _json_error(message: str, code: str, param: str | None = None) -> str:
    return json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}},
        separators=(",", ":"),
    )


def _return_response(parent: ET.Element, status: int, reason: str, body: str) -> None:
    response = ET.SubElement(parent, "return-response")
    ET.SubElement(response, "set-status", {"code": str(status), "reason": reason})
    header = ET.SubElement(response, "set-header", {"name": "Content-Type", "exists-action": "override"})
    ET.SubElement(header, "value").text = "application/json"
    ET.SubElement(response, "set-body").text = body


def _csharp_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _serialize(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode", short_empty_elements=True) + "\n"


def render_api_policy(policy: GatewayPolicy, plans: list[ModelPlan]) -> str:
    backends = plan_backends(plans, policy)
    root = ET.Element("policies")
    inbound = ET.SubElement(root, "inbound")
    # Body limit first, as in HAProxy: a body too large is 413, never a misleading 404.
    ET.SubElement(
        inbound,
        "validate-content",
        {
            "unspecified-content-type-action": "ignore",
            "max-size": str(policy.max_body_bytes),
            "size-exceeded-action": "prevent",
            "errors-variable-name": "llmfleetBodyErrors",
        },
    )
    paths = " || ".join(f"context.Request.Url.Path.EndsWith({_csharp_string(p)})" for p in INFERENCE_PATHS)
    ET.SubElement(
        inbound,
        "set-variable",
        {
            "name": "llmfleetModel",
            "value": f'@(context.Request.Method == "POST" && ({paths}) ? {_BODY_MODEL} : "")',
        },
    )
    # <base/> runs the product (per-key) policy; it comes after the model is known, which it checks.
    ET.SubElement(inbound, "base")
    choose = ET.SubElement(inbound, "choose")
    for backend in backends:
        when = ET.SubElement(
            choose,
            "when",
            {"condition": f"@({_MODEL_VARIABLE} == {_csharp_string(backend.model)})"},
        )
        ET.SubElement(when, "set-backend-service", {"backend-id": _pool_id(backend.model)})
    otherwise = ET.SubElement(choose, "otherwise")
    _return_response(
        otherwise,
        404,
        "Not Found",
        _json_error("The model does not exist on this gateway.", "model_not_found", "model"),
    )

    backend_section = ET.SubElement(root, "backend")
    statuses = sorted(set(policy.retry.conditions) & _STATUS_CONDITIONS)
    condition_parts = [f"context.Response.StatusCode == {s}" for s in statuses]
    if set(policy.retry.conditions) & _CONNECTION_CONDITIONS:
        condition_parts.insert(0, "context.Response == null")
    retry = ET.SubElement(
        backend_section,
        "retry",
        {
            "condition": "@(" + " || ".join(condition_parts) + ")",
            "count": str(max(policy.retry.attempts, 1)),
            "interval": "0",
            "first-fast-retry": "true",
        },
    )
    # buffer-response="false": streams pass chunk by chunk (APIM's documented SSE setting).
    ET.SubElement(
        retry,
        "forward-request",
        {"buffer-request-body": "true", "buffer-response": "false", "timeout": str(policy.timeout_server_s)},
    )

    outbound = ET.SubElement(root, "outbound")
    ET.SubElement(outbound, "base")
    for name, value in (
        ("X-Model-Id", f"@({_MODEL_VARIABLE})"),
        ("X-Instance-Id", '@(context.Request.Url.Host + ":" + context.Request.Url.Port)'),
        ("X-Request-Id", "@(context.RequestId.ToString())"),
    ):
        header = ET.SubElement(outbound, "set-header", {"name": name, "exists-action": "override"})
        ET.SubElement(header, "value").text = value
    on_error = ET.SubElement(root, "on-error")
    ET.SubElement(on_error, "base")
    return _serialize(root)


def render_product_policy(key: ApiKey) -> str:
    """The product policy for one key: allowed models, requests and tokens per key."""
    root = ET.Element("policies")
    inbound = ET.SubElement(root, "inbound")
    ET.SubElement(inbound, "base")
    if "*" not in key.policy.models:
        allowed = ", ".join(_csharp_string(m) for m in sorted(key.policy.models))
        choose = ET.SubElement(inbound, "choose")
        when = ET.SubElement(
            choose,
            "when",
            {
                "condition": f"@(!new [] {{ {allowed} }}.Contains({_MODEL_VARIABLE}))",
            },
        )
        _return_response(
            when,
            403,
            "Forbidden",
            _json_error("This API key may not use this model.", "model_not_allowed", "model"),
        )
    if key.policy.rpm is not None:
        ET.SubElement(
            inbound,
            "rate-limit-by-key",
            {
                "calls": str(key.policy.rpm),
                "renewal-period": "60",
                "counter-key": "@(context.Subscription.Id)",
                "retry-after-header-name": "Retry-After",
            },
        )
    if key.policy.tokens_per_minute is not None or key.policy.tokens_per_day is not None:
        attributes = {"counter-key": "@(context.Subscription.Id)"}
        if key.policy.tokens_per_minute is not None:
            attributes["tokens-per-minute"] = str(key.policy.tokens_per_minute)
        if key.policy.tokens_per_day is not None:
            attributes["token-quota"] = str(key.policy.tokens_per_day)
            attributes["token-quota-period"] = "Daily"
        # Counted from the usage the backend returns, as llmfleet's HAProxy gateway does.
        attributes["estimate-prompt-tokens"] = "false"
        attributes["remaining-tokens-header-name"] = "X-RateLimit-Remaining-Tokens"
        attributes["retry-after-header-name"] = "Retry-After"
        ET.SubElement(inbound, "llm-token-limit", attributes)
    for section in ("backend", "outbound", "on-error"):
        ET.SubElement(ET.SubElement(root, section), "base")
    return _serialize(root)


def _iso_seconds(seconds: int) -> str:
    return f"PT{seconds}S"


def render_backends(policy: GatewayPolicy, plans: list[ModelPlan]) -> str:
    """Backends (one per instance, each with a circuit breaker) and one pool per model."""
    resources = []
    trip = policy.health.interval_s * policy.health.fall
    for backend in plan_backends(plans, policy):
        services = []
        for server in backend.servers:
            backend_id = _backend_id(backend.model, server.name)
            host, port = server.address.rsplit(":", 1)
            resources.append(
                {
                    "name": backend_id,
                    "properties": {
                        "protocol": "http",
                        "url": f"http://{host}:{port}/v1",
                        "circuitBreaker": {
                            "rules": [
                                {
                                    "name": "llmfleet-errors",
                                    "failureCondition": {
                                        "count": policy.health.error_limit,
                                        "interval": _iso_seconds(max(trip, 10)),
                                        "statusCodeRanges": [{"min": 500, "max": 599}],
                                        "errorReasons": ["Timeout", "BackendConnectionFailure"],
                                    },
                                    "tripDuration": _iso_seconds(max(trip, 10)),
                                    "acceptRetryAfter": True,
                                }
                            ]
                        },
                    },
                }
            )
            services.append(
                {
                    "id": f"/backends/{backend_id}",
                    # APIM's pools prefer the lowest priority; backups only when the others are tripped.
                    "priority": 2 if server.backup else 1,
                    "weight": server.weight,
                }
            )
        resources.append(
            {
                "name": _pool_id(backend.model),
                "properties": {"type": "Pool", "pool": {"services": services}},
            }
        )
    return json.dumps({"backends": resources}, indent=2, sort_keys=True) + "\n"


def render_apim(policy: GatewayPolicy, plans: list[ModelPlan], keys: list[ApiKey]) -> dict[str, str]:
    """{relative path: content} for the whole APIM bundle."""
    files = {
        "api-policy.xml": render_api_policy(policy, plans),
        "backends.json": render_backends(policy, plans),
    }
    products = []
    for key in checked_keys(keys):
        files[f"products/{key.name}.xml"] = render_product_policy(key)
        products.append(
            {
                "name": f"llmfleet-key-{key.name}",
                "displayName": f"llmfleet key {key.name}",
                "subscriptionRequired": True,
                "policy": f"products/{key.name}.xml",
            }
        )
    files["products.json"] = json.dumps({"products": products}, indent=2, sort_keys=True) + "\n"
    return dict(sorted(files.items()))
