#!/usr/bin/env bash
# Creates a local hsm-kms cluster of independent SoftHSM2 HSMs, for development and tests.
#
# Usage: scripts/softhsm-cluster.sh DIR [MEMBERS]
#
# MEMBERS (default 2, at most 26) HSMs are made under DIR, named hsm-a, hsm-b, ... in
# zones zone-a, zone-b, ...  Each member gets its own copy of the SoftHSM2 module (so one
# process can load every member as a separate PKCS#11 module), its own softhsm2.conf and
# token directory, one token labelled after the member, and random user and SO PINs in
# user.pin and so.pin (mode 0600). DIR/hsm-kms.toml, the hsm-kms configuration naming
# every member, is written last: its presence marks a complete cluster, and the script
# refuses to touch a DIR that already has one. PINs are never printed.
set -euo pipefail
umask 077

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    printf 'usage: %s DIR [MEMBERS=2]\n' "${0##*/}" >&2
    exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
[[ $1 != -* ]] || usage
dir_arg=$1
members=${2:-2}
if ! [[ $members =~ ^[0-9]+$ ]] || ((10#$members < 1 || 10#$members > 26)); then
    hsmkms_die "MEMBERS must be a number from 1 to 26, got '$members'"
fi
members=$((10#$members))

# Escapes a value for a TOML basic string; refuses control characters.
toml_str() {
    local value=$1
    [[ $value != *[[:cntrl:]]* ]] || hsmkms_die "path contains a control character: cannot write it to TOML"
    value=${value//\\/\\\\}
    value=${value//\"/\\\"}
    printf '"%s"' "$value"
}

# Prints 16 random hex characters, read from /dev/urandom.
random_pin() {
    local pin
    pin=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
    [[ ${#pin} -eq 16 ]] || hsmkms_die "could not read random bytes from /dev/urandom"
    printf '%s' "$pin"
}

hsmkms_ensure_softhsm
system_module=$(hsmkms_softhsm_module)

# Paths this run created; removed again if the run fails part-way.
created=()
finished=0
cleanup() {
    if [[ $finished -ne 1 && ${#created[@]} -gt 0 ]]; then
        hsmkms_log "failed: removing what this run created"
        rm -rf -- "${created[@]}"
    fi
}
trap cleanup EXIT

if [[ ! -e $dir_arg ]]; then
    mkdir -p -- "$dir_arg"
    created+=("$(cd -- "$dir_arg" && pwd -P)")
fi
[[ -d $dir_arg ]] || hsmkms_die "$dir_arg is not a directory"
dir=$(cd -- "$dir_arg" && pwd -P)
config=$dir/hsm-kms.toml
[[ ! -e $config ]] || hsmkms_die "$config already exists: $dir already holds a cluster (remove the directory to start over)"

letters=(a b c d e f g h i j k l m n o p q r s t u v w x y z)
names=()
for ((i = 0; i < members; i++)); do
    name=hsm-${letters[i]}
    [[ ! -e $dir/$name ]] || hsmkms_die "$dir/$name already exists (left from another run?): remove it first"
    names+=("$name")
done

for name in "${names[@]}"; do
    member_dir=$dir/$name
    mkdir -- "$member_dir"
    created+=("$member_dir")
    mkdir -- "$member_dir/tokens"
    install -m 0700 -- "$system_module" "$member_dir/libsofthsm2-$name.so"
    cat >"$member_dir/softhsm2.conf" <<CONF
# SoftHSM2 configuration of member $name, written by scripts/softhsm-cluster.sh
directories.tokendir = $member_dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
    user_pin=$(random_pin)
    so_pin=$(random_pin)
    printf '%s' "$user_pin" >"$member_dir/user.pin"
    printf '%s' "$so_pin" >"$member_dir/so.pin"
    chmod 0600 -- "$member_dir/user.pin" "$member_dir/so.pin"
    SOFTHSM2_CONF=$member_dir/softhsm2.conf softhsm2-util \
        --module "$member_dir/libsofthsm2-$name.so" \
        --init-token --free --label "$name" --so-pin "$so_pin" --pin "$user_pin" >/dev/null ||
        hsmkms_die "softhsm2-util could not initialise the token of $name"
    unset user_pin so_pin
done

if [[ ! -e $dir/data ]]; then
    mkdir -- "$dir/data"
    created+=("$dir/data")
fi

# A development credential for `hsm-kms serve`, in the AWS shared-credentials format, so
# `AWS_SHARED_CREDENTIALS_FILE=DIR/credentials aws --profile hsm-kms ...` signs requests.
access_key=HKMSDEV$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F')
secret_key=$(od -An -N30 -tx1 /dev/urandom | tr -d ' \n')
[[ ${#access_key} -eq 23 && ${#secret_key} -eq 60 ]] || hsmkms_die "could not read random bytes from /dev/urandom"
credentials=$dir/credentials
printf '[hsm-kms]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$access_key" "$secret_key" >"$credentials"
created+=("$credentials")
unset secret_key

tmp_config=$(mktemp "$dir/.hsm-kms.toml.XXXXXX")
created+=("$tmp_config")
{
    printf '# hsm-kms configuration written by scripts/softhsm-cluster.sh\n'
    printf 'default_cluster = "local"\n\n'
    printf '[service]\n'
    printf 'region = "us-east-1"\n'
    printf 'account_id = "111122223333"\n'
    printf 'data_dir = %s\n\n' "$(toml_str "$dir/data")"
    printf '# The development credential (profile hsm-kms of the shared-credentials file).\n'
    printf '[[credentials]]\n'
    printf 'shared_credentials_file = %s\n' "$(toml_str "$credentials")"
    printf 'profile = "hsm-kms"\n'
    printf 'account_id = "111122223333"\n'
    printf 'principal_arn = "arn:aws:iam::111122223333:user/hsm-kms-dev"\n\n'
    printf '[clusters.local]\n'
    printf 'replication = "hsm-kms"   # hsm-kms replicates key material between independent HSMs\n'
    printf 'material_pool = 32        # ready AES key material kept for CreateKey (0: none)\n'
    for ((i = 0; i < members; i++)); do
        name=${names[i]}
        member_dir=$dir/$name
        printf '\n[[clusters.local.members]]\n'
        printf 'name = "%s"\n' "$name"
        printf 'zone = "zone-%s"\n' "${letters[i]}"
        printf 'module = %s\n' "$(toml_str "$member_dir/libsofthsm2-$name.so")"
        printf 'token = "pkcs11:token=%s"\n' "$name"
        printf 'user_pin = %s\n' "$(toml_str "file:$member_dir/user.pin")"
        printf 'so_pin = %s\n' "$(toml_str "file:$member_dir/so.pin")"
        printf 'env = { SOFTHSM2_CONF = %s }\n' "$(toml_str "$member_dir/softhsm2.conf")"
    done
} >"$tmp_config"
mv -- "$tmp_config" "$config"
finished=1

printf 'SoftHSM2 cluster "local" with %d member(s) in %s:\n' "$members" "$dir"
printf '  %-8s %-8s %s\n' MEMBER ZONE TOKEN
for ((i = 0; i < members; i++)); do
    printf '  %-8s %-8s %s\n' "${names[i]}" "zone-${letters[i]}" "pkcs11:token=${names[i]}"
done
printf 'PINs are in each member directory (user.pin, so.pin; mode 0600).\n'
printf 'credentials: %s (profile hsm-kms; mode 0600)\n' "$credentials"
printf 'config: %s\n' "$config"
