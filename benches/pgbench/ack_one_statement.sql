\set n random(1, 200000)
\set r random(1, 1000000000)
WITH k AS (SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE kind = 'payment' AND dedupe_key = 'k' || :n || '-' || :r AND applied) AS dup),
o AS (SELECT orders.id FROM orders, k WHERE NOT k.dup AND shop_order_no = 'O' || :n AND pay_method = 'wechat' AND (pg_cno IS NULL OR pg_cno = 'pg' || :n) AND amount = 1000 AND currency = 'KRW' AND status IN ('pending', 'authorized', 'approving')),
d AS (INSERT INTO webhook_deliveries (kind, route, source_ip, headers, body, received_at, dedupe_key, pg_cno, shop_order_no, applied, outcome, order_id, ack_res_cd, ack_body, acked_at)
  SELECT 'payment', '/webhooks/kicc/payment', '127.0.0.1', 'content-type: application/json', '{"resCd":"0000","resMsg":"ok","pgCno":"X","amount":1000}', now()::timestamp, 'k' || :n || '-' || :r, 'pg' || :n, 'O' || :n, NOT k.dup, CASE WHEN k.dup THEN 'duplicate' ELSE 'accepted' END, o.id, '0000', '{"resCd":"0000","resMsg":"Success","pgCno":"X"}', now()::timestamp
  FROM k LEFT JOIN o ON true WHERE k.dup OR o.id IS NOT NULL RETURNING id, applied, order_id),
n AS (INSERT INTO order_events (order_id, event, from_status, to_status, cause, created_at) SELECT order_id, 'webhook_approval', NULL, NULL, 'approval notification (pgCno X, amount KRW 1,000): confirming with the status check', now()::timestamp FROM d WHERE applied)
SELECT id, applied, order_id FROM d;
