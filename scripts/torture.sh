#!/usr/bin/env bash
# Runs the long versions of the fault tests and prints a summary; not run by CI.
#
# Usage: scripts/torture.sh [--dev]
#
# Steps, each a test binary run with a long setting (an environment variable already
# set wins, so a shorter run is `HSM_KMS_KILL_POINTS=50 scripts/torture.sh`):
#   kill9          SIGKILL of `hsm-kms serve` under load  HSM_KMS_KILL_POINTS=1000
#   hostile_input  property tests of every parser          HSM_KMS_PROPTEST_CASES=1000000
#   races          concurrent calls on shared keys         HSM_KMS_RACE_OPS=10000
#   hsm_loss       HSMs taken away under load              HSM_KMS_LOSS_SECS=300
# A step whose test file is not in the tree is reported as absent. Tests are built with
# the release profile (`--dev`: the dev profile, quicker to build, slower to run). Each
# step's full output goes to target/torture/NAME.log. The summary ends with the line to
# copy into docs/reliability.md; the script exits non-zero when a step failed.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=(--release)
case ${1:-} in
    "") ;;
    --dev) profile=() ;;
    *) hsmkms_die "usage: scripts/torture.sh [--dev]" ;;
esac

hsmkms_ensure_softhsm

export HSM_KMS_KILL_POINTS=${HSM_KMS_KILL_POINTS:-1000}
export HSM_KMS_PROPTEST_CASES=${HSM_KMS_PROPTEST_CASES:-1000000}
export HSM_KMS_RACE_OPS=${HSM_KMS_RACE_OPS:-10000}
export HSM_KMS_LOSS_SECS=${HSM_KMS_LOSS_SECS:-300}

logs=target/torture
mkdir -p "$logs"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    commit="$commit+changes"
fi
started=$(date -u +%Y-%m-%dT%H:%MZ)
summary=()
failed=0

# Runs one test binary with its long setting; records PASS/FAIL/absent and its figures.
#   $1 test name   $2 what the setting is   $3 grep pattern of the lines worth keeping
run_step() {
    local name=$1 setting=$2 keep=$3 log=$logs/$1.log begin status figures
    if [[ ! -f tests/$name.rs ]]; then
        summary+=("$(printf '%-14s absent (tests/%s.rs is not in this tree)' "$name" "$name")")
        return
    fi
    hsmkms_log "running $name ($setting); output in $log"
    begin=$SECONDS
    if cargo test "${profile[@]}" --test "$name" -- --nocapture >"$log" 2>&1; then
        status=PASS
    else
        status=FAIL
        failed=1
    fi
    figures=$(grep -aE "$keep" "$log" | tail -n 3 | tr '\n' ' ' || true)
    summary+=("$(printf '%-14s %s  %s  %dm%02ds  %s' "$name" "$status" "$setting" \
        $(((SECONDS - begin) / 60)) $(((SECONDS - begin) % 60)) "$figures")")
}

run_step kill9 "HSM_KMS_KILL_POINTS=$HSM_KMS_KILL_POINTS" \
    'kill points, [0-9]+ acknowledged writes lost|answered calls'
run_step hostile_input "HSM_KMS_PROPTEST_CASES=$HSM_KMS_PROPTEST_CASES per property" \
    '^test result:|^hostile JSON answers'
run_step races "HSM_KMS_RACE_OPS=$HSM_KMS_RACE_OPS" '^test result:'
run_step hsm_loss "HSM_KMS_LOSS_SECS=$HSM_KMS_LOSS_SECS" '^test result:'

printf '\nhsm-kms torture run, started %s, commit %s, profile %s\n' \
    "$started" "$commit" "${profile[*]:---dev}"
printf '%s\n' "${summary[@]}"
if ((failed)); then
    printf 'RESULT: FAILED (see %s/*.log)\n' "$logs"
    exit 1
fi
printf 'RESULT: passed\n'
