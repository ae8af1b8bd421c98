-- 0005_gateway_live_charge_index.sql: order-consumer's safety net looks for
-- live authorizations made recently; this keeps that read to those rows
-- instead of every charge ever made.
CREATE INDEX gateway_charges_live_idx ON gateway_charges (created_at)
    WHERE approved AND voided_at IS NULL;
