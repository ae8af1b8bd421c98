/* proto.c: serializing and checking protobuf messages. */
#include "proto.h"

#include <stdlib.h>

#include "err.h"

int proto_pack(const ProtobufCMessage *m, uint8_t **out, size_t *len)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *data;

	if (n > PROTO_MAX_MESSAGE)
		return ERR_TOO_BIG;
	/* malloc(0) may return NULL; an empty message is still one byte of room. */
	data = malloc(n ? n : 1);
	if (!data)
		return ERR_NOMEM;
	protobuf_c_message_pack(m, data);
	*out = data;
	*len = n;
	return ERR_OK;
}

void proto_envelope_set(Orders__Envelope *e, char *message_id, char *order_id,
                        int64_t occurred_at_ms, char *correlation_id)
{
	e->message_id = message_id;
	e->order_id = order_id;
	e->occurred_at_ms = occurred_at_ms;
	e->correlation_id = correlation_id;
}

int proto_envelope_ok(const Orders__Envelope *env)
{
	return env && env->message_id && env->message_id[0] && env->order_id && env->order_id[0];
}
