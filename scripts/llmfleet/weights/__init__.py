"""Model weights: import from a source into a store, publish, stage a verified copy onto the serving disk,
verify and gc it; the golden record taken at import. ``gguf_convert.py`` and ``golden_record.py`` run in
the vLLM environment (they need torch), so nothing here imports them."""

from llmfleet.weights.engine import READS, gc, import_model, publish, stage, verify
from llmfleet.weights.store import open_store

__all__ = ["READS", "gc", "import_model", "open_store", "publish", "stage", "verify"]
