-- 0006_carts.sql: the PostgreSQL copy of the carts clients keep in Redis.
-- The API serves carts from Redis; every change is also enqueued
-- (cart.changed, carrying the whole cart) and cart-consumer keeps the
-- newest version here for analytics and recovery. Versions increase with
-- every change of one cart, and a change only applies over an older one,
-- so redelivered or reordered messages never move a cart back in time.
CREATE TABLE carts (
    cart_id          uuid PRIMARY KEY,
    client_id        text NOT NULL,
    customer_id      text NOT NULL,
    currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- [{"sku": "...", "quantity": n}, ...], merged by sku, at most 100 lines.
    items            jsonb NOT NULL DEFAULT '[]',
    -- 'checked_out' is sticky: a late change may still update the items
    -- (it was made first), never the status.
    status           text NOT NULL CHECK (status IN ('open', 'checked_out', 'deleted')),
    version          bigint NOT NULL CHECK (version >= 0),
    order_id         uuid,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    checked_out_at   timestamptz
);
CREATE INDEX carts_customer_idx ON carts (client_id, customer_id);

-- The cart an order was made from, if any.
ALTER TABLE orders ADD COLUMN cart_id uuid;
