ALTER TABLE compensations DROP COLUMN gateway_call_id;
