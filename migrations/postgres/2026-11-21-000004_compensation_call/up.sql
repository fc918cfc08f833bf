-- The gateway call a compensation undoes (a KICC Pay net-cancel resends that call's data).
ALTER TABLE compensations ADD COLUMN gateway_call_id BIGINT REFERENCES gateway_calls (id);
