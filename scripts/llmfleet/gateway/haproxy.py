"""The HAProxy renderer: ``haproxy.cfg``, the Lua file for token quotas and per-key metrics, and the map
files the keys and routes become (what ``llmfleet keys`` changes at run time through the admin socket).

Rendering is a pure function of its inputs: the same settings, plans and keys always give the same bytes,
whatever order they come in, so a redeploy that changes nothing rewrites nothing and restarts nothing.
Only key hashes reach the rendered files; plaintext keys stay in the key files on the control host.
"""

from __future__ import annotations

import json
from importlib import resources

import jinja2

from llmfleet.deploy.plan import ModelPlan
from llmfleet.gateway.policy import (
    BUFFER_HEADROOM_BYTES,
    GENERATED_HEADER,
    INFERENCE_PATHS,
    MAXREWRITE_BYTES,
    ApiKey,
    GatewayPolicy,
    GatewaySettings,
)
from llmfleet.gateway.routes import checked_keys, plan_backends

# Stands in for a client-supplied value (the model, the path) while an error body is built with json.dumps;
# it is then replaced by the HAProxy expression that JSON-escapes that value per request.
_DYNAMIC_PLACEHOLDER = "\x00DYNAMIC\x00"


def _openai_error(
    message: str, code: str, param: str | None = None, kind: str = "invalid_request_error"
) -> str:
    """An error body shaped like OpenAI's, so SDKs raise their usual exception with a readable message."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
    # The body goes into haproxy.cfg between single quotes, where nothing can be escaped; JSON can.
    return text.replace("'", "\\u0027")


def _log_format_error(
    message: str, code: str, param: str | None, expression: str, kind: str = "invalid_request_error"
) -> str:
    """An OpenAI error body for an lf-string: static parts escaped by json.dumps, the dynamic part by
    HAProxy's json converter, and any literal '%' doubled as the log-format syntax requires."""
    text = _openai_error(message, code, param, kind).replace("%", "%%")
    return text.replace(json.dumps(_DYNAMIC_PLACEHOLDER)[1:-1], expression)


def _error_bodies(policy: GatewayPolicy) -> dict[str, str]:
    limit = policy.max_body_bytes
    retry_after = "%[var(txn.quota_retry_after)]"
    return {
        "model_not_allowed": _log_format_error(
            f"This API key may not use the model `{_DYNAMIC_PLACEHOLDER}`. Ask for a key that lists it "
            "(llmfleet keys add NAME --models ...).",
            "model_not_allowed",
            "model",
            "%[var(txn.model),json(utf8s)]",
        ),
        "rate_limit_requests": _openai_error(
            "This API key sent more requests in the last 60 seconds than its limit (rpm); retry after the "
            "number of seconds in the Retry-After header.",
            "rate_limit_exceeded",
            kind="requests",
        ),
        "rate_limit_tokens_per_minute": _log_format_error(
            "This API key used its tokens for this minute (tokens_per_minute); retry in "
            f"{_DYNAMIC_PLACEHOLDER} seconds.",
            "rate_limit_exceeded",
            None,
            retry_after,
            kind="tokens",
        ),
        "rate_limit_tokens_per_day": _log_format_error(
            "This API key used its tokens for today, UTC (tokens_per_day); retry in "
            f"{_DYNAMIC_PLACEHOLDER} seconds.",
            "insufficient_quota",
            None,
            retry_after,
            kind="tokens",
        ),
        "invalid_api_key": _openai_error(
            "Missing or invalid API key. Send it as `Authorization: Bearer <key>` or in an `api-key` header.",
            "invalid_api_key",
        ),
        "request_too_large": _openai_error(
            f"The request body is larger than this gateway's limit of {limit} bytes "
            f"({limit // 1024} KiB); shorten the prompt or raise the gateway's max_body_bytes.",
            "request_too_large",
        ),
        "model_missing": _openai_error(
            'The request body has no "model" field (a JSON string naming the model) that the gateway '
            "could read.",
            "model_not_found",
            param="model",
        ),
        "model_not_found": _log_format_error(
            f"The model `{_DYNAMIC_PLACEHOLDER}` does not exist on this gateway.",
            "model_not_found",
            "model",
            "%[var(txn.model),json(utf8s)]",
        ),
        "unknown_path": _log_format_error(
            f"Unknown request URL: {_DYNAMIC_PLACEHOLDER}. This gateway serves GET /v1/models and POST "
            + ", ".join(INFERENCE_PATHS)
            + ".",
            "unknown_path",
            None,
            "%[method,json(utf8s)] %[path,json(utf8s)]",
        ),
    }


