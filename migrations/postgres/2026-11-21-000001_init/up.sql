-- kicc-checkout schema (PostgreSQL). Keep in step with migrations/sqlite and src/db/schema.rs.
-- Money is BIGINT minor units with its currency beside it. Times are UTC without zone, µs.

CREATE TABLE products (
    sku         TEXT PRIMARY KEY,
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description TEXT NOT NULL DEFAULT '',
    price_krw   BIGINT NOT NULL CHECK (price_krw > 0),
    price_usd   BIGINT NOT NULL CHECK (price_usd > 0),
    active      BOOLEAN NOT NULL DEFAULT TRUE,
    position    INTEGER NOT NULL DEFAULT 0,
    created_at  TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);

CREATE TABLE orders (
    id                  BIGSERIAL PRIMARY KEY,
    shop_order_no       TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('created', 'pending', 'authorized',
                            'approving', 'paid', 'cancel_requested', 'partially_cancelled',
                            'cancelled', 'compensating', 'expired', 'failed', 'needs_attention')),
    pay_method          TEXT NOT NULL CHECK (pay_method IN ('wechat', 'kiccpay')),
    currency            TEXT NOT NULL CHECK (currency IN ('KRW', 'USD')),
    amount              BIGINT NOT NULL CHECK (amount > 0),
    cancelled_amount    BIGINT NOT NULL DEFAULT 0
                            CHECK (cancelled_amount >= 0 AND cancelled_amount <= amount),
    goods_name          TEXT NOT NULL,
    customer_id         TEXT NOT NULL,
    customer_name       TEXT NOT NULL,
    customer_mail       TEXT NOT NULL,
    customer_contact_no TEXT NOT NULL,
    customer_addr       TEXT NOT NULL,
    trade_type          TEXT CHECK (trade_type IN ('native', 'mweb')),
    pg_cno              TEXT,
    payment_page_url    TEXT,
    authorization_id    TEXT,
    approval_no         TEXT,
    approval_date       TEXT,
    transaction_date    TEXT,
    kicc_status_code    TEXT,
    idempotency_key     TEXT,
    expires_at          TIMESTAMP,
    paid_at             TIMESTAMP,
    created_at          TIMESTAMP NOT NULL,
    updated_at          TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX orders_shop_order_no ON orders (shop_order_no);
CREATE UNIQUE INDEX orders_pg_cno ON orders (pg_cno);
CREATE UNIQUE INDEX orders_idempotency_key ON orders (idempotency_key);
CREATE INDEX orders_status_created ON orders (status, created_at, id);
CREATE INDEX orders_created ON orders (created_at, id);
CREATE INDEX orders_customer_mail ON orders (customer_mail);
CREATE INDEX orders_pending_expiry ON orders (expires_at)
    WHERE status IN ('pending', 'authorized', 'approving');

CREATE TABLE order_items (
    id         BIGSERIAL PRIMARY KEY,
    order_id   BIGINT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    sku        TEXT NOT NULL REFERENCES products (sku),
    name       TEXT NOT NULL,
    unit_price BIGINT NOT NULL CHECK (unit_price > 0),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    line_total BIGINT NOT NULL CHECK (line_total = unit_price * quantity)
);
CREATE INDEX order_items_order ON order_items (order_id);

-- The order timeline: every status transition with its cause (and notes without a transition).
CREATE TABLE order_events (
    id          BIGSERIAL PRIMARY KEY,
    order_id    BIGINT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    event       TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT,
    cause       TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL
);
CREATE INDEX order_events_order ON order_events (order_id, id);

-- Every outbound gateway call, written before it is sent and completed after.
CREATE TABLE gateway_calls (
    id                  BIGSERIAL PRIMARY KEY,
    order_id            BIGINT REFERENCES orders (id) ON DELETE SET NULL,
    api                 TEXT NOT NULL,
    shop_transaction_id TEXT NOT NULL,
    request_date        TEXT NOT NULL,
    request_body        TEXT NOT NULL,
    response_body       TEXT,
    http_status         INTEGER,
    outcome             TEXT,
    res_cd              TEXT,
    res_msg             TEXT,
    pg_cno              TEXT,
    latency_ms          BIGINT,
    requested_at        TIMESTAMP NOT NULL,
    completed_at        TIMESTAMP,
    lease_owner         TEXT,
    lease_until         TIMESTAMP,
    resolved_at         TIMESTAMP
);
CREATE UNIQUE INDEX gateway_calls_shop_transaction_id ON gateway_calls (shop_transaction_id);
CREATE INDEX gateway_calls_order ON gateway_calls (order_id, id);
CREATE INDEX gateway_calls_pg_cno ON gateway_calls (pg_cno);
CREATE INDEX gateway_calls_unanswered ON gateway_calls (requested_at)
    WHERE completed_at IS NULL AND resolved_at IS NULL;

-- Every webhook delivery, stored before it is processed; at most one applied per dedupe key.
CREATE TABLE webhook_deliveries (
    id            BIGSERIAL PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('payment', 'cancel', 'unknown')),
    route         TEXT NOT NULL,
    source_ip     TEXT NOT NULL,
    headers       TEXT NOT NULL,
    body          TEXT NOT NULL,
    received_at   TIMESTAMP NOT NULL,
    dedupe_key    TEXT,
    pg_cno        TEXT,
    shop_order_no TEXT,
    order_id      BIGINT REFERENCES orders (id) ON DELETE SET NULL,
    outcome       TEXT,
    applied       BOOLEAN NOT NULL DEFAULT FALSE,
    ack_res_cd    TEXT,
    ack_body      TEXT,
    acked_at      TIMESTAMP
);
CREATE UNIQUE INDEX webhook_deliveries_applied_once ON webhook_deliveries (kind, dedupe_key)
    WHERE applied;
CREATE INDEX webhook_deliveries_dedupe ON webhook_deliveries (kind, dedupe_key);
CREATE INDEX webhook_deliveries_pg_cno ON webhook_deliveries (pg_cno);
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (order_id, id);
CREATE INDEX webhook_deliveries_outcome ON webhook_deliveries (outcome, received_at);

-- Cancel jobs: compensations (the saga) and merchant cancels, retried until KICC confirms.
CREATE TABLE compensations (
    id                       BIGSERIAL PRIMARY KEY,
    order_id                 BIGINT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    origin                   TEXT NOT NULL CHECK (origin IN ('saga', 'merchant')),
    reason                   TEXT NOT NULL,
    api                      TEXT NOT NULL,
    revise_type_code         TEXT,
    amount                   BIGINT NOT NULL CHECK (amount > 0),
    currency                 TEXT NOT NULL CHECK (currency IN ('KRW', 'USD')),
    status                   TEXT NOT NULL,
    attempts                 INTEGER NOT NULL DEFAULT 0,
    next_attempt_at          TIMESTAMP NOT NULL,
    last_error               TEXT,
    last_shop_transaction_id TEXT,
    cancel_req_date          TEXT,
    cancel_pg_cno            TEXT,
    lease_owner              TEXT,
    lease_until              TIMESTAMP,
    created_at               TIMESTAMP NOT NULL,
    updated_at               TIMESTAMP NOT NULL,
    completed_at             TIMESTAMP
);
CREATE INDEX compensations_due ON compensations (status, next_attempt_at);
CREATE INDEX compensations_order ON compensations (order_id, id);
CREATE UNIQUE INDEX compensations_cancel_pg_cno ON compensations (cancel_pg_cno);
