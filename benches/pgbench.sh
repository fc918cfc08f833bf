#!/usr/bin/env bash
# The PostgreSQL ack's SQL alone, without the app (docs/BENCHMARKS.md): pgbench, 8 clients like
# the app's pool, 10 s each, alternating, on a fresh database with the app's migrations and
# 200,000 pending WeChat orders:
#   insert_ceiling.sql     BEGIN; the ceiling's one-row INSERT; COMMIT (kicc-ceiling /insert)
#   ack_transaction.sql    BEGIN; the delivery's insert with its order; the note with the ack;
#                          COMMIT (the transaction's four round trips)
#   ack_one_statement.sql  the one statement (ApprovalAccept in src/db/fixed.rs)
# Usage: bash benches/pgbench.sh [rounds]. PostgreSQL: TEST_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
ADMIN=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=kicc_pgbench_ack
URL=${ADMIN%/*}/$DB
cargo build --release -q --bin kicc-checkout
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
DATABASE_URL=$URL target/release/kicc-checkout migrate >/dev/null
psql -q "$URL" <<'SQL'
CREATE TABLE ceiling_rows (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL);
INSERT INTO orders (shop_order_no, status, pay_method, currency, amount, cancelled_amount,
  goods_name, customer_id, customer_name, customer_mail, customer_contact_no, customer_addr,
  created_at, updated_at)
SELECT 'O' || g, 'pending', 'wechat', 'KRW', 1000, 0, 'g', 'c', 'n', 'm', '1', 'a', now(), now()
FROM generate_series(1, 200000) g;
VACUUM ANALYZE;
SQL
for round in $(seq "${1:-2}"); do
    for script in insert_ceiling ack_transaction ack_one_statement; do
        tps=$(pgbench -n -M prepared -c 8 -j 2 -T 10 -f "benches/pgbench/$script.sql" "$URL" 2>&1 |
              sed -n 's/^tps = \([0-9.]*\).*/\1/p')
        echo "round $round $script: $tps transactions/s"
    done
done
psql -q "$ADMIN" -c "DROP DATABASE $DB"
