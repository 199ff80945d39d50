"""Model weights: import from a source into a store, publish, stage a verified copy onto the serving disk,
verify and gc it; the golden record taken at import. ``gguf_convert.py`` and ``golden_record.py`` run in
the vLLM environment (they need torch), so nothing here imports them.

Modules: manifest (the manifest, sidecars, hashing), locks (the writer lock), store / fs_store / s3_store /
mounts (the stores), importer (catalog sources into a store), publishing (a directory into a store),
hashed_copy (the copy engines), staging (a store revision onto the serving disk), staged (verify and gc),
progress (progress lines and outcomes), golden (the golden output).
"""

from llmfleet.weights.importer import import_model
from llmfleet.weights.manifest import read_manifest, sha256_file, write_manifest
from llmfleet.weights.progress import Outcome
from llmfleet.weights.publishing import publish
from llmfleet.weights.staged import gc, verify
from llmfleet.weights.staging import READS, stage
from llmfleet.weights.store import open_store

__all__ = [
    "READS",
    "Outcome",
    "gc",
    "import_model",
    "open_store",
    "publish",
    "read_manifest",
    "sha256_file",
    "stage",
    "verify",
    "write_manifest",
]
