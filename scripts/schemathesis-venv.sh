#!/usr/bin/env bash
# Installs schemathesis (PyPI, pinned) into a Python virtual environment under target/,
# never system-wide: `target/schemathesis-venv/bin/st`. Idempotent: a venv that already has
# the pinned version is kept. Called by scripts/test.sh before the tests and by
# tests/api_schemathesis.rs when the venv is missing. Needs python3 with venv (Debian
# python3-venv).
set -euo pipefail

readonly VERSION=4.32.5
target="${CARGO_TARGET_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target}"
venv="$target/schemathesis-venv"

if [[ -x $venv/bin/st ]] && "$venv/bin/st" --version 2>/dev/null | grep -q " $VERSION\$"; then
    echo "schemathesis $VERSION present in $venv"
    exit 0
fi
mkdir -p "$target"
python3 -m venv --clear "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
"$venv/bin/st" --version
