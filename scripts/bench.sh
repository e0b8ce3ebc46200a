#!/usr/bin/env bash
# The acquisition benchmarks of issue 3 (docs/benchmarks.md). Not part of scripts/test.sh.
#
# 1. Sets up what they need when it is missing: Mosquitto (Debian), a Python venv with
#    pymodbus from PyPI under target/bench-venv, release builds of dcguard and dcguard-sim.
# 2. Runs `cargo bench -p dcguard --bench acquisition -- ARGS` (default: all five), which
#    starts and kills every process itself, on loopback only, and writes the Markdown
#    report to target/bench/report.md (and stdout).
#
# Usage: scripts/bench.sh [plan|one-conn|python|daemon|mqtt|all] [--runs N] [--secs S]
#                         [--daemon-secs S] [--messages N] [--out FILE]
# Example (what docs/benchmarks.md reports): scripts/bench.sh all --runs 5 --secs 4 --daemon-secs 60
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() {
    printf 'scripts/bench.sh: %s\n' "$*" >&2
    exit 1
}

if [[ ! -x /usr/sbin/mosquitto ]]; then
    command -v apt-get >/dev/null 2>&1 || die "install mosquitto, then rerun"
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto
    else
        sudo apt-get update && sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto
    fi
fi
command -v ss >/dev/null 2>&1 || die "ss (iproute2) is needed to count the daemon's requests"

readonly VENV=target/bench-venv
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import pymodbus' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet 'pymodbus==3.16.1'
fi
"$VENV/bin/python" -c 'import pymodbus; print("pymodbus", pymodbus.__version__)'

cargo build --release -p dcguard --bin dcguard -p firmware-stubs --bin dcguard-sim

if [[ $# -eq 0 ]]; then
    set -- all
fi
cargo bench -p dcguard --bench acquisition -- "$@"
