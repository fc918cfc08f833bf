ALTER TABLE orders DROP COLUMN lease_until;
ALTER TABLE orders DROP COLUMN lease_owner;
