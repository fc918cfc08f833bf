DROP TABLE compensations;
DROP TABLE webhook_deliveries;
DROP TABLE gateway_calls;
DROP TABLE order_events;
DROP TABLE order_items;
DROP TABLE orders;
DROP TABLE products;
