#!/usr/bin/env python3
"""The load harness (issues 9 and 10): the release binary on SQLite and PostgreSQL, driven by wrk.

    python3 benches/load/harness.py bench [sqlite|postgres|both]     # issue 9: figures and ceilings
    python3 benches/load/harness.py reliability [sqlite|postgres]    # issue 10: 10,000 deliveries

Run from the project root after `cargo build --release` (benches/load.sh does both). Every phase
prints a RESULT line from wrk; the run ends with a Markdown table and a correctness check
(orders, deliveries and acks reconciled with what the sandbox holds) and exits 1 on any mismatch.
"""

import argparse
import collections
import http.client
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

BIN = "target/release/kicc-checkout"
CEILING = "target/release/kicc-ceiling"
PG_ADMIN = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DURATION = int(os.environ.get("LOAD_SECONDS", "10"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Connections of every wrk phase (the "at 64 connections").
CONNS = 64
SANDBOX_MALL = "T5102001"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---- processes ---------------------------------------------------------------------------

class Proc:
    """A server started from the release build, ready once it prints where it listens."""

    def __init__(self, cmd, env, name):
        self.name = name
        started = time.monotonic()
        full_env = {"PATH": os.environ["PATH"], "RUST_LOG": "warn"}
        full_env.update(env)
        self.p = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        for line in self.p.stdout:
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.base = m.group(1)
                break
        else:
            self.p.wait()
            raise SystemExit(f"{name} did not start: {self.p.stderr.read() if self.p.stderr else ''}")
        self.startup_ms = (time.monotonic() - started) * 1000
        # Keep both pipes drained so a chatty server never blocks on them.
        threading.Thread(target=lambda: [None for _ in self.p.stdout], daemon=True).start()
        threading.Thread(target=lambda: [None for _ in self.p.stderr], daemon=True).start()
        self.port = int(self.base.rsplit(":", 1)[1])

    def stat(self):
        """(CPU seconds so far, peak RSS in MiB)."""
        with open(f"/proc/{self.p.pid}/stat") as f:
            cpu = cpu_seconds(f.read())
        with open(f"/proc/{self.p.pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
        return cpu, hwm / 1024

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.p.kill()


def wrk(url, script, conns, seconds=DURATION, threads=2, args=()):
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s", "--timeout", "30s",
           "-s", script, url]
    if args:
        cmd += ["--", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def perf_record(out, args):
    """Starts `perf record ARGS -o OUT`; returns the function that stops it (as Ctrl-C does,
    so it writes its file) and says where the data is."""
    perf = subprocess.Popen(["perf", "record", *args, "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)

    def stop():
        perf.send_signal(2)
        perf.wait()
        log(f"   perf data: {out}")
    return stop


def measured(proc, fn, phase=None):
    """Runs fn(); adds the process's CPU use (cores) and peak RSS to its result.

    LOAD_PERF=PHASE[,PHASE…] (e.g. `orders`, `webhooks_distinct`) records the process with
    `perf record -g` during that phase, into target/perf-BACKEND-PHASE.data."""
    perf = None
    if phase and phase.split("/")[-1] in os.environ.get("LOAD_PERF", "").split(","):
        perf = perf_record(f"target/perf-{phase.replace('/', '-')}.data",
                           ["-F", "499", "-g", "--call-graph", "dwarf,16384", "-p", str(proc.p.pid)])
    cpu0, _ = proc.stat()
    t0 = time.monotonic()
    result = fn()
    if perf:
        perf()
    cpu1, rss = proc.stat()
    with open(f"/proc/{proc.p.pid}/status") as f:
        status = dict(l.split(":", 1) for l in f if ":" in l)
    result["memory"] = {k: status[k].strip() for k in ("VmRSS", "RssAnon", "RssFile", "Threads") if k in status}
    if phase:
        log(f"   {phase}: {result['memory']}")
    result["cpu_cores"] = (cpu1 - cpu0) / (time.monotonic() - t0)
    result["rss_mb"] = rss
    return result


WRITER_HISTOGRAMS = ("batch_size", "bodies_seconds", "commit_seconds")


def writer_metrics(base):
    """The SQLite writer's histograms from /metrics (empty on PostgreSQL, which has no writer)."""
    status, body = Http(base).call("GET", "/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("sqlite_writer_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def writer_profile(before, after):
    """Per writer histogram over one phase: count, mean, p50/p99 (as bucket bounds) and how
    many samples fell above 5 ms (the stalls that make a webhook's p99)."""
    out = {}
    for metric in WRITER_HISTOGRAMS:
        base = f"sqlite_writer_{metric}"
        delta = lambda k: after.get(k, 0.0) - before.get(k, 0.0)
        count = delta(f"{base}_count")
        if count <= 0:
            continue
        buckets = sorted((float(re.search(r'le="([^"]+)"', k).group(1)), delta(k))
                         for k in after if k.startswith(f"{base}_bucket"))
        quantile = lambda q: next(le for le, n in buckets if n >= q * count)
        row = {"count": int(count), "mean": delta(f"{base}_sum") / count,
               "p50_le": quantile(0.5), "p99_le": quantile(0.99)}
        if metric.endswith("_seconds"):
            row["over_5ms"] = int(count - dict(buckets).get(0.005, 0.0))
        out[metric] = row
    return out


def with_writer(app, fn):
    """fn()'s result with the writer's profile over it (`writer`), logged."""
    before = writer_metrics(app.base)
    result = fn()
    profile = writer_profile(before, writer_metrics(app.base))
    if profile:
        result["writer"] = profile
        for metric, row in profile.items():
            log(f"   writer {metric}: {json.dumps(row)}")
    return result


# ---- databases ---------------------------------------------------------------------------

class Database:
    def __init__(self, backend, tmp):
        self.backend = backend
        if backend == "sqlite":
            self.path = os.path.join(tmp, f"{uuid.uuid4().hex}.db")
            self.url = f"sqlite://{self.path}"
        else:
            self.name = f"kicc_load_{uuid.uuid4().hex[:12]}"
            subprocess.run(["psql", "-q", PG_ADMIN, "-c", f"CREATE DATABASE {self.name}"], check=True)
            u = urllib.parse.urlparse(PG_ADMIN)
            self.url = urllib.parse.urlunparse(u._replace(path="/" + self.name,
                                                          query="sslmode=disable"))

    def rows(self, sql):
        if self.backend == "sqlite":
            c = sqlite3.connect(self.path, timeout=30)
            try:
                return c.execute(sql).fetchall()
            finally:
                c.close()
        # The SQL on standard input: a list of 20,000 order numbers is too long for argv.
        out = subprocess.run(["psql", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", self.url],
                             input=sql, capture_output=True, text=True, check=True).stdout
        return [tuple(l.split("\t")) for l in out.splitlines() if l]

    def one(self, sql):
        return self.rows(sql)[0][0]

    def drop(self):
        if self.backend == "postgres":
            subprocess.run(["psql", "-q", PG_ADMIN, "-c",
                            f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)"], check=False)


# ---- HTTP helpers ------------------------------------------------------------------------

class Http:
    """A keep-alive connection to one server."""

    def __init__(self, base):
        u = urllib.parse.urlparse(base)
        self.host, self.port = u.hostname, u.port
        self.c = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def call(self, method, path, body=None, ctype="application/json"):
        headers = {"Content-Type": ctype} if body is not None else {}
        for attempt in range(2):
            try:
                self.c.request(method, path, body=body, headers=headers)
                r = self.c.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=60)
        raise SystemExit(f"{method} {path}: connection lost twice")


ORDER = json.dumps({
    "items": [{"sku": "CERAMIC-MUG", "quantity": 2}, {"sku": "STICKER-PACK", "quantity": 1}],
    "currency": "KRW", "payMethod": "wechat", "device": "pc",
    "customer": {"name": "Load Shopper", "email": "load@example.com", "phone": "010-1234-5678",
                 "address": "Seoul"}})


def create_orders(app_base, n, threads=4):
    """n orders through POST /api/orders: [(shopOrderNo, pgCno, amount, currency)]."""
    out, lock = [], threading.Lock()

    def work(count):
        h = Http(app_base)
        for _ in range(count):
            status, body = h.call("POST", "/api/orders", ORDER)
            if status != 201:
                raise SystemExit(f"POST /api/orders answered {status}: {body[:200]}")
            o = json.loads(body)
            with lock:
                out.append((o["shopOrderNo"], o["pgCno"], o["amount"], o["currency"]))

    workers = [threading.Thread(target=work, args=(n // threads + (1 if i < n % threads else 0),))
               for i in range(threads)]
    [t.start() for t in workers]
    [t.join() for t in workers]
    return out


def approve_at_kicc(sandbox_base, orders):
    """The shoppers pay and never come back: KICC approves each trade and notifies an address
    that does not answer (the harness delivers the notifications itself)."""
    def work(part):
        h = Http(sandbox_base)
        for no, pg_cno, _, _ in part:
            h.call("POST", "/control/scenario",
                   json.dumps({"shopOrderNo": no, "scenario": "return_lost"}))
            status, _ = h.call("POST", f"/wechat/pay/{pg_cno}", "action=pay",
                               "application/x-www-form-urlencoded")
            if status != 200:
                raise SystemExit(f"paying {pg_cno} answered {status}")

    parts = [orders[i::4] for i in range(4)]
    threads = [threading.Thread(target=work, args=(p,)) for p in parts]
    [t.start() for t in threads]
    [t.join() for t in threads]


def notification(no, pg_cno, amount, currency):
    """Spec 04's approval notification, as KICC sends it."""
    return json.dumps({"resCd": "0000", "resMsg": "Success", "mallId": SANDBOX_MALL,
                       "shopOrderNo": no, "pgCno": pg_cno,
                       "approvalDate": time.strftime("%Y%m%d%H%M%S"),
                       "amountInfo": {"currency": currency, "amount": amount}},
                      separators=(",", ":"))


def write_bodies(tmp, orders, copies, name):
    lines = [notification(*o) for o in orders for _ in range(copies)]
    random.shuffle(lines)
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path, len(lines)


def until_paid(db, numbers, seconds=180):
    """Waits until every order in `numbers` is paid (the status checks after the acks)."""
    quoted = ",".join(f"'{n}'" for n in numbers)
    deadline = time.monotonic() + seconds
    while True:
        paid = int(db.one(f"SELECT COUNT(*) FROM orders WHERE status = 'paid' AND shop_order_no IN ({quoted})"))
        if paid == len(numbers) or time.monotonic() > deadline:
            return paid
        time.sleep(0.5)


def reconcile(db, sandbox_base, orders, deliveries_sent, acked):
    """Orders, deliveries and acks against what the sandbox holds. Returns (report, mismatches)."""
    numbers = [o[0] for o in orders]
    quoted = ",".join(f"'{n}'" for n in numbers)
    paid = until_paid(db, numbers)
    rows = db.rows(f"SELECT shop_order_no, status, amount, pg_cno FROM orders WHERE shop_order_no IN ({quoted})")
    mismatches = []
    h = Http(sandbox_base)
    for no, status, amount, pg_cno in rows:
        _, body = h.call("GET", f"/control/trades/{pg_cno}")
        trade = json.loads(body)
        if status != "paid" or int(amount) != trade.get("approvedAmount") or trade.get("statusCode") != "TS01":
            mismatches.append(f"{no}: app {status} {amount}, KICC {trade.get('statusCode')} {trade.get('approvedAmount')}")
    stored = int(db.one("SELECT COUNT(*) FROM webhook_deliveries WHERE route LIKE '%/payment'"))
    applied = int(db.one(f"SELECT COUNT(*) FROM webhook_deliveries WHERE applied = {'1' if db.backend == 'sqlite' else 'true'}"))
    acks_0000 = int(db.one("SELECT COUNT(*) FROM webhook_deliveries WHERE ack_res_cd = '0000'"))
    confirmed = int(db.one(f"SELECT COUNT(*) FROM order_events e JOIN orders o ON o.id = e.order_id "
                           f"WHERE e.to_status = 'paid' AND o.shop_order_no IN ({quoted})"))
    report = {"orders": len(orders), "orders_paid": paid, "deliveries_sent": deliveries_sent,
              "deliveries_stored": stored, "acked_0000_by_app": acks_0000, "acked_seen_by_kicc": acked,
              "applied": applied, "paid_transitions": confirmed, "mismatches": len(mismatches)}
    if stored != deliveries_sent:
        mismatches.append(f"{deliveries_sent} deliveries sent, {stored} stored")
    if acks_0000 != deliveries_sent or acked != deliveries_sent:
        mismatches.append(f"{deliveries_sent} sent, {acks_0000} acked 0000 by the app, {acked} seen acked")
    if applied != len(orders) or confirmed != len(orders):
        mismatches.append(f"{len(orders)} orders, {applied} deliveries applied, {confirmed} paid transitions")
    return report, mismatches


# ---- the runs ----------------------------------------------------------------------------

def start_stack(db, tmp, extra=None, wrap=(), bin=BIN):
    sandbox = Proc([bin, "sandbox", "--bind", "127.0.0.1:0"],
                   {"SANDBOX_WEBHOOK_BACKOFF_MS": "600000", "SANDBOX_AUTO_APPROVE_MS": "0"}, "sandbox")
    env = {
        "DATABASE_URL": db.url, "BIND_ADDR": "127.0.0.1:0",
        # KICC's own notifications go to an address nobody answers: the harness sends them.
        "PUBLIC_BASE_URL": "http://127.0.0.1:9",
        "KICC_API_BASE": sandbox.base, "KICC_MALL_ID": SANDBOX_MALL,
        "KICC_SECRET_KEY": "sandbox-msgauth-key-T5102001", "ADMIN_PASSWORD": "load-harness",
        "WEBHOOK_ALLOWED_IPS": "127.0.0.1", "CHECKOUT_RATE_LIMIT": "1000000",
    }
    env.update(extra or {})
    app = Proc([*wrap, bin, "serve"], env, "app")
    return sandbox, app


def bench(backend, tmp):
    log(f"== {backend}: ceilings")
    results = {}
    cdb = Database(backend, tmp)
    ceiling = Proc([CEILING, "--bind", "127.0.0.1:0", "--database-url", cdb.url], {}, "ceiling")
    results["hello"] = measured(ceiling, lambda: wrk(f"{ceiling.base}/hello", "benches/load/get.lua", CONNS),
                                f"{backend}/hello")
    results["insert"] = measured(ceiling, lambda: wrk(f"{ceiling.base}/insert", "benches/load/insert.lua", CONNS),
                                 f"{backend}/insert")
    ceiling.stop()
    cdb.drop()

    db = Database(backend, tmp)
    sandbox, app = start_stack(db, tmp)
    results["startup_ms"] = app.startup_ms
    log(f"== {backend}: app started in {app.startup_ms:.0f} ms; catalog")
    results["catalog"] = measured(app, lambda: wrk(f"{app.base}/", "benches/load/get.lua", CONNS),
                                  f"{backend}/catalog")
    log(f"== {backend}: checkout creation")
    results["orders"] = measured(app, lambda: with_writer(app, lambda: wrk(
                                     app.base, "benches/load/orders.lua", CONNS)),
                                 f"{backend}/orders")

    n = int(os.environ.get("LOAD_ORDERS", "20000"))
    log(f"== {backend}: {n} orders paid at KICC, notifications to deliver")
    orders = [tuple(r) for r in db.rows(
        f"SELECT shop_order_no, pg_cno, amount, currency FROM orders WHERE status = 'pending' AND pg_cno IS NOT NULL LIMIT {n}")]
    orders = [(a, b, int(c), d) for a, b, c, d in orders]
    approve_at_kicc(sandbox.base, orders)
    bodies, count = write_bodies(tmp, orders, 1, "distinct.jsonl")
    log(f"== {backend}: {count} distinct notifications")
    distinct = measured(app, lambda: with_writer(app, lambda: wrk(
                            app.base, "benches/load/notify.lua", CONNS, seconds=120,
                            args=(bodies, "2", "once"))),
                        f"{backend}/webhooks_distinct")
    distinct["rps"] = receipt_rate(db, count)
    results["webhooks_distinct"] = distinct
    paid = until_paid(db, [o[0] for o in orders])
    log(f"== {backend}: {paid}/{len(orders)} paid; duplicates")
    results["webhooks_duplicate"] = measured(app, lambda: with_writer(app, lambda: wrk(
                                                 app.base, "benches/load/notify.lua", CONNS,
                                                 args=(bodies, "2", "cycle"))),
                                             f"{backend}/webhooks_duplicate")
    dup = results["webhooks_duplicate"]
    applied_col = "1" if backend == "sqlite" else "true"
    check = {
        "orders": len(orders),
        "paid": int(db.one(f"SELECT COUNT(*) FROM orders WHERE status = 'paid'")),
        "distinct_sent": distinct["deliveries"], "distinct_acked": distinct["acked"],
        "duplicates_answered": dup["acked"] + dup["not_acked"], "duplicates_sent": dup["deliveries"],
        "stored": int(db.one("SELECT COUNT(*) FROM webhook_deliveries")),
        "applied": int(db.one(f"SELECT COUNT(*) FROM webhook_deliveries WHERE applied = {applied_col}")),
        "paid_transitions": int(db.one("SELECT COUNT(*) FROM order_events WHERE to_status = 'paid'")),
    }
    ok = (check["paid"] == check["orders"] == check["applied"] == check["paid_transitions"]
          and check["distinct_acked"] == check["distinct_sent"] == count
          and check["duplicates_answered"] <= check["stored"] - count <= check["duplicates_sent"]
          # Every duplicate answered but those in flight when wrk stopped (one per connection
          # at most): a stalled phase (a claim holding SQLite's write lock for seconds, once)
          # answers none or a round.
          and 0 < check["duplicates_answered"]
          and check["duplicates_sent"] - check["duplicates_answered"] <= CONNS
          and dup["not_acked"] == 0)
    check["acks"] = dict((str(k), int(v)) for k, v in db.rows(
        "SELECT COALESCE(ack_res_cd, '-'), COUNT(*) FROM webhook_deliveries GROUP BY 1"))
    results["check"] = check
    results["check_ok"] = ok
    app.stop()
    sandbox.stop()
    db.drop()
    # Start-up with migrations on a new SQLite file, alone (the figure above ran beside wrk's
    # neighbours): the median of 5.
    if backend == "sqlite":
        times = []
        for _ in range(5):
            d = Database("sqlite", tmp)
            s, a = start_stack(d, tmp)
            times.append(a.startup_ms)
            a.stop()
            s.stop()
        results["startup_ms"] = sorted(times)[2]
    return results


def cpu_seconds(stat):
    """User plus system CPU seconds from a `/proc/PID/stat` line."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def receipt_rate(db, count):
    """Deliveries per second over the app's own receipt times of the stored deliveries (wrk
    waits out its -d, so its own rate would understate a phase that ends early)."""
    first, last = db.rows("SELECT MIN(received_at), MAX(received_at) FROM webhook_deliveries")[0]
    span = seconds_between(first, last)
    return count / span if span > 0 else float("nan")


def server_cpu():
    """CPU seconds so far of every PostgreSQL server process on this machine (the postmaster's
    children: the pooled connections' backends, the WAL writer, the checkpointer)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        if s[s.index("(") + 1:s.rindex(")")].startswith("postgres"):
            total += cpu_seconds(s)
    return total


def pg_activity_sampler(db):
    """Polls `pg_stat_activity` every 10 ms from one psql session until the returned function
    is called; it returns a Counter of (state, wait event type, statement's start) over the
    database's other backends that were not idle, and the number of polls."""
    seen, polls, stop = collections.Counter(), [0], threading.Event()
    p = subprocess.Popen(["psql", "-At", "-F", "\t", db.url], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, bufsize=1)

    def poll():
        while not stop.is_set():
            p.stdin.write("SELECT state, wait_event_type, left(regexp_replace(query, '\\s+', ' ', 'g'), 70) "
                          "FROM pg_stat_activity WHERE datname = current_database() "
                          "AND pid <> pg_backend_pid() AND state <> 'idle';\nSELECT 'END';\n")
            p.stdin.flush()
            for line in iter(p.stdout.readline, "END\n"):
                if line.strip():
                    state, wait, query = line.rstrip("\n").split("\t")
                    seen[(state, wait, query)] += 1
            polls[0] += 1
            time.sleep(0.01)

    t = threading.Thread(target=poll, daemon=True)
    t.start()

    def done():
        stop.set()
        t.join()
        p.stdin.close()
        p.wait()
        return seen, polls[0]
    return done


def distinct_webhooks(backend, tmp, bin, n, tag):
    """One A/B sample: a fresh database and stack from `bin`, `n` orders paid at KICC, their
    approval notifications delivered once each at 64 connections. Returns the rate (from the
    app's own receipt times), wrk's p50/p99, and whether every order was then paid.

    AB_PERF=1 records the whole machine (`perf record -a`, no call graphs: PostgreSQL's
    processes among the rest) from the burst until every order is paid, into
    target/perf-ab-TAG.data; `perf report -i … --sort comm,dso,sym` says where it went.
    AB_SAMPLE=1 (PostgreSQL) samples what the app's backends are doing over the same span
    (`pg_activity_sampler`) and logs the most frequent states."""
    db = Database(backend, tmp)
    sandbox, app = start_stack(db, tmp, bin=bin)
    try:
        orders = create_orders(app.base, n)
        approve_at_kicc(sandbox.base, orders)
        bodies, count = write_bodies(tmp, orders, 1, "ab.jsonl")
        perf = perf_record(f"target/perf-ab-{tag}.data", ["-a", "-F", "999"]) \
            if os.environ.get("AB_PERF") else None
        sampler = pg_activity_sampler(db) if os.environ.get("AB_SAMPLE") and backend == "postgres" else None
        app_cpu0, server_cpu0 = app.stat()[0], server_cpu()
        # wrk waits out -d even when every delivery is answered; 30 s covers the orders.
        r = wrk(app.base, "benches/load/notify.lua", CONNS, seconds=30, args=(bodies, "2", "once"))
        rps = receipt_rate(db, count)
        paid = until_paid(db, [o[0] for o in orders])
        if perf:
            perf()
        if sampler:
            seen, polls = sampler()
            log(f"   {polls} samples of the app's backends (state | wait | statement): most frequent")
            for (state, wait, query), k in seen.most_common(12):
                log(f"   {k:6} {state} | {wait or '-'} | {query}")
        # CPU per paid order: its ack and its follow-up (status check, `paid`), app and server.
        app_ms = (app.stat()[0] - app_cpu0) * 1000 / count
        server_ms = (server_cpu() - server_cpu0) * 1000 / count if backend == "postgres" else 0.0
        res = {"rps": rps, "p50": r["p50_ms"],
               "p99": r["p99_ms"], "ok": paid == count == r["acked"],
               "app_cpu_ms": app_ms, "server_cpu_ms": server_ms, "hot": ""}
        app.stop()
        if backend == "postgres":
            # Once the app's backends have exited, their table statistics are in.
            for _ in range(100):
                if db.one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND pid <> pg_backend_pid()") == "0":
                    break
                time.sleep(0.05)
            upd, hot = db.rows("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                               "WHERE relname = 'webhook_deliveries'")[0]
            res["hot"] = f"{hot} of {upd}"
        return res
    finally:
        app.stop()
        sandbox.stop()
        db.drop()


def ab(backend, tmp, bins):
    """Distinct approval webhooks from two builds, alternating, with the one-insert ceiling
    measured beside each pair: `AB_ROUNDS` rounds (default 3) of `AB_ORDERS` orders (default
    3,000). The machine's noise moves both builds of a round alike, so the per-round ratios
    compare them."""
    rounds = int(os.environ.get("AB_ROUNDS", "3"))
    n = int(os.environ.get("AB_ORDERS", "3000"))
    rows = []
    for r in range(rounds):
        cdb = Database(backend, tmp)
        ceiling = Proc([CEILING, "--bind", "127.0.0.1:0", "--database-url", cdb.url], {}, "ceiling")
        ins = wrk(f"{ceiling.base}/insert", "benches/load/insert.lua", CONNS, seconds=5)
        ceiling.stop()
        cdb.drop()
        # Alternate which build goes first, so neither always meets a warmer machine.
        order = list(enumerate(bins)) if r % 2 == 0 else list(reversed(list(enumerate(bins))))
        for i, b in order:
            res = distinct_webhooks(backend, tmp, b, n, f"{backend}-{'AB'[i]}{r + 1}")
            res.update(round=r + 1, build="AB"[i], ceiling=ins["rps"], ceiling_p99=ins["p99_ms"])
            log(f"   round {r + 1} build {'AB'[i]} ({b}): {res}")
            rows.append(res)
    out = ["| round | build | distinct acks/s | ratio to insert ceiling | p50 ms | p99 ms "
           "| ceiling's p99 ms | CPU ms per order: app / PostgreSQL | deliveries' HOT updates | correct |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for x in rows:
        out.append(f"| {x['round']} | {x['build']} | {x['rps']:.0f} | {100 * x['rps'] / x['ceiling']:.0f}% "
                   f"of {x['ceiling']:.0f} | {x['p50']:.2f} | {x['p99']:.2f} | {x['ceiling_p99']:.2f} "
                   f"| {x['app_cpu_ms']:.2f} / {x['server_cpu_ms']:.2f} | {x['hot'] or '-'} "
                   f"| {'OK' if x['ok'] else 'NO'} |")
    print("\n".join(out))
    print(f"A = {bins[0]}, B = {bins[1]}")
    return all(x["ok"] for x in rows)


def seconds_between(a, b):
    def parse(s):
        s = str(s).replace("T", " ")
        base, _, frac = s.partition(".")
        t = time.mktime(time.strptime(base[:19], "%Y-%m-%d %H:%M:%S"))
        return t + (float("0." + frac.rstrip("Z").split("+")[0]) if frac else 0.0)
    return parse(b) - parse(a)


def table(all_results):
    lines = ["| backend | what | requests/s | ratio to ceiling | p50 ms | p99 ms | CPU cores | peak RSS MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for backend, r in all_results.items():
        rows = [("hello-world ceiling", r["hello"], None), ("one-insert ceiling", r["insert"], None),
                ("catalog page `GET /`", r["catalog"], r["hello"]),
                ("checkout `POST /api/orders` (+ sandbox)", r["orders"], None),
                ("approval webhooks, distinct", r["webhooks_distinct"], r["insert"]),
                ("approval webhooks, duplicates", r["webhooks_duplicate"], r["insert"])]
        for what, x, ceiling in rows:
            ratio = f"{x['rps'] / ceiling['rps']:.0%}" if ceiling else ""
            lines.append(f"| {backend} | {what} | {x['rps']:.0f} | {ratio} | {x['p50_ms']:.2f} | "
                         f"{x['p99_ms']:.2f} | {x['cpu_cores']:.2f} | {x['rss_mb']:.0f} |")
    return "\n".join(lines)


# ---- instruction profile (callgrind) ----------------------------------------------------

PROFILE_N = int(os.environ.get("PROFILE_REQUESTS", "200"))
# The body benches/load/insert.lua sends to the insert ceiling.
CEILING_BODY = ('{"resCd":"0000","resMsg":"Success","pgCno":"26112115301200000001",'
                '"amountInfo":{"currency":"KRW","amount":25000}}')


def profile(backend, tmp):
    """The app under valgrind's callgrind, one request at a time: instructions per request for
    each phase, and where they go. Unlike wall or CPU time, instruction counts do not move with
    the machine's other tenants, so a change can be judged by one run before and one after."""
    out_dir = os.path.abspath("target/callgrind")
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):
        if f.startswith(f"{backend}.") or f.startswith(f"{backend}-ceiling."):
            os.remove(os.path.join(out_dir, f))
    db = Database(backend, tmp)
    wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/{backend}",
            "--dump-instr=no", "--collect-systime=no"]
    sandbox, app = start_stack(db, tmp, wrap=wrap)
    pid = app.p.pid
    log(f"== {backend}: app under callgrind (pid {pid}); warming up")
    h = Http(app.base)

    def phase(name, fn, n, pid=pid, dumps=backend):
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        fn()
        subprocess.run(["callgrind_control", "-d", name, str(pid)], check=True, capture_output=True)
        log(f"   {name}: {n} requests")
        return name, n, dumps

    def gets(n):
        for _ in range(n):
            status, _ = h.call("GET", "/")
            assert status == 200, status

    def deliver(orders, wait_paid):
        for o in orders:
            status, body = h.call("POST", "/webhooks/kicc/payment", notification(*o),
                                  "application/json; charset=utf-8")
            assert status == 200 and b'"0000"' in body, (status, body)
        if wait_paid:
            assert until_paid(db, [o[0] for o in orders]) == len(orders)

    gets(20)
    warm = create_orders(app.base, 20, threads=1)
    approve_at_kicc(sandbox.base, warm)
    deliver(warm, True)
    deliver(warm, False)
    orders = []
    phases = [
        phase("catalog", lambda: gets(PROFILE_N), PROFILE_N),
        phase("checkout", lambda: orders.extend(create_orders(app.base, PROFILE_N, threads=1)), PROFILE_N),
    ]
    approve_at_kicc(sandbox.base, orders)
    phases.append(phase("webhooks_distinct", lambda: deliver(orders, True), PROFILE_N))
    phases.append(phase("webhooks_duplicate", lambda: deliver(orders, False), PROFILE_N))
    app.stop()
    sandbox.stop()
    db.drop()

    # The ceilings, the same way: hello-world and one insert per request.
    cdb = Database(backend, tmp)
    ceiling = Proc(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/{backend}-ceiling",
                    "--dump-instr=no", CEILING, "--bind", "127.0.0.1:0", "--database-url", cdb.url],
                   {}, "ceiling")
    ch = Http(ceiling.base)

    def ceiling_calls(method, path, n):
        for _ in range(n):
            status, _ = ch.call(method, path, CEILING_BODY if method == "POST" else None)
            assert status < 300, (path, status)

    ceiling_calls("GET", "/hello", 20)
    ceiling_calls("POST", "/insert", 20)
    phases += [phase(f"ceiling_{what}", lambda w=what, m=method: ceiling_calls(m, f"/{w}", PROFILE_N), PROFILE_N,
                     pid=ceiling.p.pid, dumps=f"{backend}-ceiling")
               for what, method in (("hello", "GET"), ("insert", "POST"))]
    ceiling.stop()
    cdb.drop()
    rows = []
    for name, n, dumps in phases:
        dump = next(os.path.join(out_dir, f) for f in sorted(os.listdir(out_dir))
                    if f.startswith(f"{dumps}.") and f"Trigger: dump {name}\n" in open(os.path.join(out_dir, f), errors="replace").read(4000))
        text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                              capture_output=True, text=True, check=True).stdout
        total = int(re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text, re.M).group(1).replace(",", ""))
        report = os.path.join(out_dir, f"{backend}-{name}.txt")
        with open(report, "w") as f:
            f.write(text)
        rows.append((name, n, total))
    print(f"| backend | phase | requests | k instructions / request |")
    print("|---|---|---:|---:|")
    for name, n, total in rows:
        print(f"| {backend} | {name} | {n} | {total / n / 1000:,.0f} |")
    log(f"   reports (callgrind_annotate --inclusive=yes): {out_dir}/{backend}-PHASE.txt")


def reliability(backend, tmp, n_orders=2000, deliveries=10000, conns=200):
    copies = deliveries // n_orders
    db = Database(backend, tmp)
    sandbox, app = start_stack(db, tmp)
    log(f"== reliability on {backend}: {n_orders} orders")
    orders = create_orders(app.base, n_orders)
    approve_at_kicc(sandbox.base, orders)
    bodies, count = write_bodies(tmp, orders, copies, "deliveries.jsonl")
    log(f"== {count} deliveries at {conns} connections while shoppers create orders")
    before = int(db.one("SELECT COUNT(*) FROM orders"))
    shoppers = {}
    t = threading.Thread(target=lambda: shoppers.update(
        wrk(app.base, "benches/load/orders.lua", 8, seconds=8, threads=1)))
    t.start()
    result = wrk(app.base, "benches/load/notify.lua", conns, seconds=60, threads=2,
                 args=(bodies, "2", "once"))
    t.join()
    report, mismatches = reconcile(db, sandbox.base, orders, result["deliveries"], result["acked"])
    # The shoppers' orders: every one registered at KICC with the amount the app holds.
    new_orders = db.rows(f"SELECT shop_order_no, pg_cno, amount, status FROM orders ORDER BY id LIMIT 100000 OFFSET {before}")
    h = Http(sandbox.base)
    for no, pg_cno, amount, status in new_orders:
        _, body = h.call("GET", f"/control/trades/{pg_cno or no}")
        trade = json.loads(body)
        if status != "pending" or trade.get("amount") != int(amount):
            mismatches.append(f"shopper order {no}: app {status} {amount}, KICC {trade.get('amount')}")
    report["shopper_orders_created"] = len(new_orders)
    report["shopper_orders_per_s"] = round(shoppers.get("rps", 0))
    report["webhook_p99_ms"] = round(result["p99_ms"], 2)
    report["mismatches"] = len(mismatches)
    app.stop()
    sandbox.stop()
    db.drop()
    return report, mismatches


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["bench", "reliability", "profile", "ab"])
    ap.add_argument("backend", nargs="?", default="both", choices=["sqlite", "postgres", "both"])
    a = ap.parse_args()
    backends = ["sqlite", "postgres"] if a.backend == "both" else [a.backend]
    with tempfile.TemporaryDirectory(prefix="kicc-load-") as tmp:
        if a.mode == "bench":
            results = {}
            for b in backends:
                results[b] = bench(b, tmp)
                # Each backend's rows as soon as it is done; all of them again below.
                log(table({b: results[b]}))
            print(table(results))
            print()
            for b, r in results.items():
                print(f"{b}: start-up with migrations {r['startup_ms']:.0f} ms; correctness "
                      f"{'OK' if r['check_ok'] else 'MISMATCH'} {json.dumps(r['check'])}")
            print(json.dumps(results), file=open(os.path.join("target", "load-results.json"), "w"))
            sys.exit(0 if all(r["check_ok"] for r in results.values()) else 1)
        if a.mode == "ab":
            bins = os.environ["AB_BINS"].split(",")
            sys.exit(0 if all([ab(b, tmp, bins) for b in backends]) else 1)
        if a.mode == "profile":
            for b in backends:
                profile(b, tmp)
            return
        failed = False
        for b in backends:
            report, mismatches = reliability(b, tmp)
            print(f"{b}: " + json.dumps(report))
            for m in mismatches[:20]:
                print("  MISMATCH", m)
            failed |= bool(mismatches)
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
