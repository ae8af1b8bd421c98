/*
 * gateway.h: a simulated payment provider with deterministic test cards
 * (API.md): 4000000000000002 is declined (card_declined), 4000000000009995
 * is declined (insufficient_funds), 4000000000000119 fails transiently
 * twice per idempotency key and then approves, any other valid number is
 * approved.
 *
 * It models the provider's side, so it keeps its ledger (gateway_charges,
 * gateway_attempts) on a PostgreSQL connection of its own in autocommit:
 * what it did survives the caller's rollbacks, exactly as a real provider's
 * charge would. One charge per idempotency key: asking again returns the
 * first result unchanged, so a redelivered message never charges twice;
 * once voided, it answers declined (authorization_voided) instead.
 *
 * A struct gateway is used by one thread at a time.
 */
#ifndef ORDERS_GATEWAY_H
#define ORDERS_GATEWAY_H

#include <stdint.h>

#include "card.h"

#define GATEWAY_CODE_MAX 64

struct gateway;

struct gateway_result {
	int approved;
	char decline_code[GATEWAY_CODE_MAX];     /* "" when approved */
	char authorization_id[GATEWAY_CODE_MAX]; /* "auth_" + 24 hex digits */
};

/*
 * gateway_new - a gateway that answers after latency_ms (0: at once) and
 * keeps its ledger in the database at dsn. It connects on first use, so it
 * does not fail when PostgreSQL is down. NULL on ERR_NOMEM.
 */
struct gateway *gateway_new(const char *dsn, int latency_ms);
void gateway_free(struct gateway *g);

/*
 * gateway_charge - authorize amount_cents in currency on card, once per
 * idempotency_key. ERR_OK: a definite result in *out (approved or
 * declined). ERR_UNAVAILABLE: the provider failed transiently (the retry
 * test card, or its ledger cannot be reached or written): try again later
 * with the same key. The card is only read, never kept or logged.
 */
int gateway_charge(struct gateway *g, const char *idempotency_key, const struct card *card,
                   int64_t amount_cents, const char *currency, struct gateway_result *out);

/*
 * gateway_void - void the live authorization under idempotency_key, as a
 * provider's void call does, after the same latency. Nothing to void (no
 * charge, a decline, voided already) is fine. ERR_OK: no live authorization
 * is left, and *voided (when not NULL) is 1 if this call voided one.
 * ERR_UNAVAILABLE: the ledger cannot be reached; try again.
 */
int gateway_void(struct gateway *g, const char *idempotency_key, int *voided);

#endif
