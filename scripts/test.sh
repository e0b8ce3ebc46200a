#!/usr/bin/env bash
# The test command of the README and of CI (`.ci/run` calls exactly this).
#
# 1. Installs what the tests need when it is missing (Debian packages, rustfmt, clippy).
# 2. Runs, failing fast: rustfmt check, clippy with -D warnings, all tests, doctests.
#
# Tests start their own peers (Mosquitto, VictoriaMetrics, Prometheus, the firmware
# stubs) on free loopback ports. This script never starts or stops a system service.
#
# Works from any directory; as root (CI), through sudo, or fails listing what is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the tests use. Issue 7 adds chromium and chromium-driver. systemd
# (systemd-analyze) and strace check the unit of deploy/systemd (tests/deploy.rs).
# python3-venv holds the schemathesis venv of scripts/schemathesis-venv.sh.
readonly DEBIAN_PACKAGES=(mosquitto mosquitto-clients mbpoll victoria-metrics prometheus systemd strace python3-venv chromium chromium-driver)

started_at=$SECONDS

banner() {
    printf '\n==> [%4ds] %s\n' "$((SECONDS - started_at))" "$*"
}

die() {
    printf 'scripts/test.sh: %s\n' "$*" >&2
    exit 1
}

# Prints the packages of DEBIAN_PACKAGES that are not installed, one per line.
missing_debian_packages() {
    local package status
    for package in "${DEBIAN_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
        if [[ $status != "install ok installed" ]]; then
            printf '%s\n' "$package"
        fi
    done
}

# Runs apt-get as root: directly when we are root, else through sudo.
apt_get() {
    if [[ $(id -u) -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get "$@"
    else
        sudo env DEBIAN_FRONTEND=noninteractive apt-get "$@"
    fi
}

install_debian_packages() {
    banner "Debian packages: ${DEBIAN_PACKAGES[*]}"
    if ! command -v dpkg-query >/dev/null 2>&1; then
        die "not a Debian system (no dpkg-query); install these by hand, then rerun: ${DEBIAN_PACKAGES[*]}"
    fi
    local missing=()
    mapfile -t missing < <(missing_debian_packages)
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "all installed"
        return
    fi
    echo "missing: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
        die "missing Debian packages and neither root nor sudo; run as root: apt-get install ${missing[*]}"
    fi
    apt_get update
    apt_get install -y --no-install-recommends "${missing[@]}"
    mapfile -t missing < <(missing_debian_packages)
    if [[ ${#missing[@]} -ne 0 ]]; then
        die "still missing after apt-get install: ${missing[*]}"
    fi
}

ensure_rust_components() {
    banner "Rust toolchain"
    command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust with rustup (https://rustup.rs), then rerun"
    local wanted=()
    cargo fmt --version >/dev/null 2>&1 || wanted+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || wanted+=(clippy)
    if [[ ${#wanted[@]} -ne 0 ]]; then
        command -v rustup >/dev/null 2>&1 || die "missing Rust components and no rustup: ${wanted[*]}"
        rustup component add "${wanted[@]}"
    fi
    cargo --version
    cargo fmt --version
    cargo clippy --version
}

install_debian_packages
ensure_rust_components

export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

banner "cargo fmt --all -- --check"
cargo fmt --all -- --check

banner "cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# tests/api_schemathesis.rs runs schemathesis (PyPI) from a venv under target/.
banner "schemathesis venv (target/schemathesis-venv)"
bash scripts/schemathesis-venv.sh

# Doctests first: nextest does not run them, and its summary should close the run.
banner "cargo test --workspace --doc --locked"
cargo test --workspace --doc --locked

# nextest runs each test in its own process with the timeouts of .config/nextest.toml.
if cargo nextest --version >/dev/null 2>&1; then
    banner "cargo nextest run --workspace --locked --no-fail-fast"
    cargo nextest run --workspace --locked --no-fail-fast
else
    banner "cargo test --workspace --all-targets --locked (cargo-nextest not installed)"
    cargo test --workspace --all-targets --locked --no-fail-fast
fi

banner "all checks passed"
