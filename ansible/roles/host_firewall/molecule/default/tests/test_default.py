"""Real state after the host_firewall role: the node's instance ports admit the gateway host and the node
itself, refuse any other host, and leave the node's other ports alone. Connections are real TCP connects
between the three test hosts on their podman network."""

import testinfra

GATEWAY = testinfra.get_host("podman://llmfleet-molecule-fw-gateway")
OTHER = testinfra.get_host("podman://llmfleet-molecule-fw-other")
NODE_HOST = testinfra.get_host("podman://llmfleet-molecule-fw-node")


def address(host) -> str:
    """The host's IPv4 address on the test network."""
    return host.check_output("ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1")


NODE = address(NODE_HOST)


def http_code(host, port: int) -> str:
    """The HTTP status a GET to the node's port gets from ``host``, or curl's exit code when no answer."""
    result = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://{NODE}:{port}/")
    return result.stdout if result.rc == 0 else f"exit {result.rc}"


def test_the_gateway_host_reaches_the_instance_port():
    assert http_code(GATEWAY, 8100) == "200"


def test_another_host_is_refused_on_the_instance_port():
    # rejected with a TCP reset: curl's "couldn't connect" (7), at once rather than after a timeout
    assert http_code(OTHER, 8100) == "exit 7"


def test_ports_that_are_not_instance_ports_stay_open():
    assert http_code(OTHER, 9000) == "200"


def test_the_node_reaches_its_own_instance_port_on_its_address(host):
    # The readiness gate and the rollout call the instance at the node's address, from the node.
    assert http_code(host, 8100) == "200"


def test_the_rules_live_in_their_own_table_loaded_by_an_enabled_unit(host):
    ruleset = host.check_output("nft list table inet llmfleet")
    assert address(GATEWAY) in ruleset and "8100-8199" in ruleset
    unit = host.service("llmfleet-firewall")
    assert unit.is_enabled and unit.is_running
