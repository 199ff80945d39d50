"""Real state after the nvidia_driver role on Debian 12 (non-free). No kernel module is built or loaded in a
container: nothing here claims a working driver, only what the role puts on disk and into apt and systemd."""

import pytest

PACKAGES = ["nvidia-kernel-dkms", "nvidia-smi", "nvidia-persistenced", "libcuda1", "libnvidia-ml1"]


@pytest.mark.parametrize("name", PACKAGES)
def test_driver_packages_installed_from_the_535_branch_and_held(host, name):
    pkg = host.package(name)
    assert pkg.is_installed
    assert pkg.version.startswith("535."), pkg.version
    assert name in host.check_output("apt-mark showhold").split()


def test_non_free_components_enabled(host):
    sources = host.file("/etc/apt/sources.list.d/llmfleet-debian-nonfree.sources").content_string
    assert "Components: contrib non-free non-free-firmware" in sources
    assert "Suites: bookworm bookworm-updates" in sources


def test_apt_applies_the_branch_pin(host):
    pref = host.file("/etc/apt/preferences.d/llmfleet-nvidia-driver.pref").content_string
    assert "Pin: version /^([0-9]+:)?535[.]/" in pref and "Pin-Priority: 1001" in pref
    # apt itself reads the pin: the candidate carries priority 1001.
    policy = host.check_output("apt-cache policy nvidia-smi")
    assert "1001" in policy


def test_nouveau_blacklisted(host):
    conf = host.file("/etc/modprobe.d/llmfleet-blacklist-nouveau.conf")
    lines = conf.content_string.splitlines()
    assert "blacklist nouveau" in lines and "options nouveau modeset=0" in lines
    # modprobe reads it: its effective configuration lists the blacklist.
    showconfig = host.check_output("modprobe --showconfig 2>/dev/null | grep nouveau || true")
    assert "blacklist nouveau" in showconfig


def test_persistence_mode_unit_enabled(host):
    unit = host.check_output("systemctl cat nvidia-persistenced.service")
    assert "--persistence-mode" in unit
    assert host.service("nvidia-persistenced").is_enabled


def test_reboot_is_pending_not_done(host):
    """nvidia_driver_reboot is false here: the handler only marks the reboot as required."""
    assert "llmfleet nvidia_driver" in host.file("/var/run/reboot-required").content_string
