DROP INDEX orders_idempotency_scope_key;
-- One key used in two scopes cannot stay under a global unique index: the later orders lose it.
UPDATE orders SET idempotency_key = NULL
WHERE id IN (SELECT o.id FROM orders o
             WHERE EXISTS (SELECT 1 FROM orders p
                           WHERE p.idempotency_key = o.idempotency_key AND p.id < o.id));
CREATE UNIQUE INDEX orders_idempotency_key ON orders (idempotency_key);
ALTER TABLE orders DROP COLUMN request_hash;
ALTER TABLE orders DROP COLUMN idempotency_scope;
