#!/usr/bin/env bash
# Build the test-host image: Debian 12 with systemd as PID 1 and Python, as a freshly installed server has
# them. Nothing the roles install is added here (no compiler, no HAProxy): a test that passes on this image
# passes because the roles installed what they need, not because the image had it.
# No image registry is reachable here, so the image is made with debootstrap and `podman import`.
# Idempotent: does nothing when the image exists and was built from this script as it is now; an image
# left by an older version of it (its llmfleet.recipe label differs) is rebuilt under the same name.
# Usage: build-image.sh [IMAGE]
set -euo pipefail
image=${1:-localhost/llmfleet-test-bookworm-systemd:1}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$(dirname "$(readlink -f "$0")")/containers.conf}
for tool in podman debootstrap runc; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install podman debootstrap runc" >&2; exit 1; }
done
recipe=$(sha256sum "$(readlink -f "$0")" | cut -c1-16)
if podman image exists "$image"; then
  built=$(podman image inspect --format '{{ index .Labels "llmfleet.recipe" }}' "$image" 2>/dev/null || true)
  [ "$built" = "$recipe" ] && exit 0
  echo "rebuilding $image: built from recipe '${built:-none}', this script is $recipe"
fi
root=$(mktemp -d /var/tmp/llmfleet-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
  --include=python3,python3-apt,systemd,systemd-sysv,dbus,iproute2,procps,ca-certificates,curl \
  bookworm "$root" >/dev/null
tar -C "$root" -c . \
  | podman import --change 'CMD ["/sbin/init"]' --change "LABEL llmfleet.recipe=$recipe" - "$image" >/dev/null
echo "built $image (recipe $recipe)"
