-- Idempotency keys belong to the client that sent them (issue 21). `idempotency_scope` names
-- the client (`ip:ADDRESS` for the JSON API, `browser:HASH` for the shop's form) and
-- `request_hash` what it asked (SHA-256 of the canonical request): a key is unique per scope,
-- so another client's key finds nothing, and the same key with another body is refused.
ALTER TABLE orders ADD COLUMN idempotency_scope TEXT;
ALTER TABLE orders ADD COLUMN request_hash TEXT;
-- Keys stored before scopes existed stay, in a scope no client has.
UPDATE orders SET idempotency_scope = 'legacy' WHERE idempotency_key IS NOT NULL;
DROP INDEX orders_idempotency_key;
CREATE UNIQUE INDEX orders_idempotency_scope_key ON orders (idempotency_scope, idempotency_key);
