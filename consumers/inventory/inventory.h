/*
 * inventory.h: the inventory-consumer's handler (queue inventory.reserve).
 *
 * For each checkout.requested message: write the order as 'pending' with its
 * lines (and the cart it was made from, orders.cart_id), then reserve every SKU (merged, in SKU
 * byte order so that concurrent orders never deadlock) with a conditional UPDATE that cannot take
 * stock below zero. All reserved: reservation rows, status 'reserved', inventory.reserved out
 * (order and sealed card unchanged). One SKU short: nothing reserved, inventory.rejected out. An
 * order id that exists already (a replayed checkout): outcome "duplicate", nothing out.
 *
 * Outcomes: "reserved", "rejected:<out_of_stock|unknown_sku>:<sku>",
 * "duplicate".
 */
#ifndef ORDERS_INVENTORY_H
#define ORDERS_INVENTORY_H

#include "consume.h"

extern const struct consume_handler inventory_handler;

#endif
