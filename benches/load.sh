#!/usr/bin/env bash
# The load harness (issues 9 and 10), one command:
#   bash benches/load.sh                    # issue 9: every figure, SQLite and PostgreSQL
#   bash benches/load.sh bench sqlite       # one backend
#   bash benches/load.sh reliability        # issue 10: 10,000 deliveries for 2,000 orders, SQLite
#   LOAD_SECONDS=20 LOAD_ORDERS=10000 bash benches/load.sh
#   bash benches/load.sh profile sqlite     # instructions per request under callgrind (valgrind)
#   LOAD_PERF=orders bash benches/load.sh bench sqlite   # perf record of one phase
#   AB_BASE=efc8e1e bash benches/load.sh ab postgres      # distinct acks: that commit (A)
#                                                         # against the working tree (B);
#                                                         # AB_PERF=1: perf record -a of each sample
# Installs wrk from Debian if missing, builds the release binaries (the app and its ceilings,
# src/bin/kicc-ceiling.rs), then runs benches/load/harness.py. PostgreSQL: TEST_POSTGRES_URL
# (default postgres://postgres@127.0.0.1:5432/postgres; needs CREATEDB).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-bench}
need=()
command -v wrk >/dev/null || need+=(wrk)
if [ "$MODE" = profile ]; then command -v valgrind >/dev/null || need+=(valgrind); fi
if [ -n "${LOAD_PERF:-}${AB_PERF:-}" ]; then command -v perf >/dev/null || need+=(linux-perf); fi
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q --bin kicc-checkout --bin kicc-ceiling
if [ "$MODE" = ab ]; then
    # The base build in a worktree of its own, with its own target directory (a first build
    # takes minutes; later ones of the same commit are at once).
    base=${AB_BASE:?AB_BASE=<commit> to compare the working tree against}
    rev=$(git rev-parse --short "$base")
    tree=target/ab/tree-$rev
    [ -d "$tree" ] || git worktree add -q --detach "$tree" "$rev"
    (cd "$tree" && CARGO_TARGET_DIR=../target cargo build --release -q --bin kicc-checkout)
    export AB_BINS="target/ab/target/release/kicc-checkout,target/release/kicc-checkout"
fi
BACKEND=${2:-}
if [ -z "$BACKEND" ]; then
    if [ "$MODE" = bench ]; then BACKEND=both; else BACKEND=sqlite; fi
fi
exec python3 benches/load/harness.py "$MODE" "$BACKEND"
