/*
 * mq_admin.h: RabbitMQ for operators' tools (tools/orderctl): queue
 * statistics, and taking messages out of a queue one at a time to look at
 * them, move them or drop them, with a publisher-confirmed republish.
 *
 * A taken message (mq_admin_get, basic.get) stays in the queue, invisible
 * to others, until it is settled: mq_admin_ack removes it, mq_admin_reject
 * returns it or dead-letters it, mq_admin_requeue_all returns every one not
 * yet settled, and so does closing the connection (mq_admin_free), also
 * when the process dies. So looking at a queue never loses a message.
 *
 * One struct mq_admin is one connection with three channels (taking,
 * confirmed publishing, statistics); it is not thread-safe: one thread uses
 * it at a time. Every wait is bounded (connect, each RPC, each confirm).
 */
#ifndef ORDERS_MQ_ADMIN_H
#define ORDERS_MQ_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "mq.h"

#define MQ_ADMIN_REASON_MAX 256

struct mq_admin;

/*
 * struct mq_death - the newest entry of a message's x-death header: the
 * broker adds one whenever it dead-letters the message, saying from which
 * queue, why ("rejected", "delivery_limit", "expired", "maxlen"), how often
 * for that queue and reason, and with which routing key the message had
 * been published (the dead-letter exchange routes it by another one).
 */
struct mq_death {
	char queue[MQ_KEY_MAX];
	char reason[32];
	char exchange[MQ_KEY_MAX];
	char routing_key[MQ_KEY_MAX]; /* the first of routing-keys; "" if none */
	long count;
};

/* struct mq_message - one taken message; mq_message_release frees its parts. */
struct mq_message {
	uint64_t tag;                 /* for mq_admin_ack / mq_admin_reject */
	long delivery_count;          /* x-delivery-count (quorum queues), 0 if absent */
	char exchange[MQ_KEY_MAX];    /* where it was last published to */
	char routing_key[MQ_KEY_MAX]; /* with this key */
	char message_id[MQ_ID_MAX];   /* "" if absent or too long */
	int has_death;                /* 1 when death holds the x-death entry */
	struct mq_death death;
	uint8_t *body; /* malloc'd copy */
	size_t len;
	struct mq_props *props; /* its properties, for mq_admin_republish */
};

/* mq_message_release - free what m holds (not m itself); safe to call twice. */
void mq_message_release(struct mq_message *m);

/*
 * mq_admin_new - connect to url (ORDERS_AMQP_URL) and open the channels.
 * Declares nothing: the daemons own the topology. NULL on failure, with
 * the reason (never the password) written to reason (size bytes).
 */
struct mq_admin *mq_admin_new(const char *url, char *reason, size_t size);

/*
 * mq_admin_last_error - the broker's or the library's words for the last
 * failure of a call on a ("" when none failed yet). Valid until the next call.
 */
const char *mq_admin_last_error(const struct mq_admin *a);

/* mq_admin_free - close the connection: unsettled messages go back. NULL is a no-op. */
void mq_admin_free(struct mq_admin *a);

/*
 * mq_admin_queue_stats - a passive declare of queue: its ready messages
 * (not those delivered and unacknowledged: AMQP has no way to ask for
 * those) and its consumers. ERR_NOT_FOUND when the queue does not exist,
 * ERR_MQ when the broker refuses otherwise, ERR_UNAVAILABLE when the
 * connection is gone. Outputs set on success only.
 */
int mq_admin_queue_stats(struct mq_admin *a, const char *queue, long *messages, long *consumers);

/*
 * mq_admin_get - take the next ready message of queue (basic.get, manual
 * ack) into *out (release it with mq_message_release; settle it by its
 * tag). ERR_NOT_FOUND when the queue has no ready message, ERR_MQ when the
 * broker refuses (e.g. no such queue: that closes the taking channel, so
 * every message taken before and not yet settled goes back to its queue
 * and its tag means nothing any more), ERR_UNAVAILABLE, ERR_NOMEM.
 */
int mq_admin_get(struct mq_admin *a, const char *queue, struct mq_message *out);

/* mq_admin_ack - remove one taken message from its queue for good. ERR_UNAVAILABLE. */
int mq_admin_ack(struct mq_admin *a, uint64_t tag);

/*
 * mq_admin_reject - settle one taken message without removing it: requeue=1
 * puts it back, requeue=0 dead-letters it (a work queue's dead-letter
 * exchange routes it to <queue>.dlq). ERR_UNAVAILABLE.
 */
int mq_admin_reject(struct mq_admin *a, uint64_t tag, int requeue);

/* mq_admin_requeue_all - put back every taken message not yet settled. ERR_UNAVAILABLE. */
int mq_admin_requeue_all(struct mq_admin *a);

/*
 * mq_admin_republish - publish m's body again, persistent and mandatory,
 * with all of its properties (message_id, headers with x-death, content
 * type, ...) except the broker's own x-delivery-count, to exchange with
 * routing_key, and wait up to timeout_ms for the broker's confirm.
 * ERR_OK: confirmed, so durably stored in at least one queue. Otherwise
 * ERR_UNROUTABLE (no queue bound for the key), ERR_NACKED, ERR_TIMEOUT,
 * ERR_MQ (the broker closed the channel, e.g. no such exchange; it is
 * opened again on the next call), ERR_UNAVAILABLE, ERR_INVALID.
 */
int mq_admin_republish(struct mq_admin *a, const char *exchange, const char *routing_key,
                       const struct mq_message *m, int timeout_ms);

#endif
