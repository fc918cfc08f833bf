#!/usr/bin/env bash
# The dashboard at a million orders (issue 7): the first page, a deep page (keyset cursor 900,000
# orders back) and a search by pgCno, timed against the release binary on SQLite and PostgreSQL.
#   bash benches/dashboard_million.sh            # both backends, 1,000,000 orders
#   N=100000 bash benches/dashboard_million.sh sqlite
# Prints a Markdown table (median and max of 7 requests each, after 2 warm-ups).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
WHICH=${1:-both}
PORT=18099
BASE="http://127.0.0.1:$PORT"
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release -q
BIN=target/release/kicc-checkout

fill_postgres() {
    psql -q -h 127.0.0.1 -U postgres -d "$1" <<SQL
INSERT INTO orders (shop_order_no, status, pay_method, currency, amount, cancelled_amount, goods_name,
    customer_id, customer_name, customer_mail, customer_contact_no, customer_addr, trade_type, pg_cno,
    created_at, updated_at, paid_at)
SELECT 'B' || lpad(g::text, 19, '0'),
       CASE WHEN g % 10 < 7 THEN 'paid' ELSE 'expired' END, 'wechat',
       CASE WHEN g % 3 = 0 THEN 'USD' ELSE 'KRW' END, 1000 + g % 50000, 0, 'Bench item',
       'G' || g, 'Customer ' || (g % 5000), 'c' || (g % 5000) || '@example.com', '01012345678', 'Seoul',
       'native', 'P' || lpad(g::text, 19, '0'),
       timestamp '2026-01-01' + g * interval '15 seconds', timestamp '2026-01-01' + g * interval '15 seconds',
       CASE WHEN g % 10 < 7 THEN timestamp '2026-01-01' + g * interval '15 seconds' END
FROM generate_series(1, $N) g;
ANALYZE orders;
SQL
}

fill_sqlite() {
    python3 - "$1" "$N" <<'PY'
import sqlite3, sys
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
c.execute("""
WITH RECURSIVE seq(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM seq WHERE g < ?)
INSERT INTO orders (shop_order_no, status, pay_method, currency, amount, cancelled_amount, goods_name,
    customer_id, customer_name, customer_mail, customer_contact_no, customer_addr, trade_type, pg_cno,
    created_at, updated_at, paid_at)
SELECT 'B' || printf('%019d', g), CASE WHEN g % 10 < 7 THEN 'paid' ELSE 'expired' END, 'wechat',
       CASE WHEN g % 3 = 0 THEN 'USD' ELSE 'KRW' END, 1000 + g % 50000, 0, 'Bench item',
       'G' || g, 'Customer ' || (g % 5000), 'c' || (g % 5000) || '@example.com', '01012345678', 'Seoul',
       'native', 'P' || printf('%019d', g),
       datetime('2026-01-01', '+' || (g * 15) || ' seconds'), datetime('2026-01-01', '+' || (g * 15) || ' seconds'),
       CASE WHEN g % 10 < 7 THEN datetime('2026-01-01', '+' || (g * 15) || ' seconds') END
FROM seq""", (n,))
c.commit()
c.execute("ANALYZE")
c.close()
PY
}

# The cursor of the order 900,000 (or 90%) back from the newest.
deep_cursor() {
    local depth=$((N * 9 / 10))
    python3 - "$1" "$depth" <<'PY'
import sys, datetime, subprocess
url, depth = sys.argv[1], int(sys.argv[2])
sql = f"SELECT created_at, id FROM orders ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET {depth}"
if url.startswith("sqlite://"):
    import sqlite3
    created, id_ = sqlite3.connect(url[len("sqlite://"):]).execute(sql).fetchone()
else:
    db = url.rsplit("/", 1)[1].split("?")[0]
    out = subprocess.check_output(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atc", sql.replace("SELECT created_at", "SELECT to_char(created_at, 'YYYY-MM-DD HH24:MI:SS')")], text=True)
    created, id_ = out.strip().split("|")
t = datetime.datetime.strptime(created[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc)
print(f"{int(t.timestamp()) * 1000000}.{int(id_) + 1}")
PY
}

time_path() {  # median and max of 7 timed requests, in ms
    local path=$1
    # The page must really be the list (signed in, rows shown), or the timing means nothing.
    local code rows
    code=$(curl -s -o "$WORK/page.html" -w '%{http_code}' -b "$WORK/jar" "$BASE$path")
    rows=$(grep -c 'href="/admin/orders/B' "$WORK/page.html" || true)
    if [ "$code" != 200 ] || [ "$rows" -lt 1 ]; then
        echo "bench: $path answered $code with $rows order rows" >&2
        exit 1
    fi
    echo "($path: HTTP $code, $rows rows, $(wc -c <"$WORK/page.html") bytes)" >&2
    curl -s -o /dev/null -b "$WORK/jar" "$BASE$path"
    for _ in 1 2 3 4 5 6 7; do curl -s -o /dev/null -b "$WORK/jar" -w '%{time_total}\n' "$BASE$path"; done |
        python3 -c 'import sys,statistics; v=sorted(float(x)*1000 for x in sys.stdin); print(f"{statistics.median(v):.1f} ms | {v[-1]:.1f} ms")'
}

bench() {
    local backend=$1 url
    if [ "$backend" = sqlite ]; then
        url="sqlite://$WORK/shop.db"
    else
        psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS kicc_bench" -c "CREATE DATABASE kicc_bench"
        url="postgres://postgres@127.0.0.1:5432/kicc_bench?sslmode=disable&gssencmode=disable"
    fi
    DATABASE_URL="$url" "$BIN" migrate >/dev/null
    local start=$SECONDS
    if [ "$backend" = sqlite ]; then fill_sqlite "$WORK/shop.db"; else fill_postgres kicc_bench; fi
    echo "($backend: $N orders inserted in $((SECONDS - start)) s)" >&2
    DATABASE_URL="$url" BIND_ADDR=127.0.0.1:$PORT ADMIN_PASSWORD=bench-password-1 RUST_LOG=warn \
        "$BIN" serve >"$WORK/out.log" 2>&1 &
    echo $! >"$WORK/pid"
    for _ in $(seq 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
    local token
    token=$(curl -s -c "$WORK/jar" "$BASE/admin/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p')
    curl -s -o /dev/null -b "$WORK/jar" -c "$WORK/jar" -d "csrf=$token&user=admin&password=bench-password-1&next=/admin" "$BASE/admin/login"
    local cursor
    cursor=$(deep_cursor "$url")
    local wanted
    wanted=$(printf 'P%019d' $((N / 2)))
    echo "| $backend | first page (50) | $(time_path /admin/orders) |"
    echo "| $backend | deep page ($((N * 9 / 10)) back) | $(time_path "/admin/orders?before=$cursor") |"
    echo "| $backend | search by pgCno | $(time_path "/admin/orders?q=$wanted") |"
    kill "$(cat "$WORK/pid")"; wait "$(cat "$WORK/pid")" 2>/dev/null || true
    rm -f "$WORK/pid"
    if [ "$backend" = postgres ]; then psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE kicc_bench WITH (FORCE)"; fi
}

echo "| backend | request | median | max |"
echo "|---|---|---|---|"
case "$WHICH" in
    sqlite|postgres) bench "$WHICH" ;;
    both) bench sqlite; bench postgres ;;
esac
