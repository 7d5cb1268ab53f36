#!/usr/bin/env bash
# Runs hsm-kms on a local two-HSM SoftHSM2 cluster and serves the AWS KMS API on loopback.
#
# Usage: scripts/dev.sh [--instances 1|2] [DIR]
#        (DIR defaults to dev-cluster/ at the top of the repo)
#
# Creates the cluster in DIR with scripts/softhsm-cluster.sh unless DIR already holds
# one, builds the release binary, initialises the cluster (`hsm-kms cluster init`)
# unless `hsm-kms cluster check` already passes, shows `cluster status`, then runs
# `hsm-kms serve` in the foreground on 127.0.0.1:8443 (or the next free port) until
# Ctrl-C. The first line on stdout is the AWS CLI command that lists the keys; the rest
# of this script's own output goes to stderr. Exits non-zero when any step fails.
#
# With --instances 2 it runs two servers instead, as a multi-instance deployment does: a
# throw-away local PostgreSQL (installed from Debian when missing, started with the
# lib.sh helper and stopped, its data gone, when this script exits) holds the metadata of
# both, and both use the same two-member HSM cluster. Each instance has its own config
# (DIR/instance-a.toml, DIR/instance-b.toml: the cluster's config with its own data_dir
# and `[store] backend = "postgres"`). The first two lines on stdout are the AWS CLI
# commands that list the keys through each endpoint; Ctrl-C stops both servers.
set -euo pipefail

script_dir=$(cd -- "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$script_dir")
# shellcheck source=scripts/lib.sh
source "$script_dir/lib.sh"

usage() {
    printf 'usage: %s [--instances 1|2] [DIR]\n' "${0##*/}" >&2
    exit 2
}
instances=1
if [[ ${1:-} == --instances ]]; then
    [[ $# -ge 2 && ($2 == 1 || $2 == 2) ]] || usage
    instances=$2
    shift 2
fi
[[ $# -le 1 ]] || usage
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
# Cargo builds into CARGO_TARGET_DIR when it is set (relative to the repository).
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$repo/$target_dir
hsm_kms=$target_dir/release/hsm-kms

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

# Prints the first free port from $1 up to 8543.
free_port() {
    local port=$1
    while port_in_use "$port"; do
        ((port < 8543)) || hsmkms_die "no free port from 8443 to 8543 on 127.0.0.1"
        port=$((port + 1))
    done
    printf '%s\n' "$port"
}

# Prints the AWS CLI command that lists the keys through the server on port $1.
list_keys_command() {
    printf 'AWS_SHARED_CREDENTIALS_FILE=%s/credentials aws --profile hsm-kms --region us-east-1 --endpoint-url http://127.0.0.1:%s kms list-keys\n' \
        "$dir" "$1"
}

if ((instances == 2)); then
    hsmkms_ensure_postgres
    servers=()
    stop_all() {
        local pid
        for pid in "${servers[@]}"; do
            kill -TERM "$pid" 2>/dev/null || true
        done
        for pid in "${servers[@]}"; do
            wait "$pid" 2>/dev/null || true
        done
        hsmkms_stop_postgres
    }
    trap stop_all EXIT
    trap 'exit 130' INT TERM
    hsmkms_start_postgres
    export HSM_KMS_POSTGRES_URL=$HSM_KMS_TEST_POSTGRES_URL
    port=8442
    for instance in a b; do
        instance_config=$dir/instance-$instance.toml
        # The cluster's config with this instance's own data directory (its admin socket,
        # alarm file) and the shared metadata store.
        sed "s|^data_dir = .*|data_dir = \"$dir/data-$instance\"|" "$config" >"$instance_config"
        printf '\n[store]\nbackend = "postgres"\nurl = "env:HSM_KMS_POSTGRES_URL"\n' >>"$instance_config"
        port=$(free_port $((port + 1)))
        "$hsm_kms" --config "$instance_config" serve --listen "127.0.0.1:$port" \
            2> >(sed -u "s/^/[instance $instance] /" >&2) &
        servers+=("$!")
        for _ in $(seq 300); do
            port_in_use "$port" && break
            kill -0 "${servers[-1]}" 2>/dev/null || hsmkms_die "instance $instance exited"
            sleep 0.1
        done
        port_in_use "$port" || hsmkms_die "instance $instance does not listen on $port"
        list_keys_command "$port"
        hsmkms_log "instance $instance: http://127.0.0.1:$port ($instance_config)"
    done
    hsmkms_log "two instances on one PostgreSQL and one HSM cluster; Ctrl-C stops both"
    wait -n "${servers[@]}" || true
    hsmkms_log "an instance stopped: stopping the other and PostgreSQL"
    exit 1
fi

port=$(free_port 8443)
printf 'AWS_SHARED_CREDENTIALS_FILE=%s/credentials aws --profile hsm-kms --region us-east-1 --endpoint-url http://127.0.0.1:%s kms list-keys\n' \
    "$dir" "$port"
exec "$hsm_kms" --config "$config" serve --listen "127.0.0.1:$port"
