#!/usr/bin/env bash
# Unpacks gloo's C++ headers (Debian's libgloo-dev, headers only, nothing installed) into the project-local,
# git-ignored `.gloo/`: c10d's ProcessGroupGloo.hpp includes them and the torch wheel does not ship them.
# crates/balance-dist's build script compiles its c10d shim against them (BALANCE_GLOO_INCLUDE overrides).
# Idempotent: does nothing once `.gloo/include/gloo/context.h` exists. The package is checked by SHA-256.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB="libgloo-dev_0.0~git20220518.5b14351-3_amd64.deb"
SHA256="80529c9fd8af452faf489e686b94bf87075965c40673803810c4f41634b1e299"
URL="http://deb.debian.org/debian/pool/main/g/gloo/${DEB}"

if [[ -f .gloo/include/gloo/context.h ]]; then
  exit 0
fi
echo "balance: fetching gloo's headers (${DEB}, 49 kB) into .gloo (first use only)..." >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt knows the mirror (and a proxy, if any); plain HTTP from Debian's pool is the fallback.
if [[ -n "${BALANCE_GLOO_NO_APT:-}" ]] || ! (cd "$work" && apt-get download libgloo-dev=0.0~git20220518.5b14351-3 >/dev/null 2>&1); then
  if command -v curl >/dev/null; then
    curl -fsSL -o "$work/$DEB" "$URL"
  else
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$URL" "$work/$DEB"
  fi
fi
echo "${SHA256}  $work/$DEB" | sha256sum -c --quiet -
mkdir -p "$work/x"
if command -v dpkg-deb >/dev/null && [[ -z "${BALANCE_GLOO_NO_DPKG:-}" ]]; then
  dpkg-deb -x "$work/$DEB" "$work/x"
else
  # A .deb is an ar archive whose data.tar.* holds the files: read both with Python's standard library.
  python3 - "$work/$DEB" "$work/x" <<'PY'
import io, sys, tarfile
deb, out = sys.argv[1], sys.argv[2]
blob = open(deb, "rb").read()
assert blob[:8] == b"!<arch>\n", "not an ar archive"
pos = 8
while pos < len(blob):
    name = blob[pos:pos + 16].decode().strip().rstrip("/")
    size = int(blob[pos + 48:pos + 58].decode().strip())
    data = blob[pos + 60:pos + 60 + size]
    if name.startswith("data.tar"):
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tarfile.open(fileobj=io.BytesIO(data)).extractall(out, **safe)
        break
    pos += 60 + size + (size % 2)
else:
    sys.exit("no data.tar member in " + deb)
PY
fi
rm -rf .gloo.partial && mkdir -p .gloo.partial
cp -r "$work/x/usr/include" .gloo.partial/include
rm -rf .gloo && mv .gloo.partial .gloo
echo "balance: gloo headers ready at .gloo/include" >&2
