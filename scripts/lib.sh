# shellcheck shell=bash
# Shared helpers for the scripts in this folder. Source it; do not run it.
#
# Owns: finding and installing the host tools the scripts need (SoftHSM2,
# OpenSC's pkcs11-tool, the PostgreSQL server), locating the system SoftHSM2 module,
# and starting and stopping a throw-away PostgreSQL cluster.
# Never: prints a PIN, a password or any other secret.

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

# Prints the directory of the newest installed PostgreSQL server's programs (initdb,
# pg_ctl); fails when no server is installed.
hsmkms_postgres_bindir() {
    local bindir
    bindir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1)
    [[ -n $bindir && -x $bindir/initdb && -x $bindir/pg_ctl ]] || return 1
    printf '%s\n' "$bindir"
}

# Installs Debian's PostgreSQL server when no server is installed.
hsmkms_ensure_postgres() {
    hsmkms_postgres_bindir >/dev/null && return 0
    hsmkms_apt_install postgresql
    hsmkms_postgres_bindir >/dev/null || hsmkms_die "initdb still missing after installing postgresql"
}

# Runs a command as the unprivileged owner of the throw-away cluster.
hsmkms_as_postgres_owner() {
    if [[ $HSMKMS_POSTGRES_OWNER == "$(id -un)" ]]; then
        "$@"
    else
        runuser -u "$HSMKMS_POSTGRES_OWNER" -- "$@"
    fi
}

# Starts a throw-away PostgreSQL cluster: initdb in a new temporary directory, owned by
# an unprivileged user (PostgreSQL refuses to run as root: as root this uses the system
# user `postgres`, created when missing), listening on a free loopback port with
# password authentication only. Exports HSM_KMS_TEST_POSTGRES_URL, the URL of its
# database `hsmkms` for the superuser `hsmkms` (who may create the tests' databases).
# Stop it with hsmkms_stop_postgres (e.g. from an EXIT trap).
hsmkms_start_postgres() {
    local bindir password port attempt
    bindir=$(hsmkms_postgres_bindir) || hsmkms_die "no PostgreSQL server installed"
    if [[ $(id -u) -eq 0 ]]; then
        HSMKMS_POSTGRES_OWNER=postgres
        if ! id -u postgres >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin postgres
        fi
    else
        HSMKMS_POSTGRES_OWNER=$(id -un)
    fi
    HSMKMS_POSTGRES_DIR=$(mktemp -d -t hsm-kms-postgres.XXXXXX)
    password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    (umask 077 && printf '%s\n' "$password" >"$HSMKMS_POSTGRES_DIR/pwfile")
    chown -R "$HSMKMS_POSTGRES_OWNER" "$HSMKMS_POSTGRES_DIR"
    hsmkms_as_postgres_owner "$bindir/initdb" --pgdata="$HSMKMS_POSTGRES_DIR/data" \
        --username=hsmkms --pwfile="$HSMKMS_POSTGRES_DIR/pwfile" --auth=scram-sha-256 \
        --encoding=UTF8 --no-locale >"$HSMKMS_POSTGRES_DIR/initdb.log" 2>&1 ||
        hsmkms_die "initdb failed (see $HSMKMS_POSTGRES_DIR/initdb.log)"
    rm -f "$HSMKMS_POSTGRES_DIR/pwfile"
    # A throw-away cluster: no fsync (its data dies with the run), room for the pools of
    # tests running in parallel.
    for attempt in 1 2 3 4 5 6 7 8; do
        port=$((20000 + RANDOM % 40000))
        if hsmkms_as_postgres_owner "$bindir/pg_ctl" --pgdata="$HSMKMS_POSTGRES_DIR/data" \
            --log="$HSMKMS_POSTGRES_DIR/server.log" --wait --silent \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$HSMKMS_POSTGRES_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
            start; then
            break
        fi
        hsmkms_log "PostgreSQL did not start on port $port (try $attempt): trying another port"
    done
    hsmkms_as_postgres_owner "$bindir/pg_ctl" --pgdata="$HSMKMS_POSTGRES_DIR/data" status >/dev/null ||
        hsmkms_die "PostgreSQL did not start (see $HSMKMS_POSTGRES_DIR/server.log)"
    PGPASSWORD=$password "$bindir/createdb" --host=127.0.0.1 --port="$port" --username=hsmkms hsmkms ||
        hsmkms_die "could not create the database hsmkms"
    export HSM_KMS_TEST_POSTGRES_URL="postgresql://hsmkms:$password@127.0.0.1:$port/hsmkms"
    hsmkms_log "throw-away PostgreSQL running on 127.0.0.1:$port (data in $HSMKMS_POSTGRES_DIR)"
}

# Stops the cluster hsmkms_start_postgres started and removes its directory.
hsmkms_stop_postgres() {
    [[ -n ${HSMKMS_POSTGRES_DIR:-} && -d $HSMKMS_POSTGRES_DIR ]] || return 0
    local bindir
    bindir=$(hsmkms_postgres_bindir) &&
        hsmkms_as_postgres_owner "$bindir/pg_ctl" --pgdata="$HSMKMS_POSTGRES_DIR/data" \
            --mode=fast --wait --silent stop || true
    rm -rf "$HSMKMS_POSTGRES_DIR"
    HSMKMS_POSTGRES_DIR=
    unset HSM_KMS_TEST_POSTGRES_URL
}
