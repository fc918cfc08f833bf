-- The reconciler's claim on an order (expiry checks, confirmations): instances sharing one
-- database never work the same order at once.
ALTER TABLE orders ADD COLUMN lease_owner TEXT;
ALTER TABLE orders ADD COLUMN lease_until TIMESTAMP;
