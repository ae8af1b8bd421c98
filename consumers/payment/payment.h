/*
 * payment.h: the payment-consumer's handler (queue payment.authorize).
 *
 * For each inventory.reserved message, with the order row locked: open the
 * sealed card, validate it, authorize the order total through the gateway
 * (the order id is its idempotency key; transient failures are retried
 * in-process after 50, 100, 200, 400 and 800 ms), vault the number and get
 * its token, wipe the card (the CVC is never stored), record the payment and
 * put token, brand and last4 on the order. payment.authorized or
 * payment.declined goes out. An order that is no longer 'reserved', or
 * whose reservation has run out (ORDERS_RESERVATION_TTL_S) even before the
 * order-consumer's sweeper marks it expired, is not charged and nothing goes
 * out. A redelivery after a crash that followed the gateway's approval gets
 * the same authorization back (the idempotency key); if the reservation
 * ran out in between, the sweeper voids that authorization instead.
 *
 * One message per transaction by default: the gateway's wait is per
 * message, so more consumers, not batches, make payment faster. With
 * ORDERS_CONSUMER_BATCH > 1 a batch locks all its orders first, in order id
 * order.
 *
 * Outcomes: "authorized:<authorization_id>:<token>",
 * "declined:<code>:<token>" (token empty for an invalid card),
 * "noop:<status>" (also "noop:expired" for a run-out reservation). None of
 * them holds card data.
 */
#ifndef ORDERS_PAYMENT_H
#define ORDERS_PAYMENT_H

#include "consume.h"

extern const struct consume_handler payment_handler;

#endif
