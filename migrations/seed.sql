-- seed.sql: the demo catalog `make run` and `make up` start with. Safe to
-- re-run: existing products keep their stock.
INSERT INTO products (sku, name, price_cents, currency, stock) VALUES
    ('TSHIRT-BLK-M', 'Black T-shirt, M', 1999, 'USD', 1000),
    ('MUG-LOGO', 'Logo mug', 1250, 'USD', 500),
    ('HOODIE-GRY-L', 'Grey hoodie, L', 4999, 'USD', 200),
    ('STICKER-PACK', 'Sticker pack', 499, 'USD', 10000),
    ('LIMITED-PRINT', 'Limited art print', 9900, 'USD', 3)
ON CONFLICT (sku) DO NOTHING;
