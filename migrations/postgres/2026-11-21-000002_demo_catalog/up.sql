-- The demo catalog: English names (KICC's goodsName is English only, spec 01) and prices in
-- minor units for both currencies (USD ×100, spec 01). Merchants replace these rows.
INSERT INTO products (sku, name, description, price_krw, price_usd, position) VALUES
    ('CLASSIC-TEE', 'Classic Cotton Tee', 'Heavy 220 g organic cotton, boxy fit, in ink black.', 19000, 1450, 1),
    ('CERAMIC-MUG', 'Ceramic Coffee Mug', 'Stoneware mug, 350 ml, glazed by hand in Icheon.', 12000, 1203, 2),
    ('CANVAS-TOTE', 'Canvas Tote Bag', 'Washed canvas with an inner pocket; carries a laptop.', 24000, 1840, 3),
    ('BASEBALL-CAP', 'Washed Baseball Cap', 'Six-panel cotton twill cap with a brass buckle.', 21000, 1610, 4),
    ('DOT-NOTEBOOK', 'A5 Dot Grid Notebook', '160 pages of 100 g paper that takes fountain pens.', 8500, 650, 5),
    ('ZIP-HOODIE', 'Heavyweight Zip Hoodie', 'Brushed-back fleece, YKK zip, made in Seoul.', 49000, 3760, 6),
    ('STICKER-PACK', 'Sticker Pack', 'Five vinyl stickers: the cheapest way to test a payment.', 1000, 77, 7);
