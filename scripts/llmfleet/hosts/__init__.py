"""What a host is: its CPUs, memory and GPUs (facts), GPU topology and NUMA placement, the driver and image
checks before launch (gpucompat), CPU sets, and the Ansible inventory that Terraform's outputs become."""

from llmfleet.hosts.cpusets import cpu_list, split_cpus
from llmfleet.hosts.facts import HostFacts
from llmfleet.hosts.gpucompat import load_compat, preflight
from llmfleet.hosts.topology import GpuTopology

__all__ = ["GpuTopology", "HostFacts", "cpu_list", "load_compat", "preflight", "split_cpus"]
