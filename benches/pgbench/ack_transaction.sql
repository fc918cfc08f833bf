\set n random(1, 200000)
\set r random(1, 1000000000)
BEGIN;
WITH d AS (INSERT INTO webhook_deliveries (kind, route, source_ip, headers, body, received_at, dedupe_key, pg_cno, shop_order_no, applied, outcome, order_id, ack_res_cd, ack_body, acked_at)
  SELECT 'payment', '/webhooks/kicc/payment', '127.0.0.1', 'content-type: application/json', '{"resCd":"0000","resMsg":"ok","pgCno":"X","amount":1000}', now()::timestamp, 'k' || :n || '-' || :r, 'pg' || :n, 'O' || :n, NOT d.dup, CASE WHEN d.dup THEN 'duplicate' ELSE 'accepted' END, (SELECT id FROM orders WHERE NOT d.dup AND shop_order_no = 'O' || :n), NULL, NULL, NULL
  FROM (SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE kind = 'payment' AND dedupe_key = 'k' || :n || '-' || :r AND applied) AS dup) d RETURNING id, NOT applied AS dup, order_id)
SELECT d.id AS did, d.dup, d.order_id AS oid, orders.* FROM d LEFT JOIN orders ON orders.id = d.order_id \gset r_
WITH n AS (INSERT INTO order_events (order_id, event, from_status, to_status, cause, created_at) VALUES (:r_oid, 'webhook_approval', NULL, NULL, 'approval notification (pgCno X, amount KRW 1,000): confirming with the status check', now()::timestamp))
UPDATE webhook_deliveries SET ack_res_cd = '0000', ack_body = '{"resCd":"0000","resMsg":"Success","pgCno":"X"}', acked_at = now()::timestamp WHERE id = :r_did;
COMMIT;
