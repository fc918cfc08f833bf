DROP INDEX orders_late_check;
ALTER TABLE orders DROP COLUMN late_check_at;
ALTER TABLE orders DROP COLUMN status_checked_at;
