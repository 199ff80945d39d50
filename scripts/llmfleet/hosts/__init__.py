"""What a host is: its CPUs, memory and GPUs (facts), GPU topology and NUMA placement, the driver and image
checks before launch (gpucompat), CPU sets, and the Ansible inventory that Terraform's outputs become."""

from llmfleet.hosts.cpusets import format_cpulist, parse_cpulist, split_cpus
from llmfleet.hosts.facts import HostFacts
from llmfleet.hosts.gpucompat import load_compat, preflight
from llmfleet.hosts.topology import GpuTopology

__all__ = [
    "GpuTopology",
    "HostFacts",
    "format_cpulist",
    "load_compat",
    "parse_cpulist",
    "preflight",
    "split_cpus",
]
