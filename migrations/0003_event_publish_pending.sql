-- 0003_event_publish_pending.sql: order events still to be published.
-- The order-consumer's expiry sweeper writes order.expired events on its
-- own, not in answer to a queue message, so no redelivery would publish one
-- again after a failed publish or a crash. It marks the event pending in the
-- transaction that writes it and clears the mark once the broker has
-- confirmed the message; every replica publishes whatever is still pending.
-- Events written while processing a message keep false: the message's
-- redelivery republishes them.
ALTER TABLE order_events ADD COLUMN publish_pending boolean NOT NULL DEFAULT false;
CREATE INDEX order_events_publish_pending_idx ON order_events (seq) WHERE publish_pending;
