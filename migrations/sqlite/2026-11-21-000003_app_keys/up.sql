-- Keys the app generates once and every instance shares: the cookie signing key (cart, admin
-- session). Random at first start, kept across restarts; never shown or logged.
CREATE TABLE app_keys (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
