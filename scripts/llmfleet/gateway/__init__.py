"""The gateway in front of every model: its policy, the HAProxy and Azure APIM renderers (templates/), API
keys and their live maps, and taking instances out of rotation and back."""

from llmfleet.gateway.apim import render_apim
from llmfleet.gateway.haproxy import render_gateway
from llmfleet.gateway.keys import add_key, list_keys, revoke_key
from llmfleet.gateway.policy import GatewayPolicy, GatewaySettings, load_policy
from llmfleet.gateway.rotation import drain, readmit

__all__ = [
    "GatewayPolicy",
    "GatewaySettings",
    "add_key",
    "drain",
    "list_keys",
    "load_policy",
    "readmit",
    "render_apim",
    "render_gateway",
    "revoke_key",
]
