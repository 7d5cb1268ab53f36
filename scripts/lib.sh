# shellcheck shell=bash
# Shared helpers for the scripts in this folder. Source it; do not run it.
#
# Owns: finding and installing the host tools the scripts need (SoftHSM2,
# OpenSC's pkcs11-tool) and locating the system SoftHSM2 module.
# Never: prints a PIN or any other secret.

# Prints a message to stderr, prefixed with the calling script's name.
hsmkms_log() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
}

# Prints a message to stderr and exits non-zero.
hsmkms_die() {
    hsmkms_log "error: $*"
    exit 1
}

# Runs a command as root: directly when already root, else through sudo.
hsmkms_as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        hsmkms_die "need root (or sudo) to run: $*"
    fi
}

# Installs Debian packages non-interactively, refreshing the package lists first.
hsmkms_apt_install() {
    hsmkms_log "installing Debian packages: $*"
    hsmkms_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    hsmkms_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# Succeeds when the named program is on PATH and executable.
hsmkms_have() {
    local path
    path=$(command -v "$1" 2>/dev/null) && [[ -x $path ]]
}

# Installs softhsm2 and opensc when softhsm2-util or pkcs11-tool is missing.
hsmkms_ensure_softhsm() {
    if hsmkms_have softhsm2-util && hsmkms_have pkcs11-tool; then
        return 0
    fi
    hsmkms_apt_install softhsm2 opensc
    hsmkms_have softhsm2-util || hsmkms_die "softhsm2-util still missing after installing softhsm2"
    hsmkms_have pkcs11-tool || hsmkms_die "pkcs11-tool still missing after installing opensc"
}

# Prints the path of the system's SoftHSM2 PKCS#11 module (libsofthsm2.so).
hsmkms_softhsm_module() {
    local candidate
    for candidate in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so; do
        if [[ -f $candidate ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    candidate=$(dpkg -L softhsm2 libsofthsm2 2>/dev/null | grep -m1 '/libsofthsm2\.so$' || true)
    if [[ -n $candidate && -f $candidate ]]; then
        printf '%s\n' "$candidate"
        return 0
    fi
    hsmkms_die "libsofthsm2.so not found (is the softhsm2 package installed?)"
}
