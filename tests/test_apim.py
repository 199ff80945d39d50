"""The Azure APIM rendering: well-formed XML built only from documented policy elements and attributes,
the same decisions as the HAProxy gateway, and deterministic bytes.

The element and attribute tables below are transcribed from Microsoft's policy reference pages
(learn.microsoft.com/azure/api-management/<policy>-policy) for the policies llmfleet emits. No APIM
instance is reachable from CI, so structure against the documented reference is what can be checked.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from llmfleet.gateway.apim import render_apim
from llmfleet.gateway.policy import ApiKey, ExtraServer, GatewayPolicy, KeyPolicy, PoolPolicy, hash_key
from plans import make_plan

DOCUMENTED_ATTRIBUTES: dict[str, set[str]] = {
    "policies": set(),
    "inbound": set(),
    "backend": set(),
    "outbound": set(),
    "on-error": set(),
    "base": set(),
    "validate-content": {
        "unspecified-content-type-action",
        "max-size",
        "size-exceeded-action",
        "errors-variable-name",
    },
    "set-variable": {"name", "value"},
    "choose": set(),
    "when": {"condition"},
    "otherwise": set(),
    "set-backend-service": {"backend-id", "base-url", "sf-resolve-condition", "sf-service-instance-name"},
    "return-response": {"response-variable-name"},
    "set-status": {"code", "reason"},
    "set-header": {"name", "exists-action"},
    "value": set(),
    "set-body": {"template", "xsi-nil", "parse-date"},
    "retry": {"condition", "count", "interval", "max-interval", "delta", "first-fast-retry"},
    "forward-request": {
        "timeout",
        "continue-timeout",
        "http-version",
        "follow-redirects",
        "buffer-request-body",
        "buffer-response",
        "fail-on-error-status-code",
    },
    "rate-limit-by-key": {
        "calls",
        "renewal-period",
        "counter-key",
        "increment-condition",
        "increment-count",
        "retry-after-header-name",
        "retry-after-variable-name",
        "remaining-calls-header-name",
        "remaining-calls-variable-name",
        "total-calls-header-name",
    },
    "llm-token-limit": {
        "counter-key",
        "tokens-per-minute",
        "token-quota",
        "token-quota-period",
        "estimate-prompt-tokens",
        "retry-after-header-name",
        "retry-after-variable-name",
        "remaining-quota-tokens-header-name",
        "remaining-quota-tokens-variable-name",
        "remaining-tokens-header-name",
        "remaining-tokens-variable-name",
        "tokens-consumed-header-name",
        "tokens-consumed-variable-name",
    },
}
SECTIONS = ["inbound", "backend", "outbound", "on-error"]

KEYS = [
    ApiKey("default", hash_key("d" * 20), KeyPolicy()),
    ApiKey(
        "ci",
        hash_key("c" * 20),
        KeyPolicy(models=["smollm2-135m-instruct"], rpm=60, tokens_per_minute=1000, tokens_per_day=50000),
    ),
]
PLANS = [make_plan("smollm2-135m-instruct", [8100, 8101]), make_plan("all-minilm-l6-v2", [8110])]
POLICY = GatewayPolicy(
    pools={
        "smollm2-135m-instruct": PoolPolicy(
            weights={"smollm2-135m-instruct-0": 3},
            extra_servers=[ExtraServer(name="dc2", url="http://10.0.2.15:8100")],
        )
    }
)


def check_documented(element: ET.Element) -> None:
    assert element.tag in DOCUMENTED_ATTRIBUTES, f"<{element.tag}> is not an element llmfleet documents"
    extra = set(element.attrib) - DOCUMENTED_ATTRIBUTES[element.tag]
    assert not extra, f"<{element.tag}> has undocumented attribute(s) {sorted(extra)}"
    for child in element:
        check_documented(child)


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return render_apim(POLICY, PLANS, KEYS)


def test_bundle_has_one_product_per_key(files: dict[str, str]) -> None:
    assert sorted(files) == [
        "api-policy.xml",
        "backends.json",
        "products.json",
        "products/ci.xml",
        "products/default.xml",
    ]
    products = json.loads(files["products.json"])["products"]
    assert [p["name"] for p in products] == ["llmfleet-key-ci", "llmfleet-key-default"]
    assert all(p["subscriptionRequired"] for p in products)


@pytest.mark.parametrize("name", ["api-policy.xml", "products/ci.xml", "products/default.xml"])
def test_policies_are_well_formed_and_use_documented_elements_only(files: dict[str, str], name: str) -> None:
    root = ET.fromstring(files[name])
    assert root.tag == "policies"
    assert [section.tag for section in root] == SECTIONS
    check_documented(root)
    # Every section inherits the enclosing scope's policy exactly once, except the API's backend
    # section, which forwards the request itself (inside <retry>).
    for section in root:
        expected = 0 if (name, section.tag) == ("api-policy.xml", "backend") else 1
        assert len(section.findall("base")) == expected, section.tag


def test_api_policy_routes_each_model_to_its_pool_and_404s_the_rest(files: dict[str, str]) -> None:
    root = ET.fromstring(files["api-policy.xml"])
    inbound = root.find("inbound")
    assert inbound is not None
    tags = [child.tag for child in inbound]
    # The model is read before <base/> so that the product (per-key) policy can check it.
    assert (
        tags.index("validate-content")
        < tags.index("set-variable")
        < tags.index("base")
        < tags.index("choose")
    )
    assert inbound.find("validate-content").get("max-size") == str(POLICY.max_body_bytes)  # type: ignore[union-attr]
    model_var = inbound.find("set-variable")
    assert model_var is not None and "preserveContent: true" in model_var.get("value", "")
    routes = {
        when.find("set-backend-service").get("backend-id"): when.get("condition")  # type: ignore[union-attr]
        for when in inbound.iter("when")
    }
    assert sorted(routes) == ["llmfleet-pool-all-minilm-l6-v2", "llmfleet-pool-smollm2-135m-instruct"]
    assert '== "smollm2-135m-instruct")' in routes["llmfleet-pool-smollm2-135m-instruct"]
    otherwise = inbound.find("choose/otherwise/return-response")
    assert otherwise is not None and otherwise.find("set-status").get("code") == "404"  # type: ignore[union-attr]
    body = json.loads(otherwise.find("set-body").text)  # type: ignore[arg-type, union-attr]
    assert body["error"]["code"] == "model_not_found"


def test_api_policy_streams_retries_and_sets_telemetry_headers(files: dict[str, str]) -> None:
    root = ET.fromstring(files["api-policy.xml"])
    retry = root.find("backend/retry")
    assert retry is not None and retry.get("count") == "2"
    assert "StatusCode == 502" in retry.get("condition", "") and "503" not in retry.get("condition", "")
    forward = retry.find("forward-request")
    assert forward is not None and forward.get("buffer-response") == "false"
    assert forward.get("timeout") == str(POLICY.timeout_server_s)
    headers = [h.get("name") for h in root.findall("outbound/set-header")]
    assert headers == ["X-Model-Id", "X-Instance-Id", "X-Request-Id"]


def test_product_policy_carries_the_key_limits(files: dict[str, str]) -> None:
    inbound = ET.fromstring(files["products/ci.xml"]).find("inbound")
    assert inbound is not None
    forbidden = inbound.find("choose/when")
    assert forbidden is not None and '"smollm2-135m-instruct"' in forbidden.get("condition", "")
    assert forbidden.find("return-response/set-status").get("code") == "403"  # type: ignore[union-attr]
    rate = inbound.find("rate-limit-by-key")
    assert rate is not None and (rate.get("calls"), rate.get("renewal-period")) == ("60", "60")
    tokens = inbound.find("llm-token-limit")
    assert tokens is not None
    assert tokens.get("tokens-per-minute") == "1000"
    assert (tokens.get("token-quota"), tokens.get("token-quota-period")) == ("50000", "Daily")
    # A key for every model with no limits gets none of these.
    default = ET.fromstring(files["products/default.xml"]).find("inbound")
    assert default is not None and [child.tag for child in default] == ["base"]


def test_backends_and_pools_mirror_the_haproxy_pools(files: dict[str, str]) -> None:
    resources = {r["name"]: r["properties"] for r in json.loads(files["backends.json"])["backends"]}
    pool = resources["llmfleet-pool-smollm2-135m-instruct"]
    assert pool["type"] == "Pool"
    services = {s["id"]: (s["priority"], s["weight"]) for s in pool["pool"]["services"]}
    assert services == {
        "/backends/llmfleet-smollm2-135m-instruct-0": (1, 3),
        "/backends/llmfleet-smollm2-135m-instruct-1": (1, 1),
        "/backends/llmfleet-smollm2-135m-instruct-dc2": (2, 1),
    }
    for service_id in services:
        backend = resources[service_id.removeprefix("/backends/")]
        assert backend["url"].startswith("http://") and backend["url"].endswith("/v1")
        rule = backend["circuitBreaker"]["rules"][0]
        assert rule["failureCondition"]["count"] == POLICY.health.error_limit
        assert rule["tripDuration"].startswith("PT") and rule["acceptRetryAfter"] is True


def test_rendering_is_deterministic(files: dict[str, str]) -> None:
    assert render_apim(POLICY, PLANS[::-1], KEYS[::-1]) == files
