-- 0001_core.sql: catalog, inventory, orders, payments, inbox, finance events.

-- Stock lives on the product row. 'reserved' counts units held by live
-- reservations; 'available' (what clients see) is stock - reserved. The
-- CHECKs make overselling impossible whatever the consumers do: a reservation
-- is a conditional UPDATE that the database refuses once it would pass stock.
CREATE TABLE products (
    sku          text PRIMARY KEY CHECK (sku ~ '^[A-Za-z0-9._-]{1,64}$'),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    price_cents  bigint NOT NULL CHECK (price_cents >= 0),
    currency     char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    stock        bigint NOT NULL CHECK (stock >= 0),
    reserved     bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= stock),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- order_id is derived from the client and its Idempotency-Key, so a replayed
-- checkout carries the same id and this primary key refuses a second order
-- even when Redis has forgotten the key.
CREATE TABLE orders (
    order_id         uuid PRIMARY KEY,
    client_id        text NOT NULL,
    idempotency_key  text NOT NULL,
    status           text NOT NULL CHECK (status IN
                       ('pending', 'reserved', 'confirmed', 'rejected',
                        'payment_failed', 'expired')),
    customer_id      text NOT NULL,
    customer_email   text NOT NULL DEFAULT '',
    currency         char(3) NOT NULL,
    total_cents      bigint NOT NULL CHECK (total_cents >= 0),
    shipping         jsonb NOT NULL DEFAULT '{}',
    payment_token    text,
    card_brand       text,
    card_last4       char(4),
    failure_reason   text,
    correlation_id   text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, idempotency_key)
);
CREATE INDEX orders_status_idx ON orders (status) WHERE status IN ('pending', 'reserved');

CREATE TABLE order_lines (
    order_id          uuid NOT NULL REFERENCES orders ON DELETE CASCADE,
    line_no           int NOT NULL,
    sku               text NOT NULL,
    quantity          int NOT NULL CHECK (quantity BETWEEN 1 AND 999),
    unit_price_cents  bigint NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- One row per (order, sku): reserving twice is a no-op. state moves
-- held -> committed (order confirmed) or held -> released (failed, expired).
CREATE TABLE reservations (
    order_id    uuid NOT NULL REFERENCES orders ON DELETE CASCADE,
    sku         text NOT NULL REFERENCES products,
    quantity    int NOT NULL CHECK (quantity > 0),
    state       text NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'committed', 'released')),
    expires_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX reservations_held_idx ON reservations (expires_at) WHERE state = 'held';

-- The vault: card numbers sealed with the data key (XChaCha20-Poly1305),
-- never in clear. fingerprint is a keyed BLAKE2b of the number, for "same
-- card" lookups; it reveals nothing without the key. No CVC column: PCI-DSS
-- 3.3.1 forbids storing it after authorization.
CREATE TABLE vault_cards (
    token        text PRIMARY KEY,
    fingerprint  bytea NOT NULL UNIQUE,
    ciphertext   bytea NOT NULL,
    nonce        bytea NOT NULL,
    brand        text NOT NULL,
    last4        char(4) NOT NULL,
    exp_month    int NOT NULL,
    exp_year     int NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payments (
    order_id          uuid PRIMARY KEY REFERENCES orders ON DELETE CASCADE,
    token             text NOT NULL REFERENCES vault_cards,
    amount_cents      bigint NOT NULL,
    currency          char(3) NOT NULL,
    authorized        boolean NOT NULL,
    decline_code      text,
    authorization_id  text,
    attempts          int NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- The simulated payment gateway's own ledger. A real provider keeps this on
-- its side: one charge per idempotency key (our order id), whatever happens
-- to the caller. Kept here so the simulation behaves like one.
CREATE TABLE gateway_charges (
    idempotency_key   text PRIMARY KEY,
    amount_cents      bigint NOT NULL,
    currency          char(3) NOT NULL,
    approved          boolean NOT NULL,
    decline_code      text,
    authorization_id  text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE gateway_attempts (
    idempotency_key  text PRIMARY KEY,
    attempts         int NOT NULL
);

-- One row per message a consumer has processed, written in the same
-- transaction as the work. A redelivered message finds its row and the
-- recorded outcome is published again instead of doing the work twice.
CREATE TABLE inbox (
    consumer      text NOT NULL,
    message_id    text NOT NULL,
    order_id      uuid,
    outcome       text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- The finance feed. seq is the cursor clients page with.
CREATE TABLE order_events (
    seq          bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    type         text NOT NULL CHECK (type IN ('order.confirmed', 'order.rejected',
                                             'order.payment_failed', 'order.expired')),
    order_id     uuid NOT NULL UNIQUE REFERENCES orders,
    customer_id  text NOT NULL,
    currency     char(3) NOT NULL,
    total_cents  bigint NOT NULL,
    items        jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now()
);
