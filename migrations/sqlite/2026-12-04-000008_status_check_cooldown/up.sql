-- When a status check an outsider can trigger (a bare returnUrl, a failure return, the
-- dashboard's re-check) last went to KICC for this order: such checks are single-flight per
-- order with a cooldown, decided by the database so that it holds across instances.
ALTER TABLE orders ADD COLUMN status_checked_at TIMESTAMP;
