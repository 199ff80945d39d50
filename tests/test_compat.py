"""The compatibility matrix (images/compat.yml) and the driver check."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.errors import CompatError
from llmfleet.hosts.gpucompat import check_driver, load_compat, version_tuple
from llmfleet.hosts.topology import gather

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia"


@pytest.fixture(scope="module")
def matrix():
    return load_compat()


def test_published_minimum_drivers(matrix):
    # NVIDIA's CUDA Toolkit release notes, "CUDA Toolkit and Corresponding Driver Versions", Linux x86_64.
    assert matrix.min_driver("12.4") == "550.54.14"
    assert matrix.min_driver("12.6") == "560.28.03"
    assert matrix.min_driver("12.8") == "570.26"


def test_floors_rise_with_cuda(matrix):
    ordered = sorted(matrix.cuda_min_driver, key=version_tuple)
    drivers = [version_tuple(matrix.cuda_min_driver[c]) for c in ordered]
    assert drivers == sorted(drivers)


def test_versions_compare_as_numbers():
    assert version_tuple("570.26") > version_tuple("560.28.03")
    assert version_tuple("1000.1") > version_tuple("999.9")


def test_every_image_names_a_known_cuda(tmp_path: Path):
    bad = tmp_path / "compat.yml"
    bad.write_text(
        "schema_version: 1\ncuda_min_driver: {'12.4': '550.54.14'}\n"
        "images: {v9: {repository: r, cuda: '12.8', digest: ''}}\n"
    )
    with pytest.raises(CompatError, match=r"CUDA 12\.8 has no minimum driver"):
        load_compat(bad)


def test_digest_must_be_sha256(tmp_path: Path):
    bad = tmp_path / "compat.yml"
    bad.write_text(
        "schema_version: 1\ncuda_min_driver: {'12.4': '550.54.14'}\n"
        "images: {v9: {repository: r, cuda: '12.4', digest: 'latest'}}\n"
    )
    with pytest.raises(CompatError, match=r"images.v9.digest"):
        load_compat(bad)


def test_driver_new_enough_passes(matrix):
    assert check_driver(matrix, "v0.6.6", gather(fixture_dir=FIXTURES / "dgx-h100-8gpu")) == []


def test_old_driver_refused_with_the_fix(matrix):
    refusals = check_driver(matrix, "v0.10.2", gather(fixture_dir=FIXTURES / "dgx-h100-8gpu"))
    assert len(refusals) == 1
    msg = refusals[0].message
    assert "driver 550.54.15 is too old for image v0.10.2 (CUDA 12.8 needs >= 570.26)" in msg
    assert "nvidia_driver_branch >= 570" in msg


def test_535_host_cannot_run_a_cuda_12_4_image(matrix):
    refusals = check_driver(matrix, "v0.6.6", gather(fixture_dir=FIXTURES / "pcie-l40s-2socket"))
    assert [r.check for r in refusals] == ["driver"]
    assert "535.183.01" in refusals[0].message and ">= 550.54.14" in refusals[0].message


def test_unknown_image_lists_known_ones_oldest_first(matrix):
    with pytest.raises(CompatError, match=r"known: v0.6.6, v0.9.2, v0.10.2, v0.11.0"):
        matrix.image("v0.0.1")


DIGEST = "sha256:" + "ab" * 32


def compat_with(tmp_path: Path, image: str) -> Path:
    path = tmp_path / "compat.yml"
    path.write_text(f"schema_version: 1\ncuda_min_driver: {{'12.4': '550.54.14'}}\nimages: {{v9: {image}}}\n")
    return path


SHORT = DIGEST.removeprefix("sha256:")[:8]


def pinned_by(*sources: str, kind: str = "index") -> str:
    kind_field = f"digest_kind: {kind}, " if kind else ""
    listed = ", ".join(sources)
    return f"{{repository: r, cuda: '12.4', digest: '{DIGEST}', {kind_field}digest_source: [{listed}]}}"


def test_a_digest_needs_two_sources_and_a_kind(tmp_path: Path):
    with pytest.raises(CompatError, match=r"at least 2 digest_source entries"):
        load_compat(compat_with(tmp_path, pinned_by(f"a/b {SHORT}")))
    with pytest.raises(CompatError, match=r"needs digest_kind"):
        load_compat(compat_with(tmp_path, pinned_by(f"a/b {SHORT}", f"c/d {SHORT}", kind="")))
    with pytest.raises(CompatError, match=r"images.v9.digest_kind"):
        load_compat(compat_with(tmp_path, pinned_by(f"a/b {SHORT}", f"c/d {SHORT}", kind="arm")))
    kind_without_digest = "{repository: r, cuda: '12.4', digest: '', digest_kind: index}"
    with pytest.raises(CompatError, match=r"digest is empty"):
        load_compat(compat_with(tmp_path, kind_without_digest))
    ok = pinned_by(f"a/b@{SHORT}", f"c/d {SHORT}")
    assert load_compat(compat_with(tmp_path, ok)).image("v9").digest == DIGEST


def test_each_digest_source_is_distinct_and_quotes_the_digest(tmp_path: Path):
    with pytest.raises(CompatError, match=r"at least 2 digest_source entries .* each different"):
        load_compat(compat_with(tmp_path, pinned_by(f"a {SHORT}", f"a {SHORT}")))
    quote = rf"must quote the digest it pins \(at least {SHORT}\.\.\.\): 'c/d'"
    with pytest.raises(CompatError, match=quote):
        load_compat(compat_with(tmp_path, pinned_by(f"a {SHORT}", "c/d")))


def test_filled_digests_carry_their_sources(matrix):
    """The shipped table: every filled digest says what it is and where it came from; v0.6.6 and v0.9.2 are
    still empty (no public pin was found), so the vllm_container role stops on them."""
    filled = {v: e for v, e in matrix.images.items() if e.digest}
    assert (
        filled["v0.10.2"].digest == "sha256:607442e407b0fea97f8a132a78b787c121a996dd4de181fa08e8da06e71ec2db"
    )
    assert (
        filled["v0.11.0"].digest == "sha256:014a95f21c9edf6abe0aea6b07353f96baa4ec291c427bb1176dc7c93a85845c"
    )
    for entry in filled.values():
        assert entry.digest_kind == "index" and len(entry.digest_source) >= 2
    assert matrix.image("v0.6.6").digest == "" and matrix.image("v0.9.2").digest == ""
