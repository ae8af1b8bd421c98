-- 0004_inbox_order_index.sql: find a consumer's inbox rows by order.
-- order-consumer's sweepers ask what inventory- and payment-consumer decided
-- for an order (a rejection, a declined card), which only their inbox rows
-- record; without this index every such question would read the whole inbox.
CREATE INDEX inbox_order_idx ON inbox (order_id, consumer);
