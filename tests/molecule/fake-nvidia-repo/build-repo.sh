#!/usr/bin/env bash
# Build the test stand-in package `nvidia-container-toolkit` (versions 1.17.7-1 and 1.17.8-1) and a flat apt
# repository holding both, in DEST (default /srv/fake-nvidia-repo). See README.md: NOT NVIDIA's package.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
dest=${1:-/srv/fake-nvidia-repo}
mkdir -p "$dest"
for version in 1.17.7-1 1.17.8-1; do
  pkg=$(mktemp -d)
  mkdir -p "$pkg/DEBIAN" "$pkg/usr/bin"
  sed "s/@VERSION@/$version/" "$here/nvidia-ctk.py" > "$pkg/usr/bin/nvidia-ctk"
  printf '#!/bin/sh\necho "llmfleet test stand-in: no NVIDIA runtime here" >&2\nexit 1\n' \
    > "$pkg/usr/bin/nvidia-container-runtime"
  chmod 0755 "$pkg/usr/bin/nvidia-ctk" "$pkg/usr/bin/nvidia-container-runtime"
  cat > "$pkg/DEBIAN/control" <<CONTROL
Package: nvidia-container-toolkit
Version: $version
Architecture: all
Maintainer: llmfleet tests <tests@llmfleet.invalid>
Depends: python3
Description: llmfleet TEST STAND-IN for NVIDIA's container toolkit (not NVIDIA's package)
CONTROL
  dpkg-deb --build --root-owner-group "$pkg" "$dest/nvidia-container-toolkit_${version}_all.deb" >/dev/null
  rm -rf "$pkg"
done
# Packages and Release indexes, as dpkg-scanpackages / apt-ftparchive would write them.
python3 - "$dest" <<'PY'
import hashlib, os, subprocess, sys
dest = sys.argv[1]
entries = []
for deb in sorted(f for f in os.listdir(dest) if f.endswith(".deb")):
    path = os.path.join(dest, deb)
    control = subprocess.run(["dpkg-deb", "-f", path], capture_output=True, text=True, check=True).stdout.strip()
    data = open(path, "rb").read()
    entries.append(
        f"{control}\nFilename: ./{deb}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
    )
packages = "\n".join(entries)
open(os.path.join(dest, "Packages"), "w").write(packages)
digest = hashlib.sha256(packages.encode()).hexdigest()
open(os.path.join(dest, "Release"), "w").write(
    f"Origin: llmfleet-tests\nLabel: fake-nvidia\nSHA256:\n {digest} {len(packages.encode())} Packages\n"
)
PY
echo "built $dest"
