"""Where a path lives: the mount holding it and its filesystem type (local disk or network)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Filesystems on this host's own devices (overlay: a container's root, layered over local
# directories). A store on one of them is read in one sequential stream per file (``MappedFile``);
# anything else (nfs, lustre, fuse, ceph...) pays a round trip per request, and is read in parallel
# chunks.
LOCAL_FILESYSTEMS = frozenset(
    {"btrfs", "ext2", "ext3", "ext4", "f2fs", "overlay", "ramfs", "tmpfs", "xfs", "zfs"}
)

PROC_MOUNTS = Path("/proc/self/mounts")


@dataclass(frozen=True)
class Mount:
    device: str
    point: str
    fstype: str


def mount_of(path: Path, mounts: Path = PROC_MOUNTS) -> Mount:
    """The mount holding ``path``: the longest mount point above it; fstype "unknown" when unreadable."""
    where = str(path.resolve())
    best = Mount("?", "", "unknown")
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        # The kernel writes space, tab, newline and backslash in a mount point as octal escapes.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])
        inside = where == point or where.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best.point):
            best = Mount(fields[0], point, fields[2])
    return best


def filesystem_type(path: Path) -> str:
    return mount_of(path).fstype
