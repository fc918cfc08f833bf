ALTER TABLE orders DROP COLUMN status_checked_at;
