#!/usr/bin/env bash
# Build the test-host image once: Debian 12 with systemd as PID 1, Python and HAProxy.
# No image registry is reachable here, so the image is made with debootstrap and `podman import`.
# Idempotent: does nothing when the image exists. Usage: build-image.sh [IMAGE]
set -euo pipefail
image=${1:-localhost/llmfleet-test-bookworm-systemd:1}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$(dirname "$(readlink -f "$0")")/containers.conf}
if podman image exists "$image"; then
  exit 0
fi
for tool in podman debootstrap runc; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install podman debootstrap runc" >&2; exit 1; }
done
root=$(mktemp -d /var/tmp/llmfleet-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
  --include=python3,python3-apt,systemd,systemd-sysv,dbus,iproute2,procps,ca-certificates,curl,haproxy \
  bookworm "$root" >/dev/null
tar -C "$root" -c . | podman import --change 'CMD ["/sbin/init"]' - "$image" >/dev/null
echo "built $image"
