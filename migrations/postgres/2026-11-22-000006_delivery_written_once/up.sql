-- A delivery's row is inserted with its expected answer (src/db/fixed.rs, DeliveryInsert) and
-- its ack is then written beside it. When the handling ends as expected, that update changes
-- no indexed column, so PostgreSQL can make it a HOT update (no new index entries), but only
-- when the new version fits in the same page: half of each page is kept free for it.
ALTER TABLE webhook_deliveries SET (fillfactor = 50);
-- (kind, dedupe_key) of every delivery was only read by the dashboard's search for a
-- cancelPgCno, which finds applied cancellations only (the others have no order): the unique
-- index on applied keys serves it, and every delivery maintains one index fewer.
DROP INDEX webhook_deliveries_dedupe;
