/*
 * inventory.h: the inventory-consumer's handler (queue inventory.reserve).
 *
 * Checkouts come in batches, one transaction each: first every product any
 * of them names is locked, in SKU byte order (the order everyone locks
 * products in, so that concurrent batches never deadlock). Then for each
 * checkout.requested message: write the order as 'pending' with its lines
 * (and the cart it was made from, orders.cart_id), check that the stock
 * covers every SKU (merged), and if so reserve them all with one
 * conditional UPDATE that cannot take stock below zero. All reserved:
 * reservation rows, status 'reserved', inventory.reserved out (order and
 * sealed card unchanged). One SKU short (the first in SKU byte order is
 * named): nothing reserved, inventory.rejected out; the other orders of the
 * batch go on. An order id that exists already (a replayed checkout):
 * outcome "duplicate", nothing out.
 *
 * Outcomes: "reserved", "rejected:<out_of_stock|unknown_sku>:<sku>",
 * "duplicate".
 */
#ifndef ORDERS_INVENTORY_H
#define ORDERS_INVENTORY_H

#include "consume.h"

extern const struct consume_handler inventory_handler;

#endif
