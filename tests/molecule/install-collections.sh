#!/usr/bin/env bash
# Install the Ansible collections molecule and ansible-lint need, offline: Galaxy is unreachable here, but the
# `ansible` package on PyPI carries them. Only the folders we use are unzipped from its wheel (16 MB, not the
# 547 MB install). Idempotent: a stamp names the version. Usage: install-collections.sh PYTHON DEST VERSION
set -euo pipefail
python=$1 dest=$2 version=$3
collections=(containers/podman community/docker community/general ansible/posix)
stamp="$dest/.ansible-$version"
[ -e "$stamp" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$tmp" "ansible==$version" 2>&1 \
  | { grep -v "^WARNING: Location 'file:" || true; }
rm -rf "$dest"
mkdir -p "$dest"
patterns=()
for c in "${collections[@]}"; do patterns+=("ansible_collections/$c/*"); done
"$python" - "$tmp"/ansible-"$version"-py3-none-any.whl "$dest" "${patterns[@]}" <<'PY'
import fnmatch, sys, zipfile
wheel, dest, *patterns = sys.argv[1:]
with zipfile.ZipFile(wheel) as zf:
    names = [n for n in zf.namelist() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    zf.extractall(dest, names)
print(f"unzipped {len(names)} files of {len(patterns)} collections into {dest}")
PY
touch "$stamp"
