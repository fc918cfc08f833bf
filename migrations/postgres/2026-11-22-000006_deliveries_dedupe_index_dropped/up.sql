-- (kind, dedupe_key) of every delivery was only read by the dashboard's search for a
-- cancelPgCno, which finds applied cancellations only (the others have no order): the unique
-- index on applied keys serves it, and every delivery maintains one index fewer.
DROP INDEX webhook_deliveries_dedupe;
