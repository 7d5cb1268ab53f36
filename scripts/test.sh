#!/usr/bin/env bash
# Runs every test of hsm-kms; the one command to use on a fresh Debian machine.
#
# Usage: scripts/test.sh [extra arguments for the test runner]
#
# Installs what the tests need when it is missing, then runs the tests with
# cargo-nextest (or plain `cargo test` when nextest cannot be had) and exits
# non-zero when any test fails. The tests make their own SoftHSM2 clusters with
# scripts/softhsm-cluster.sh in temporary directories, so nothing is started here.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --- Step 1: host tools -------------------------------------------------------------
hsmkms_ensure_softhsm

# --- Step 2: test runner ------------------------------------------------------------
runner=nextest
if ! cargo nextest --version >/dev/null 2>&1; then
    hsmkms_log "cargo-nextest missing: installing it"
    if ! cargo install cargo-nextest --locked; then
        hsmkms_log "could not install cargo-nextest: falling back to cargo test"
        runner=cargo-test
    fi
fi

# --- Further set-up steps (for example a Python venv for SDK tests) go here, -------
# --- each as its own numbered block before the test run. ---------------------------

# --- Last step: run the tests -------------------------------------------------------
# Doctests first (nextest does not run them), so the main run's summary closes the output.
cargo test --doc
if [[ $runner == nextest ]]; then
    cargo nextest run --all-targets "$@"
else
    cargo test --all-targets "$@"
fi
