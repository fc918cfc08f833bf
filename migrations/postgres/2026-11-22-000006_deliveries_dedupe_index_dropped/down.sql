CREATE INDEX webhook_deliveries_dedupe ON webhook_deliveries (kind, dedupe_key);
