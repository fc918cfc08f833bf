-- Dashboard sessions, kept on the server: the browser's signed cookie carries a random 256-bit
-- id, and only its SHA-256 (hex) is stored here, so a reader of this table (or of app_keys)
-- cannot present a session. Every dashboard request looks its row up; signing out deletes it.
-- `credential` is the fingerprint of the admin credentials the session was opened under (an
-- HMAC, never the password): a restart with another ADMIN_PASSWORD ends every session.
CREATE TABLE admin_sessions (
    id_hash      TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    credential   TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL
);
-- The purge of idle sessions at sign-in.
CREATE INDEX admin_sessions_last_seen ON admin_sessions (last_seen_at);
