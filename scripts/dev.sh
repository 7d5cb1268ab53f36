#!/usr/bin/env bash
# Runs the main job of hsm-kms on a local two-HSM SoftHSM2 cluster.
#
# Usage: scripts/dev.sh [DIR]   (DIR defaults to dev-cluster/ at the top of the repo)
#
# Creates the cluster in DIR with scripts/softhsm-cluster.sh unless DIR already holds
# one, builds the release binary, initialises the cluster (`hsm-kms cluster init`)
# unless `hsm-kms cluster check` already passes, then runs `cluster check` and
# `cluster status`. Exits non-zero when any step fails.
set -euo pipefail

script_dir=$(cd -- "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$script_dir")
# shellcheck source=scripts/lib.sh
source "$script_dir/lib.sh"

[[ $# -le 1 ]] || { printf 'usage: %s [DIR]\n' "${0##*/}" >&2; exit 2; }
dir=${1:-$repo/dev-cluster}
config=$dir/hsm-kms.toml

if [[ -f $config ]]; then
    hsmkms_log "using the existing cluster in $dir"
else
    "$script_dir/softhsm-cluster.sh" "$dir" 2
fi
config=$(cd -- "$dir" && pwd -P)/hsm-kms.toml

(cd -- "$repo" && cargo build --release)
hsm_kms=$repo/target/release/hsm-kms

if "$hsm_kms" --config "$config" cluster check >/dev/null 2>&1; then
    hsmkms_log "cluster already initialised: skipping cluster init"
else
    "$hsm_kms" --config "$config" cluster init
fi
"$hsm_kms" --config "$config" cluster check
"$hsm_kms" --config "$config" cluster status
