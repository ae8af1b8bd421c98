-- 0008_order_events_day_index.sql: GET /v1/reconciliation sums one UTC day
-- of order events (by occurred_at); this keeps that read to the day's rows.
CREATE INDEX order_events_occurred_idx ON order_events (occurred_at);
