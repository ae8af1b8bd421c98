/*
 * order.h: the order-consumer's handler (queue order.finalize).
 *
 * The only place final statuses are set, always in the same transaction as
 * the finance event (order_events), so "the status is final" and "the event
 * exists" are one fact:
 *
 *   payment.authorized  reserved -> confirmed: stock and reserved both go
 *                       down by each held reservation, which is committed.
 *   payment.declined    reserved -> payment_failed (failure_reason = the
 *                       decline code): the held reservations are released.
 *   inventory.rejected  pending -> rejected (failure_reason out_of_stock).
 *
 * Products are locked in SKU byte order, the order inventory-consumer
 * reserves in, so the two never deadlock. When the status is final already
 * nothing happens (outcome "noop"); otherwise the event is published to the
 * exchange order-events with its type as the routing key.
 *
 * Outcomes: "event:<seq>:<event_id>:<type>", "noop".
 */
#ifndef ORDERS_ORDER_H
#define ORDERS_ORDER_H

#include "consume.h"

extern const struct consume_handler order_handler;

#endif
