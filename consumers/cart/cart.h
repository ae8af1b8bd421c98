/*
 * cart.h: the cart-consumer's handler (queue cart.persist).
 *
 * The API keeps carts in Redis (hash cart:{cart_id}, 7 days after the last
 * change) and enqueues every change; this handler keeps the PostgreSQL copy
 * (table carts) for analytics and recovery.
 *
 *   cart.changed      the whole cart after one change, with a version that
 *                     grows with every change of that cart. Upserted so that
 *                     the highest version wins whatever order messages come
 *                     in: a change applies only over an older version (or
 *                     over the stub below). deleted makes the status
 *                     'deleted'; 'checked_out' is sticky: a change applied
 *                     later (made earlier) may still update the items and
 *                     the version, never the status.
 *   cart.checked_out  an order made from the cart was confirmed
 *                     (order-consumer): the row becomes 'checked_out' with
 *                     that order id (the first order to check a cart out
 *                     stays its order). A cart whose changes have not come
 *                     yet gets a stub row (version 0, client_id '', currency
 *                     'XXX'), which the first change then fills. Then, in
 *                     the same delivery, the Redis copy is marked when it
 *                     still exists (status checked_out and the order id; its
 *                     expiry is kept). A Redis failure is transient: the
 *                     transaction is rolled back and the message retried;
 *                     both steps are idempotent.
 *
 * A batch of messages shares one transaction, which first takes an
 * advisory lock per cart (in one global order) against deadlocks.
 *
 * Messages are checked first (UUIDs, cart_id = envelope.order_id for a
 * change, client and customer 1..128 characters, currency, at most 100
 * lines with valid SKUs and quantities 1..999 also once repeated SKUs are
 * merged, UTF-8): anything else is poison. Nothing is published.
 *
 * Outcomes: "applied:<version>", "stale:<version>",
 * "checked_out:<cart_id>:<marked|absent>" (absent: no Redis copy left).
 */
#ifndef ORDERS_CART_H
#define ORDERS_CART_H

#include "consume.h"

extern const struct consume_handler cart_handler;

#endif
