#!/usr/bin/env bash
# Runs every test of hsm-kms; the one command to use on a fresh Debian machine.
#
# Usage: scripts/test.sh [extra arguments for the test runner]
#
# Installs what the tests need when it is missing, starts a throw-away PostgreSQL
# cluster (stopped when the script exits) whose URL the tests find in
# HSM_KMS_TEST_POSTGRES_URL, then runs the tests with cargo-nextest (or plain
# `cargo test` when nextest cannot be had) and exits non-zero when any test fails.
# The tests make their own SoftHSM2 clusters with scripts/softhsm-cluster.sh in
# temporary directories, and their own databases in the PostgreSQL cluster.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --- Step 1: host tools -------------------------------------------------------------
hsmkms_ensure_softhsm
# tests/compliance.rs renders the HTML report in headless Chromium and validates the JUnit
# report against tests/junit.xsd with xmllint.
if ! hsmkms_have chromium || ! hsmkms_have xmllint; then
    hsmkms_apt_install chromium libxml2-utils
fi

# The PostgreSQL server for the tests of the shared metadata store: they skip (saying so)
# without HSM_KMS_TEST_POSTGRES_URL, so here it is always set.
hsmkms_ensure_postgres
example_dir=
cleanup() {
    hsmkms_stop_postgres
    [[ -z $example_dir ]] || rm -rf "$example_dir"
}
trap cleanup EXIT
hsmkms_start_postgres

# --- Step 2: test runner ------------------------------------------------------------
runner=nextest
if ! cargo nextest --version >/dev/null 2>&1; then
    hsmkms_log "cargo-nextest missing: installing it"
    if ! cargo install cargo-nextest --locked; then
        hsmkms_log "could not install cargo-nextest: falling back to cargo test"
        runner=cargo-test
    fi
fi

# --- Step 3: Python venv for the real-client tests ---------------------------------
# .venv at the top of the repo (ignored by git) holds the pinned AWS clients of
# tests/clients/requirements.txt; it is reinstalled only when that file changes.
requirements=tests/clients/requirements.txt
stamp=.venv/requirements.sha256
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        hsmkms_apt_install python3 python3-venv
    fi
    hsmkms_log "creating .venv with the pinned AWS clients"
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
    printf '%s\n' "$want" >"$stamp"
fi

# --- Last step: run the tests -------------------------------------------------------
# Doctests first (nextest does not run them), then the crate's tests, then some of them
# again in vendor mode, then the AWS SDK for Rust client test (behind its cargo feature),
# then the Python clients. Each step stops the script when it fails.
#
# The README's library example runs against a fresh two-member cluster, initialised by the
# binary; it finds the cluster's config through HSM_KMS_EXAMPLE_CONFIG.
example_dir=$(mktemp -d)
scripts/softhsm-cluster.sh "$example_dir" 2 >/dev/null
cargo run --quiet -- --config "$example_dir/hsm-kms.toml" cluster init >/dev/null
HSM_KMS_EXAMPLE_CONFIG="$example_dir/hsm-kms.toml" cargo test --doc
# The PKCS#11 module tests/vendor_mode.rs loads (that test also builds it when missing).
cargo build -p pkcs11-vendor-sim
if [[ $runner == nextest ]]; then
    cargo nextest run --lib --bins --tests "$@"
else
    cargo test --lib --bins --tests "$@"
fi
# Second pass: the key store, audit and custom key store tests again in vendor mode, their
# clusters turned into one pkcs11-vendor-sim slot over the same SoftHSM2 tokens (see
# tests/common/vendor.rs).
vendor_tests=(--test keystore --test keystore_states --test audit --test custom_key_stores)
if [[ $runner == nextest ]]; then
    HSM_KMS_TEST_REPLICATION=vendor cargo nextest run "${vendor_tests[@]}" "$@"
else
    HSM_KMS_TEST_REPLICATION=vendor cargo test "${vendor_tests[@]}" "$@"
fi
cargo test --features aws-sdk-tests --test aws_sdk
.venv/bin/python -m pytest tests/clients