def _haproxy_error_bodies() -> dict[int, str]:
    """Bodies for the errors HAProxy raises itself (no healthy instance, timeouts), as OpenAI JSON too."""
    return {
        400: _openai_error("The gateway could not parse the request.", "bad_request"),
        408: _openai_error("The request was not received in time.", "request_timeout"),
        500: _openai_error("The gateway failed internally.", "gateway_error", kind="server_error"),
        502: _openai_error(
            "The model instance returned an invalid response.", "bad_gateway", kind="server_error"
        ),
        503: _openai_error(
            "No instance of this model is available right now; retry later.",
            "model_unavailable",
            kind="server_error",
        ),
        504: _openai_error(
            "The model instance did not answer in time.", "gateway_timeout", kind="server_error"
        ),
    }


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("llmfleet.gateway", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # HAProxy config, not HTML
    )


def _key_models_list(key: ApiKey, served: list[str]) -> str:
    """The /v1/models answer for one key: only the deployed models it may use."""
    allowed = served if "*" in key.policy.models else [m for m in served if m in key.policy.models]
    return json.dumps(
        {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "llmfleet"} for m in allowed]},
        separators=(",", ":"),
    )


def render_maps(plans: list[ModelPlan], keys: list[ApiKey], policy: GatewayPolicy) -> dict[str, str]:
    """The map files: what ``llmfleet keys`` pushes to a running HAProxy without a reload."""
    backends = plan_backends(plans, policy)
    served = [backend.model for backend in backends]
    keys = checked_keys(keys)

    def lines(comment: str, entries: list[tuple[str, object]]) -> str:
        body = "".join(f"{left} {right}\n" for left, right in entries)
        return f"# {GENERATED_HEADER}\n# {comment}\n{body}"

    return {
        "keys.map": lines(
            "lower-case hex sha256 of an API key -> key name (logged). Plaintext keys never appear here.",
            [(key.sha256, key.name) for key in keys],
        ),
        "models.map": lines(
            'model name (the request body\'s "model") -> HAProxy backend that serves it.',
            [(backend.model, backend.name) for backend in backends],
        ),
        "key-models.map": lines(
            "key name/model -> 1 when the key may use the model; key name/* -> 1 for every model.",
            [(f"{key.name}/{model}", 1) for key in keys for model in sorted(set(key.policy.models))],
        ),
        "key-model-list.map": lines(
            "key name -> the GET /v1/models answer for that key (only models it may use).",
            [(key.name, _key_models_list(key, served)) for key in keys],
        ),
        "key-rpm.map": lines(
            "key name -> requests per minute allowed (keys without a limit are absent).",
            [(key.name, key.policy.rpm) for key in keys if key.policy.rpm is not None],
        ),
        "key-tpm.map": lines(
            "key name -> tokens per UTC minute allowed.",
            [(key.name, key.policy.tokens_per_minute) for key in keys if key.policy.tokens_per_minute],
        ),
        "key-tpd.map": lines(
            "key name -> tokens per UTC day allowed.",
            [(key.name, key.policy.tokens_per_day) for key in keys if key.policy.tokens_per_day],
        ),
    }


MAP_FILES = (
    "keys.map",
    "models.map",
    "key-models.map",
    "key-model-list.map",
    "key-rpm.map",
    "key-tpm.map",
    "key-tpd.map",
)
LUA_FILE = "llmfleet.lua"


def render_gateway(
    settings: GatewaySettings, policy: GatewayPolicy, plans: list[ModelPlan], keys: list[ApiKey]
) -> dict[str, str]:
    """Render {file name: content}: haproxy.cfg, llmfleet.lua and the maps, to be placed in config_dir."""
    backends = plan_backends(plans, policy)
    rendered = render_maps(plans, keys, policy)
    context = {
        "header": GENERATED_HEADER,
        "settings": settings,
        "policy": policy,
        "config_dir": settings.config_dir,
        "runtime_dir": settings.runtime_dir,
        "bufsize": policy.max_body_bytes + BUFFER_HEADROOM_BYTES,
        "maxrewrite": MAXREWRITE_BYTES,
        "backends": backends,
        "errors": _error_bodies(policy),
        "haproxy_errors": _haproxy_error_bodies(),
        "inference_paths": INFERENCE_PATHS,
        "lua_file": LUA_FILE,
    }
    env = _environment()
    rendered["haproxy.cfg"] = env.get_template("haproxy/haproxy.cfg.j2").render(context)
    # Copied as is: the Lua file has no per-deployment values (it reads LLMFLEET_QUOTA_DIR).
    rendered[LUA_FILE] = (resources.files("llmfleet.gateway") / "templates" / "haproxy" / LUA_FILE).read_text(
        "utf-8"
    )
    for name, text in rendered.items():
        if not text.endswith("\n"):
            rendered[name] = text + "\n"
    return dict(sorted(rendered.items()))
