#!/usr/bin/env bash
# Runs every benchmark of hsm-kms and records what they print in docs/benchmarks.md.
#
# Usage: scripts/bench.sh [benchmark ...]     (default: all of benches/*.rs)
#
# Installs what the benchmarks need when it is missing (SoftHSM2; PostgreSQL, started
# throw-away for the deployment benchmark as scripts/test.sh does; moto_server from PyPI in
# .venv-bench, the emulator the server benchmark compares against), runs each benchmark in
# the release profile, and replaces the section between the "bench.sh" markers of
# docs/benchmarks.md with the figures, ratios and verdicts printed, headed by the date, the
# commit and the load average before and after. The hand-written analysis above the markers
# is left alone. Benchmarks share the machine's cores: run it on an otherwise idle machine.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

hsmkms_ensure_softhsm
# The throw-away PostgreSQL of the deployment benchmark (benches/instances.rs).
hsmkms_ensure_postgres

# moto_server for the server benchmark's comparison, pinned.
moto_version=5.2.5
venv=.venv-bench
if [[ ! -x $venv/bin/moto_server ]] || ! $venv/bin/python -c "import moto, sys; sys.exit(moto.__version__ != '$moto_version')" 2>/dev/null; then
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        hsmkms_apt_install python3 python3-venv
    fi
    hsmkms_log "installing moto_server $moto_version in $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$moto_version"
fi
export HSM_KMS_BENCH_MOTO=$PWD/$venv/bin/moto_server

if [[ $# -gt 0 ]]; then
    benches=("$@")
else
    benches=()
    for file in benches/*.rs; do
        benches+=("$(basename "$file" .rs)")
    done
fi

load() { cut -d' ' -f1 /proc/loadavg; }
commit=$(git rev-parse --short HEAD)
if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
    commit="$commit (with uncommitted changes)"
fi
report=$(mktemp)
errors=$(mktemp)
trap 'rm -f "$report" "$errors"; hsmkms_stop_postgres' EXIT
hsmkms_start_postgres
failed=()
{
    printf 'Run by `scripts/bench.sh` on %s, commit %s, %s cores, load average %s before.\n' \
        "$(date -u '+%Y-%m-%d %H:%M UTC')" "$commit" "$(nproc)" "$(load)"
    for bench in "${benches[@]}"; do
        hsmkms_log "cargo bench --bench $bench"
        printf '\n### `cargo bench --bench %s` (load average %s at start)\n\n```text\n' "$bench" "$(load)"
        if ! cargo bench --quiet --bench "$bench" 2>"$errors"; then
            failed+=("$bench")
            printf 'FAILED: the benchmark did not finish; its last words:\n'
            tail -n 5 "$errors"
        fi
        printf '```\n'
    done
    printf '\nLoad average %s at the end.\n' "$(load)"
} >"$report"

doc=docs/benchmarks.md
begin='<!-- bench.sh: begin -->'
end='<!-- bench.sh: end -->'
if ! grep -qF "$begin" "$doc"; then
    printf '\n## Latest run of every benchmark\n\n%s\n%s\n' "$begin" "$end" >>"$doc"
fi
python3 - "$doc" "$report" "$begin" "$end" <<'PY'
import sys
doc, report, begin, end = sys.argv[1:]
text = open(doc).read()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc, "w").write(head + begin + "\n" + open(report).read() + end + tail)
PY
hsmkms_log "figures written to $doc"
if [[ ${#failed[@]} -gt 0 ]]; then
    hsmkms_die "benchmarks that failed: ${failed[*]}"
fi
