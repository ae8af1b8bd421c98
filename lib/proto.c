/* proto.c: serializing, checking and peeking into protobuf messages. */
#include "proto.h"

#include <stdlib.h>
#include <string.h>

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

/* Wire types (protobuf encoding). Groups (3, 4) are not used by orders.proto. */
#define WIRE_VARINT 0
#define WIRE_FIXED64 1
#define WIRE_LEN 2
#define WIRE_FIXED32 5

/* read_varint - one base-128 varint at *pos; 0 when it runs past end or past 64 bits. */
static int read_varint(const uint8_t *data, size_t len, size_t *pos, uint64_t *out)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64; shift += 7) {
		uint8_t b;

		if (*pos >= len)
			return 0;
		b = data[(*pos)++];
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*out = v;
			return 1;
		}
	}
	return 0;
}

int proto_envelope_peek(const uint8_t *data, size_t len, Orders__Envelope **out)
{
	uint8_t *env = NULL;
	size_t env_len = 0, pos = 0;
	int found = 0, rc = ERR_PARSE;
	Orders__CartCheckedOut *m;

	if ((!data && len) || !out)
		return ERR_INVALID;
	if (len > PROTO_MAX_MESSAGE)
		return ERR_TOO_BIG;
	while (pos < len) {
		size_t start = pos;
		uint64_t key, v;

		/* As protobuf-c reads a key: only a first byte without field
		 * bits is refused (0x80 0x00 is taken, as field 0). */
		if (!read_varint(data, len, &pos, &key) || (data[start] & 0xf8) == 0)
			goto out;
		switch (key & 7) {
		case WIRE_VARINT:
			if (!read_varint(data, len, &pos, &v))
				goto out;
			break;
		case WIRE_FIXED64:
			if (len - pos < 8)
				goto out;
			pos += 8;
			break;
		case WIRE_FIXED32:
			if (len - pos < 4)
				goto out;
			pos += 4;
			break;
		case WIRE_LEN:
			if (!read_varint(data, len, &pos, &v) || v > len - pos)
				goto out;
			/* Every occurrence is kept, tag and all: see below. */
			if (key >> 3 == 1) {
				if (!env && !(env = malloc(len))) {
					rc = ERR_NOMEM;
					goto out;
				}
				memcpy(env + env_len, data + start, pos - start + (size_t)v);
				env_len += pos - start + (size_t)v;
				found = 1;
			}
			pos += (size_t)v;
			break;
		default:
			goto out;
		}
	}
	rc = ERR_NOT_FOUND;
	if (!found)
		goto out;
	/*
	 * An envelope that occurs more than once is merged, and protobuf-c's
	 * merge is its own (a later zero number wins, a later empty string
	 * does not): to find the very envelope the consumers decode, the
	 * occurrences alone are decoded as the smallest message whose field 1
	 * is the envelope, which is then taken out of it (default allocator:
	 * each part is a malloc of its own).
	 */
	rc = ERR_PARSE;
	m = orders__cart_checked_out__unpack(NULL, env_len, env);
	if (!m)
		goto out;
	rc = ERR_NOT_FOUND;
	if (m->envelope) {
		*out = m->envelope;
		m->envelope = NULL;
		rc = ERR_OK;
	}
	orders__cart_checked_out__free_unpacked(m, NULL);
out:
	free(env);
	return rc;
}
