"""llmfleet: plan, deploy and gate open LLMs on your own fleet."""

__version__ = "0.1.0"
