/*
 * flow.h: a message through the consumers' decode hooks, as the consume
 * loop hands it over (consume.h step 1), and on through the flow: a
 * message one consumer accepts is replayed with each outcome its process()
 * can record, and whatever that publishes to a work queue must be accepted
 * by the consumer of that queue in turn. Otherwise a message would be
 * taken by one stage and dead-lettered by the next, with its stock held
 * or its payment made. No database or broker is involved: decode and
 * replay need neither. Header-only, for fuzz_checkout.c and fuzz_proto.c.
 */
#ifndef ORDERS_FUZZ_FLOW_H
#define ORDERS_FUZZ_FLOW_H

#include "cart.h"
#include "consume.h"
#include "fuzz.h"
#include "ids.h"
#include "inventory.h"
#include "mq.h"
#include "order.h"
#include "payment.h"

/* The work queues' routing keys and the handler each one's consumer runs. */
static const struct {
	const char *key;
	const struct consume_handler *h;
} flow_stages[] = {
    {MQ_KEY_CHECKOUT_REQUESTED, &inventory_handler}, {MQ_KEY_INVENTORY_RESERVED, &payment_handler},
    {MQ_KEY_INVENTORY_REJECTED, &order_handler},     {MQ_KEY_PAYMENT_AUTHORIZED, &order_handler},
    {MQ_KEY_PAYMENT_DECLINED, &order_handler},       {MQ_KEY_CART_CHANGED, &cart_handler},
    {MQ_KEY_CART_CHECKED_OUT, &cart_handler},
};
#define FLOW_STAGES (sizeof(flow_stages) / sizeof(flow_stages[0]))

/* Outcomes as the consumers record them (each consumer's process()). */
#define FLOW_TOKEN "tok_0123456789abcdef01234567"
static const char *const flow_outcomes[] = {
    "reserved",
    "rejected:out_of_stock:",
    "rejected:unknown_sku:",
    "authorized:auth_0123456789abcdef01234567:" FLOW_TOKEN,
    "declined:card_declined:" FLOW_TOKEN,
    "event:42:7b1f3c52-9f0e-4b8e-a7c1-1d2e3f405162:order.confirmed",
    "event:43:8c2f3c52-9f0e-4b8e-a7c1-1d2e3f405162:order.rejected",
    "event:44:9d3f3c52-9f0e-4b8e-a7c1-1d2e3f405162:order.payment_failed",
};
#define FLOW_OUTCOMES (sizeof(flow_outcomes) / sizeof(flow_outcomes[0]))

static int flow_deliver(const char *routing_key, const uint8_t *body, size_t len, int depth);

/* What the loop requires of a decoded input, then every replay's messages go on. */
static void flow_replays(const struct consume_handler *h, struct consume_input *in, int depth)
{
	struct consume_result res;
	char outcome[CONSUME_OUTCOME_MAX];
	size_t i;

	FUZZ_CHECK(in->msg);
	FUZZ_CHECK(ids_uuid_valid(in->order_id));
	FUZZ_CHECK(!in->correlation_id || fuzz_utf8(in->correlation_id));
	ids_uuid_derived((const uint8_t *)"flow-key-flow-key-flow-key-flow!", h->name,
	                 in->message_id, in->out_message_id);
	in->processed_ms = FUZZ_NOW_MS;
	for (i = 0; i < FLOW_OUTCOMES; i++) {
		snprintf(outcome, sizeof(outcome), "%s", flow_outcomes[i]);
		/* A rejection names the line it stopped at: the first. */
		if (strncmp(outcome, "rejected:", 9) == 0 && h == &inventory_handler) {
			const Orders__CheckoutRequested *m = in->msg;

			snprintf(outcome, sizeof(outcome), "%s%s", flow_outcomes[i],
			         m->order->lines[0]->sku);
		}
		memset(&res, 0, sizeof(res));
		snprintf(res.outcome, sizeof(res.outcome), "%s", outcome);
		if (h->replay(NULL, in, outcome, &res) == ERR_OK) {
			if (res.body && res.exchange &&
			    strcmp(res.exchange, MQ_EXCHANGE_ORDERS) == 0)
				FUZZ_CHECK(flow_deliver(res.routing_key, res.body, res.len,
				                        depth + 1) == ERR_OK);
			if (res.extra.body && res.extra.exchange &&
			    strcmp(res.extra.exchange, MQ_EXCHANGE_ORDERS) == 0)
				FUZZ_CHECK(flow_deliver(res.extra.routing_key, res.extra.body,
				                        res.extra.len, depth + 1) == ERR_OK);
		}
		consume_result_release(&res);
	}
}

/*
 * flow_deliver - body, arrived with routing_key, through its consumer's decode
 * hook; on ERR_OK, through flow_replays() (depth bounds the chain). Returns
 * decode's result; ERR_INVALID for a key no consumer takes.
 */
static int flow_deliver(const char *routing_key, const uint8_t *body, size_t len, int depth)
{
	struct consume_input in;
	size_t i;
	int rc;

	for (i = 0; i < FLOW_STAGES && strcmp(flow_stages[i].key, routing_key) != 0; i++)
		;
	if (i == FLOW_STAGES)
		return ERR_INVALID;
	memset(&in, 0, sizeof(in));
	in.message_id = "fuzz-message-id";
	in.routing_key = routing_key;
	in.body = body;
	in.len = len;
	rc = flow_stages[i].h->decode(NULL, &in);
	if (rc == ERR_OK) {
		if (depth < 4)
			flow_replays(flow_stages[i].h, &in, depth);
		flow_stages[i].h->msg_free(in.msg);
	} else {
		FUZZ_CHECK(!in.msg);
		FUZZ_CHECK(rc == ERR_PARSE || rc == ERR_INVALID);
	}
	return rc;
}

#endif
