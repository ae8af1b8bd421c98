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
#include <sys/time.h>
#include <sys/types.h>

/*
 * mq__connect - parse url (amqp[s]://user:pass@host:port/vhost, or several
 * separated by commas: see MQ_URLS_MAX), connect to the first that accepts
 * and log in, with every wait bounded (connect, handshake, each RPC).
 * ERR_OK sets *out; otherwise writes the reason (never the password) and
 * leaves nothing open: ERR_INVALID (bad url), ERR_NOMEM, ERR_UNAVAILABLE.
 */
int mq__connect(const char *url, amqp_connection_state_t *out, char *reason, size_t size);

/*
 * mq__url_each - parse an ORDERS_AMQP_URL value as every connect does (one
 * URL, or up to MQ_URLS_MAX separated by commas) and call fn for each entry,
 * whose strings live only during the call. ERR_OK, ERR_INVALID (not a URL
 * list; fn is not called), ERR_NOMEM. For tests and the fuzz target.
 */
int mq__url_each(const char *url, void (*fn)(void *arg, const struct amqp_connection_info *entry),
                 void *arg);

/*
 * mq__socket_open - give conn its socket to host:port and open it within
 * timeout: plain TCP, or with tls the TLS of mq.h's "TLS" section, the
 * handshake and the broker's verification included. ERR_OK sets *session
 * (when not NULL) to the TLS session (an SSL *, NULL for plain TCP), which
 * lives as long as the socket: conn owns both. Otherwise writes the reason
 * (a failed verification says why) and returns ERR_UNAVAILABLE, ERR_INVALID
 * (a file cannot be used) or ERR_NOMEM; conn still owns what was made, so
 * destroy it.
 */
int mq__socket_open(amqp_connection_state_t conn, const char *host, int port, int tls,
                    struct timeval *timeout, void **session, char *reason, size_t size);

/*
 * mq__tls_write - SSL_write len bytes of buf without blocking: > 0 bytes
 * written, 0 when the socket takes nothing now (call again, with the same
 * buf and len, once it is writable: OpenSSL's rule for a write it could not
 * finish), -1 when the connection failed (reason says why). A write that
 * would have to read first (a renegotiation, which the TLS settings refuse)
 * fails too, as waiting to write would never end.
 */
ssize_t mq__tls_write(void *session, const void *buf, size_t len, char *reason, size_t size);

/* mq__tls_pending - OpenSSL holds decrypted bytes not read yet (poll() would not wake for them). */
int mq__tls_pending(void *session);

/* mq__tls_version - "TLSv1.3" and the like, "none" for NULL (plain TCP). */
const char *mq__tls_version(void *session);

struct mq_publisher;

/*
 * mq__publisher_fail_encode - for tests: the next message handed to p with
 * this message id fails to encode with err (ERR_INVALID or ERR_NOMEM), as
 * if the frames could not be made, once. ERR_OK, or ERR_INVALID for bad
 * arguments. Thread-safe.
 */
int mq__publisher_fail_encode(struct mq_publisher *p, const char *message_id, int err);

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
