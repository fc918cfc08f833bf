-- When a status check an outsider can trigger (a bare returnUrl, a failure return, the
-- dashboard's re-check) last went to KICC for this order: such checks are single-flight per
-- order with a cooldown, decided by the database so that it holds across instances.
ALTER TABLE orders ADD COLUMN status_checked_at TIMESTAMP;
-- When the reconciler asks KICC again about an order that expired or failed with a WeChat
-- trade (its code URL stays valid for hours): a payment made after the order closed is found
-- even if its notification never arrives, and is kept or refunded (LATE_PAYMENTS). The schedule
-- is counted from when the order closed (updated_at) and stops after a day.
ALTER TABLE orders ADD COLUMN late_check_at TIMESTAMP;
CREATE INDEX orders_late_check ON orders (late_check_at) WHERE late_check_at IS NOT NULL;
