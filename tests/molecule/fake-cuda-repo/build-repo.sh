#!/usr/bin/env bash
# Build TEST STAND-INS for the Debian 12 driver packages of NVIDIA's CUDA repository, in three branches, and a
# flat apt repository signed with a throwaway key, in DEST (default /srv/fake-cuda-repo). See README.md:
# these are NOT NVIDIA's packages. Needs dpkg-deb, python3 and gpg.
set -euo pipefail
dest=${1:-/srv/fake-cuda-repo}
# The newest branch carries an epoch, as a repackaged driver can: the role's pin must match it anyway.
versions=${FAKE_CUDA_VERSIONS:-"575.57.08-1 580.95.05-1 1:590.44.01-1"}
mkdir -p "$dest"
for version in $versions; do
  for package in nvidia-driver-cuda nvidia-kernel-open-dkms nvidia-persistenced; do
    pkg=$(mktemp -d)
    mkdir -p "$pkg/DEBIAN"
    depends="Depends: python3"
    case $package in
      nvidia-driver-cuda)
        # nvidia-smi that says what it is: there is no GPU and no kernel module behind it.
        mkdir -p "$pkg/usr/bin"
        printf '#!/bin/sh\necho "llmfleet test stand-in nvidia-smi %s: no GPU here" >&2\nexit 9\n' "$version" \
          > "$pkg/usr/bin/nvidia-smi"
        chmod 0755 "$pkg/usr/bin/nvidia-smi"
        depends="Depends: nvidia-persistenced (= $version)"
        ;;
      nvidia-kernel-open-dkms)
        mkdir -p "$pkg/usr/share/doc/$package"
        echo "llmfleet test stand-in: no kernel module source, DKMS builds nothing" \
          > "$pkg/usr/share/doc/$package/README.stand-in"
        depends=""
        ;;
      nvidia-persistenced)
        mkdir -p "$pkg/usr/bin" "$pkg/lib/systemd/system"
        printf '#!/bin/sh\necho "llmfleet test stand-in nvidia-persistenced" >&2\nexit 0\n' > "$pkg/usr/bin/nvidia-persistenced"
        chmod 0755 "$pkg/usr/bin/nvidia-persistenced"
        cat > "$pkg/lib/systemd/system/nvidia-persistenced.service" <<UNIT
[Unit]
Description=llmfleet test stand-in for NVIDIA Persistence Daemon ($version)

[Service]
Type=oneshot
ExecStart=/usr/bin/nvidia-persistenced

[Install]
WantedBy=multi-user.target
UNIT
        depends=""
        ;;
    esac
    {
      echo "Package: $package"
      echo "Version: $version"
      echo "Architecture: all"
      echo "Maintainer: llmfleet tests <tests@llmfleet.invalid>"
      [ -n "$depends" ] && echo "$depends"
      echo "Description: llmfleet TEST STAND-IN for NVIDIA's $package (not NVIDIA's package)"
    } > "$pkg/DEBIAN/control"
    # Debian's file names leave the epoch out.
    dpkg-deb --build --root-owner-group "$pkg" "$dest/${package}_${version#*:}_all.deb" >/dev/null
    rm -rf "$pkg"
  done
done
# Packages and Release, as apt-ftparchive would write them for a flat repository.
python3 - "$dest" <<'PY'
import email.utils, hashlib, os, subprocess, sys
dest = sys.argv[1]
entries = []
for deb in sorted(f for f in os.listdir(dest) if f.endswith(".deb")):
    path = os.path.join(dest, deb)
    control = subprocess.run(["dpkg-deb", "-f", path], capture_output=True, text=True, check=True).stdout.strip()
    data = open(path, "rb").read()
    entries.append(f"{control}\nFilename: ./{deb}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n")
packages = "\n".join(entries).encode()
open(os.path.join(dest, "Packages"), "wb").write(packages)
open(os.path.join(dest, "Release"), "w").write(
    "Origin: llmfleet-tests\nLabel: fake-nvidia-cuda\n"
    f"Date: {email.utils.formatdate(usegmt=True)}\n"
    f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n"
)
PY
# Sign it: a throwaway key made here, so apt's signature check is real (InRelease, Signed-By the key below).
export GNUPGHOME=$(mktemp -d)
trap 'rm -rf "$GNUPGHOME"' EXIT
gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
  --quick-generate-key "llmfleet test stand-in CUDA repository <tests@llmfleet.invalid>" rsa3072 sign never
gpg --batch --quiet --yes --clearsign -o "$dest/InRelease" "$dest/Release"
gpg --batch --quiet --yes --armor --export > "$dest/key.pub"
echo "built $dest"
