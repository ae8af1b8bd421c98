-- 0002_gateway_void.sql: the simulated gateway can void an authorization,
-- as a real provider can: an order that expired after its card was
-- authorized (a payment-consumer crash between the gateway's answer and its
-- own commit) must not keep a live authorization.
ALTER TABLE gateway_charges ADD COLUMN voided_at timestamptz;
