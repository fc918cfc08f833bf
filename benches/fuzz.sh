#!/usr/bin/env bash
# Runs one property-test ("fuzz") suite again and again for at least SECONDS (default 60), each
# run with PROPTEST_CASES cases per test (default 20000) and a fresh random seed; stops at the
# first failure. Suites: webhook, replies, return-url (parsers, the library's tests) and money
# (the one rule of money over random interleavings of events for one order, the integration test
# tests/api/money_property.rs on both databases; each case is a real order over real HTTP, so its
# default is 200 cases per run). docs/RELIABILITY.md.
#   benches/fuzz.sh webhook 60            # debug build
#   CARGO_PROFILE=release benches/fuzz.sh replies 60
#   benches/fuzz.sh money 600             # PostgreSQL at TEST_POSTGRES_URL, as the tests
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
suite=${1:?suite: webhook, replies, return-url or money}
seconds=${2:-60}
cases=${PROPTEST_CASES:-20000}
target=(--lib)
case "$suite" in
    webhook) filter='test(/kicc::fuzz::(notification_parser_never_panics|valid_notifications_parse)/)' ;;
    replies) filter='test(/kicc::fuzz::(reply_parsers_never_panic|a_valid_signed_approval)/)' ;;
    return-url) filter='test(/checkout::approval::fuzz::/)' ;;
    money)
        filter='test(/money_property::/)'
        target=(--test api)
        cases=${PROPTEST_CASES:-200}
        export CI=1 TEST_POSTGRES_URL=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
        ;;
    *) echo "unknown suite $suite" >&2; exit 2 ;;
esac
profile=()
[ "${CARGO_PROFILE:-}" = release ] && profile=(--release)
cargo nextest run "${target[@]}" "${profile[@]}" --no-run
start=$SECONDS
runs=0
while (( SECONDS - start < seconds )); do
    if ! PROPTEST_CASES=$cases cargo nextest run "${target[@]}" "${profile[@]}" -E "$filter" \
        --hide-progress-bar --status-level fail --final-status-level fail >/tmp/fuzz-$suite.log 2>&1; then
        cat /tmp/fuzz-$suite.log
        echo "$suite: FAILED in run $((runs + 1))" >&2
        exit 1
    fi
    runs=$((runs + 1))
done
tests=$(PROPTEST_CASES=1 cargo nextest list "${target[@]}" "${profile[@]}" -E "$filter" 2>/dev/null | grep -c '::')
echo "$suite: $runs runs x $tests tests x $cases cases = $((runs * tests * cases)) cases in $((SECONDS - start)) s, 0 failures"
