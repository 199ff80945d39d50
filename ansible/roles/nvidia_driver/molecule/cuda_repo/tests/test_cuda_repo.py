"""Real state after nvidia_driver with nvidia_driver_source: cuda_repo, against a signed local stand-in for
NVIDIA's CUDA repository (tests/molecule/fake-cuda-repo/README.md): the packages are stand-ins, the apt side
(repository entry, keyring, signature check, pin, hold, upgrade by moving the pin) is real."""

import pytest

PACKAGES = ["nvidia-driver-cuda", "nvidia-kernel-open-dkms", "nvidia-persistenced"]
SOURCES = "/etc/apt/sources.list.d/llmfleet-nvidia-cuda.sources"
KEYRING = "/etc/apt/keyrings/llmfleet-nvidia-cuda.asc"


def test_repository_entry_is_signed_by_its_own_keyring(host):
    sources = host.file(SOURCES).content_string
    assert "URIs: file:/srv/fake-cuda-repo/" in sources and "Suites: /" in sources
    assert f"Signed-By: {KEYRING}" in sources
    assert "Trusted" not in sources  # never trusted=yes: the signature is what lets apt use it


def test_keyring_holds_the_repository_key(host):
    keyring = host.file(KEYRING)
    assert keyring.mode == 0o644 and keyring.user == "root"
    assert keyring.content_string == host.file("/srv/fake-cuda-repo/key.pub").content_string
    assert keyring.content_string.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")


def test_apt_verified_the_signed_index(host):
    # apt keeps an InRelease in its lists only after the signature checked out.
    assert host.file("/var/lib/apt/lists/_srv_fake-cuda-repo_InRelease").exists


def test_the_same_repository_is_refused_under_another_key(host):
    """Signed-By is enforced: with Debian's archive key in its place apt will not use the repository."""
    host.run_test("mkdir -p /tmp/wrong-key-lists/partial")
    host.run_test(
        "echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] file:/srv/fake-cuda-repo/ /'"
        " > /tmp/wrong-key.list"
    )
    update = host.run(
        "apt-get update -o Dir::Etc::SourceList=/tmp/wrong-key.list -o Dir::Etc::SourceParts=/nonexistent"
        " -o Dir::State::Lists=/tmp/wrong-key-lists"
    )
    said = update.stdout + update.stderr
    assert "NO_PUBKEY" in said or "is not signed" in said, said
    assert not host.file("/tmp/wrong-key-lists/_srv_fake-cuda-repo_InRelease").exists


def test_branch_580_was_pinned_while_590_was_offered(host):
    """Before side_effect moved the pin: 580 installed and held, although the repository offered 590."""
    before = host.file("/root/llmfleet-before-upgrade.txt").content_string
    for name in PACKAGES:
        assert f"{name} 580.95.05-1 hold" in before, before
    assert "1:590.44.01-1" in before and "Candidate: 580.95.05-1" in before, before


@pytest.mark.parametrize("name", PACKAGES)
def test_upgraded_to_the_new_branch_and_held(host, name):
    pkg = host.package(name)
    # 590 carries an epoch (build-repo.sh): a glob pin without it would not have matched.
    assert pkg.is_installed and pkg.version == "1:590.44.01-1", pkg.version
    assert name in host.check_output("apt-mark showhold").split()


def test_apt_applies_the_moved_pin(host):
    pref = host.file("/etc/apt/preferences.d/llmfleet-nvidia-driver.pref").content_string
    assert "Pin: version /^([0-9]+:)?590[.]/" in pref and "Pin-Priority: 1001" in pref
    policy = host.check_output("apt-cache policy nvidia-driver-cuda")
    assert "Candidate: 1:590.44.01-1" in policy and "1001" in policy, policy


def test_upgrade_marked_a_reboot_pending(host):
    """side_effect removed the marker before the upgrade; the handler wrote it again (reboot knob off)."""
    assert "llmfleet nvidia_driver" in host.file("/var/run/reboot-required").content_string


def test_persistence_mode_unit_enabled(host):
    unit = host.check_output("systemctl cat nvidia-persistenced.service")
    assert "stand-in" in unit and "--persistence-mode" in unit
    assert host.service("nvidia-persistenced").is_enabled
