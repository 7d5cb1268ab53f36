#!/usr/bin/env bash
# Runs hsm-kms on a local two-HSM SoftHSM2 cluster and serves the AWS KMS API on loopback.
#
# Usage: scripts/dev.sh [DIR]   (DIR defaults to dev-cluster/ at the top of the repo)
#
# Creates the cluster in DIR with scripts/softhsm-cluster.sh unless DIR already holds
# one, builds the release binary, initialises the cluster (`hsm-kms cluster init`)
# unless `hsm-kms cluster check` already passes, shows `cluster status`, then runs
# `hsm-kms serve` in the foreground on 127.0.0.1:8443 (or the next free port) until
# Ctrl-C. The first line on stdout is the AWS CLI command that lists the keys; the rest
# of this script's own output goes to stderr. Exits non-zero when any step fails.
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
    "$script_dir/softhsm-cluster.sh" "$dir" 2 >&2
fi
dir=$(cd -- "$dir" && pwd -P)
config=$dir/hsm-kms.toml
[[ -f $dir/credentials ]] ||
    hsmkms_die "$dir has no credentials file (made by an older scripts/softhsm-cluster.sh): remove $dir to start over"

(cd -- "$repo" && cargo build --release) >&2
hsm_kms=$repo/target/release/hsm-kms

if "$hsm_kms" --config "$config" cluster check >/dev/null 2>&1; then
    hsmkms_log "cluster already initialised: skipping cluster init"
else
    "$hsm_kms" --config "$config" cluster init >&2
fi
"$hsm_kms" --config "$config" cluster check >&2
"$hsm_kms" --config "$config" cluster status >&2

# Succeeds when something accepts connections on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

port=8443
while port_in_use "$port"; do
    ((port < 8543)) || hsmkms_die "no free port from 8443 to 8543 on 127.0.0.1"
    port=$((port + 1))
done

printf 'AWS_SHARED_CREDENTIALS_FILE=%s/credentials aws --profile hsm-kms --region us-east-1 --endpoint-url http://127.0.0.1:%s kms list-keys\n' \
    "$dir" "$port"
exec "$hsm_kms" --config "$config" serve --listen "127.0.0.1:$port"
