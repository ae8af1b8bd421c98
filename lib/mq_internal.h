/*
 * mq_internal.h: what lib/mq.c shares with the other mq_* files of the
 * library (mq_admin.c). Not for daemons or tools: they use mq.h and
 * mq_admin.h. Names carry the mq__ prefix of internal shared functions.
 */
#ifndef ORDERS_MQ_INTERNAL_H
#define ORDERS_MQ_INTERNAL_H

#include <amqp.h>
#include <stddef.h>
#include <stdint.h>

/*
 * mq__connect - parse url (amqp://user:pass@host:port/vhost, or several
 * separated by commas: see MQ_URLS_MAX), connect to the first that accepts
 * and log in, with every wait bounded (connect, handshake, each RPC).
 * ERR_OK sets *out; otherwise writes the reason (never the password) and
 * leaves nothing open: ERR_INVALID (bad url), ERR_NOMEM, ERR_UNAVAILABLE.
 */
int mq__connect(const char *url, amqp_connection_state_t *out, char *reason, size_t size);

/* mq__close - close gracefully when the connection still works, then free it. */
void mq__close(amqp_connection_state_t conn, int graceful);

/*
 * mq__rpc_failed - ERR_OK when the last RPC on channel succeeded. Otherwise
 * writes the reason, answers a close from the broker, and returns ERR_MQ
 * (only the channel is gone: it may be opened again) or ERR_UNAVAILABLE
 * (the connection is gone).
 */
int mq__rpc_failed(amqp_connection_state_t conn, uint16_t channel, char *reason, size_t size);

/* mq__header_int - an integer header value of any width; *ok = 0 when v is no integer. */
long mq__header_int(const amqp_field_value_t *v, int *ok);

/* mq__copy_bytes - an AMQP string into a C string of size bytes, cut to fit. */
void mq__copy_bytes(char *dst, size_t size, amqp_bytes_t b);

#endif
