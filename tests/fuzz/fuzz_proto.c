/*
 * fuzz_proto.c: protobuf messages as the consumers take them off their
 * queues. The input's first byte picks the routing key (and so the
 * consumer), the rest is the body: it goes through that consumer's decode
 * hook and, when accepted, on through the flow (flow.h). It also goes
 * through proto_envelope_peek() (orderctl's dead-letter listing), which
 * must find the envelope a full decode of the message finds.
 */
#include "flow.h"
#include "fuzz.h"
#include "proto.h"

FUZZ_QUIET_INITIALIZE

/* The message type each routing key carries, in flow_stages' order. */
static const ProtobufCMessageDescriptor *const types[] = {
    &orders__checkout_requested__descriptor, &orders__inventory_reserved__descriptor,
    &orders__inventory_rejected__descriptor, &orders__payment_result__descriptor,
    &orders__payment_result__descriptor,     &orders__cart_changed__descriptor,
    &orders__cart_checked_out__descriptor,
};

static int same_text(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

/* Where a full decode finds an envelope, the peek finds the same one. */
static void check_peek(const ProtobufCMessageDescriptor *type, const uint8_t *body, size_t len)
{
	ProtobufCMessage *m = protobuf_c_message_unpack(type, NULL, len, body);
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(type, 1);
	Orders__Envelope *env, *peeked = NULL;
	int rc = proto_envelope_peek(body, len, &peeked);

	FUZZ_CHECK(rc == ERR_OK || rc == ERR_PARSE || rc == ERR_NOT_FOUND);
	FUZZ_CHECK((rc == ERR_OK) == (peeked != NULL));
	if (m) {
		env = *(Orders__Envelope **)(void *)((char *)m + f->offset);
		FUZZ_CHECK(rc == (env ? ERR_OK : ERR_NOT_FOUND));
		if (env) {
			FUZZ_CHECK(same_text(env->message_id, peeked->message_id));
			FUZZ_CHECK(same_text(env->order_id, peeked->order_id));
			FUZZ_CHECK(same_text(env->correlation_id, peeked->correlation_id));
			FUZZ_CHECK(env->occurred_at_ms == peeked->occurred_at_ms);
		}
		protobuf_c_message_free_unpacked(m, NULL);
	}
	if (peeked)
		orders__envelope__free_unpacked(peeked, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t stage;

	if (size < 1)
		return 0;
	stage = data[0] % FLOW_STAGES;
	check_peek(types[stage], data + 1, size - 1);
	flow_deliver(flow_stages[stage].key, data + 1, size - 1, 0);
	return 0;
}
