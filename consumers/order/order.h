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
 *   (expiry sweeper)    reserved -> expired (failure_reason
 *                       reservation_expired): see below.
 *
 * Products are locked in SKU byte order, the order inventory-consumer
 * reserves in, so the two never deadlock. A batch of messages shares one
 * transaction: it locks all its orders first (in order id order), then the
 * products they hold (in SKU byte order), then moves each order; the
 * events of the orders it moved are appended together at the end of the
 * transaction (the finish hook), just before the commit. When the status is final already
 * nothing happens (outcome "noop"); otherwise the event is published to the
 * exchange order-events with its type as the routing key. A payment.authorized
 * for an order that ended otherwise (expired) voids that authorization at the
 * gateway: only confirmed orders keep one.
 *
 * The expiry sweeper runs every second on the consume loop's tick. In one
 * transaction it locks up to 100 'reserved' orders whose held reservations
 * have expired and that have no authorized payment (FOR UPDATE SKIP LOCKED:
 * replicas share the work, and payment-consumer holds an order's row while
 * it authorizes), voids any authorization left at the gateway, releases the
 * reservations, sets 'expired' and appends the order.expired event marked
 * publish_pending. After the commit, every pending event is published (the
 * message id is the event id) and unmarked once confirmed; one that fails
 * stays pending and is published on a later tick, by any replica. Orders
 * whose payment is decided (a payments row, or an invalid card's decline)
 * never expire: the completion sweep finishes them.
 *
 * The completion sweep runs every 2 s on the same tick. A message that would
 * finish an order can be dead-lettered although the work before it was
 * committed (the delivery limit counts a killed consumer's returns too). In
 * one transaction it locks up to 100 orders last changed more than
 * ORDERS_FINALIZE_GRACE_S ago (FOR UPDATE SKIP LOCKED, then their products
 * in SKU byte order) that are 'pending' with a rejection in inventory's
 * inbox, or 'reserved' with a decided payment, and finishes each exactly as
 * the lost message would have: rejected, confirmed (reservations committed)
 * or payment_failed (the payment's decline code; reservations released),
 * with the event marked publish_pending. The message, should it come later,
 * finds the order final: "noop". Then it voids, through the gateway, every
 * live authorization whose order ended expired, payment_failed or rejected.
 *
 * Carts: an order confirmed here whose Order.cart_id is set also makes a
 * cart.checked_out (exchange orders, mandatory: work for cart-consumer),
 * whose message id is derived from the order id alone. The message handler
 * publishes it beside the event (the loop's second message, rebuilt from
 * the input on replay); for an order the completion sweep confirmed,
 * publish_pending() sends it after the event, before it unmarks the event,
 * so it is never lost after the commit.
 *
 * Event order: order_events' trigger draws each event's seq under a
 * transaction-level advisory lock held to the commit, so events become
 * visible in seq order and the finance feed's cursor never passes one that
 * commits later (migrations/0007 has the proof). Every writer therefore
 * appends its events as its transaction's last work: the message handler
 * its one event (the loop then only records the outcome and commits), the
 * sweeps every event of a batch once the whole batch is settled.
 *
 * Outcomes: "event:<seq>:<event_id>:<type>", "noop".
 */
#ifndef ORDERS_ORDER_H
#define ORDERS_ORDER_H

#include "consume.h"

extern const struct consume_handler order_handler;

#endif
