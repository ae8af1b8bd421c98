/*
 * proto.h: glue over the protoc-c generated code (orders.pb-c.h).
 *
 * Unpacking uses the generated orders__*__unpack(NULL, len, data), which
 * returns NULL on malformed input and allocates with malloc; free with the
 * matching orders__*__free_unpacked(msg, NULL). Strings inside a message
 * built by hand are borrowed: the message does not own them.
 */
#ifndef ORDERS_PROTO_H
#define ORDERS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "orders.pb-c.h"

/* Largest message a consumer accepts; anything bigger is dead-lettered. */
#define PROTO_MAX_MESSAGE (256 * 1024)

/*
 * proto_pack - serialize m into a new malloc'd buffer (*out, *len).
 * ERR_NOMEM or ERR_TOO_BIG (over PROTO_MAX_MESSAGE); outputs set on success only.
 */
int proto_pack(const ProtobufCMessage *m, uint8_t **out, size_t *len);

/*
 * proto_envelope_set - point e's fields at the given strings (borrowed) and
 * set occurred_at_ms. e must have been initialised with ORDERS__ENVELOPE__INIT.
 */
void proto_envelope_set(Orders__Envelope *e, char *message_id, char *order_id,
                        int64_t occurred_at_ms, char *correlation_id);

/*
 * proto_envelope_peek - the Envelope (field 1) of any message on the queues,
 * without knowing which message it is: every one of them carries its
 * envelope as field 1. Walks the top-level wire format only, bounded by len;
 * untrusted bytes never crash it. An envelope that occurs more than once is
 * merged, as the generated unpack functions do. ERR_OK sets *out to a
 * message to free with orders__envelope__free_unpacked(*out, NULL);
 * ERR_PARSE when data is no protobuf message, ERR_NOT_FOUND when it has no
 * envelope, ERR_NOMEM.
 * Thread-safe.
 */
int proto_envelope_peek(const uint8_t *data, size_t len, Orders__Envelope **out);

/* proto_envelope_ok - 1 when env is present and has message_id and order_id. */
int proto_envelope_ok(const Orders__Envelope *env);

#endif
