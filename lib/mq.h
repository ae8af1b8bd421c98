/*
 * mq.h: RabbitMQ (rabbitmq-c 0.11): topology, a pipelined confirming
 * publisher, and a consumer.
 *
 * rabbitmq-c connections are not thread-safe, so the publisher owns its
 * connection in a thread of its own; any thread hands it messages through
 * mq_publisher_publish() and hears back through a callback once the broker
 * has confirmed (or refused) the message. Many messages are in flight at
 * once and one basic.ack may cover hundreds of them: that is what takes a
 * publisher from ~1k to 10-20k persistent messages/s.
 */
#ifndef ORDERS_MQ_H
#define ORDERS_MQ_H

#include <stddef.h>
#include <stdint.h>

#define MQ_EXCHANGE_ORDERS "orders"
#define MQ_EXCHANGE_EVENTS "order-events"
#define MQ_EXCHANGE_DLX "orders.dlx"

#define MQ_QUEUE_INVENTORY "inventory.reserve"
#define MQ_QUEUE_PAYMENT "payment.authorize"
#define MQ_QUEUE_ORDER "order.finalize"
#define MQ_QUEUE_CART "cart.persist"

#define MQ_KEY_CHECKOUT_REQUESTED "checkout.requested"
#define MQ_KEY_INVENTORY_RESERVED "inventory.reserved"
#define MQ_KEY_INVENTORY_REJECTED "inventory.rejected"
#define MQ_KEY_PAYMENT_AUTHORIZED "payment.authorized"
#define MQ_KEY_PAYMENT_DECLINED "payment.declined"
#define MQ_KEY_CART_CHANGED "cart.changed"
#define MQ_KEY_CART_CHECKED_OUT "cart.checked_out"

/* A message that fails this many deliveries is dead-lettered to <queue>.dlq. */
#define MQ_DELIVERY_LIMIT 10

#define MQ_WORK_QUEUES 4

#define MQ_ID_MAX 64
#define MQ_KEY_MAX 64

/*
 * A broker URL (ORDERS_AMQP_URL) is one amqp[s]://user:pass@host:port/vhost,
 * or up to MQ_URLS_MAX of them separated by commas, no spaces: the nodes of
 * a cluster (a comma inside one is written %2C), each amqp:// or amqps://
 * (see "TLS" below) of its own. Every connect tries them in turn, starting
 * with the one this process last connected to, and takes the first that
 * accepts: the publisher and the consumers fail over to a surviving node
 * when theirs goes away, and reconnect there.
 */
#define MQ_URLS_MAX 16

/* The work queues, for iteration (metrics, declaring). */
extern const char *const mq_work_queues[MQ_WORK_QUEUES];

/*
 * The queues the publisher's stats poll reads (see poll_queue_stats_ms):
 * the work queues, then their dead-letter queues ("<queue>.dlq") in the
 * same order.
 */
#define MQ_STAT_QUEUES (2 * MQ_WORK_QUEUES)
extern const char *const mq_stat_queues[MQ_STAT_QUEUES];

/* ---- TLS ---------------------------------------------------------------- */

/*
 * An amqps:// URL (port 5671 by default) connects over TLS 1.2 or later and
 * verifies the broker: its certificate chain against ca_file, else against
 * the system's trust store (which holds the public CAs of Amazon MQ's
 * certificates), and its name against the URL's host (a DNS name, wildcards
 * as RFC 6125 allows them, or an IP address). There is no way to turn the
 * verification off. A client certificate is sent when cert_file and
 * key_file are set. amqp:// URLs ignore all of it.
 */
struct mq_tls_options {
	const char *ca_file;   /* PEM CA bundle; NULL or "" = the system's trust store */
	const char *cert_file; /* PEM client certificate chain, with key_file; NULL = none */
	const char *key_file;  /* its PEM private key, not encrypted */
};

/*
 * mq_tls_configure - the TLS settings of every amqps:// connection this
 * process makes from now on (publishers, consumers, mq_admin). The files
 * are checked now (the CA file holds certificates, the key belongs to the
 * certificate) and read again at every connect, so that renewed files are
 * picked up on the next reconnect. ERR_OK, or ERR_INVALID / ERR_NOMEM with
 * a reason naming the file (never its content). Without a call, amqps://
 * uses the system's trust store and no client certificate. Call it once
 * at start, before any connection is made: not thread-safe.
 */
int mq_tls_configure(const struct mq_tls_options *o, char *reason, size_t size);

/* ---- publisher ---------------------------------------------------------- */

struct mq_publisher;

/*
 * Publish flags. MQ_PUBLISH_MANDATORY: the message must reach at least one
 * queue; one that no binding routes is returned by the broker and fails
 * with ERR_UNROUTABLE. Without it the broker confirms such a message and
 * drops it. Work messages to MQ_EXCHANGE_ORDERS are published mandatory
 * (a 202 or an acked delivery promises that the next stage will see them);
 * events to MQ_EXCHANGE_EVENTS are not: nobody need be subscribed to them.
 * A mandatory message needs a message id (returns are paired by it, with
 * the exchange and the routing key); keep ids unique among messages in
 * flight.
 */
#define MQ_PUBLISH_MANDATORY 1u

/*
 * Sent, not sent, and in doubt. The publisher encodes the frames of many
 * messages into a buffer of its own and writes them to the socket as fast
 * as the broker reads. A message of which no byte has gone to the socket
 * is unknown to the broker: when its confirm timeout passes first it is
 * taken out of the buffer and never sent (ERR_TIMEOUT), and it takes no
 * delivery tag (the broker numbers the messages of a channel in the order
 * it receives them). Once a byte of it has gone, the broker may store it
 * whatever this process does next (a broker that stopped reading, by a
 * memory alarm say, reads it later; the rest of a message cut short is
 * always sent): such a message waits for its confirm or refusal past its
 * confirm timeout, until written_timeout_ms after hand-over, and then
 * fails with ERR_IN_DOUBT. The same holds when the connection is lost or
 * the publisher stops: a message sent whole gets ERR_IN_DOUBT, one cut
 * short (which the broker discards) ERR_UNAVAILABLE or ERR_CLOSED.
 *
 * So every failure but ERR_IN_DOUBT means the broker does not hold the
 * message; ERR_IN_DOUBT means nobody knows. A caller that promises its
 * client "nothing was accepted" on failure (the API's 503) must not say so
 * on ERR_IN_DOUBT; publishing the same message id again is the way to a
 * known outcome, as consumers recognise a message id they have seen.
 */

/*
 * Called exactly once per accepted message, from the publisher thread, with
 * ERR_OK (the broker confirmed it: durably stored, and routed to a queue
 * when published with MQ_PUBLISH_MANDATORY), ERR_NACKED, ERR_UNROUTABLE
 * (mandatory and no queue bound), ERR_TIMEOUT (the confirm timeout passed
 * before it was sent: never sent), ERR_IN_DOUBT (sent, and no confirm nor
 * refusal came: within written_timeout_ms, or before the connection was
 * lost or the publisher stopped), ERR_UNAVAILABLE (connection lost before
 * it was sent whole), ERR_CLOSED (publisher stopping before it was sent
 * whole), ERR_INVALID (it cannot be encoded; never sent) or ERR_NOMEM (no
 * memory to encode it; never sent). A message that fails to encode fails
 * alone: the connection and the other messages go on.
 * Must not block; must not call back into the publisher.
 */
typedef void (*mq_confirm_cb)(void *arg, int result);

struct mq_publisher_options {
	const char *url;         /* amqp[s]://user:pass@host:port/vhost[,...] (MQ_URLS_MAX) */
	int confirm_timeout_ms;  /* per message, from hand-over to confirm */
	int max_in_flight;       /* messages handed over but not confirmed; 0 = 10000 */
	int declare_topology;    /* declare exchanges and queues on every connect */
	int poll_queue_stats_ms; /* > 0: passive-declare mq_stat_queues this often */
	/* A message sent (in part or whole) waits for its confirm this long
	 * from hand-over, then ERR_IN_DOUBT; <= confirm_timeout_ms: as long. */
	int written_timeout_ms;
};

/*
 * mq_publisher_new - start the publisher thread. It connects in the
 * background and reconnects with back-off (100 ms doubling to 5 s), each
 * time to the first node of the URL list that accepts. NULL on failure to
 * allocate or to start the thread, or on a URL list that does not parse.
 */
struct mq_publisher *mq_publisher_new(const struct mq_publisher_options *opt);

/*
 * mq_publisher_stop - stop the thread; every message not yet confirmed gets
 * its callback before this returns: ERR_IN_DOUBT when it was sent whole,
 * else ERR_CLOSED. p stays valid: other threads may go on calling
 * mq_publisher_publish (ERR_CLOSED), mq_publisher_connected (0) and
 * mq_publisher_queue_stats until mq_publisher_free. From the thread that
 * frees p; again is a no-op.
 */
void mq_publisher_stop(struct mq_publisher *p);

/*
 * mq_publisher_free - mq_publisher_stop, then free p; no other thread may
 * use p any more. NULL is a no-op.
 */
void mq_publisher_free(struct mq_publisher *p);

/*
 * mq_publisher_publish - hand a persistent message over (body is copied);
 * flags are MQ_PUBLISH_* or 0. ERR_OK: cb will be called exactly once.
 * Otherwise cb is never called: ERR_UNAVAILABLE (not connected now),
 * ERR_TOO_BIG (max_in_flight reached), ERR_CLOSED, ERR_NOMEM, ERR_INVALID
 * (e.g. an unknown flag, or MQ_PUBLISH_MANDATORY without a message id).
 * Thread-safe.
 */
int mq_publisher_publish(struct mq_publisher *p, const char *exchange, const char *routing_key,
                         const char *message_id, const void *body, size_t len, unsigned flags,
                         mq_confirm_cb cb, void *arg);

/* mq_publisher_connected - 1 while the connection is up. Thread-safe. */
int mq_publisher_connected(const struct mq_publisher *p);

/*
 * mq_publisher_queue_stats - the last polled ready-message count and consumer
 * count of mq_stat_queues[i] (AMQP tells nothing of unacknowledged messages:
 * RabbitMQ's own Prometheus exporter does). ERR_INVALID for i out of range,
 * ERR_NOT_FOUND before the first poll and while disconnected. Thread-safe.
 */
int mq_publisher_queue_stats(const struct mq_publisher *p, size_t i, long *messages,
                             long *consumers);

/*
 * mq_publish_sync - publish one message and wait for its confirm: a
 * convenience over a publisher for single-threaded callers (consumers).
 * Returns the callback's result. Thread-safe.
 */
int mq_publish_sync(struct mq_publisher *p, const char *exchange, const char *routing_key,
                    const char *message_id, const void *body, size_t len, unsigned flags);

/* ---- consumer ----------------------------------------------------------- */

struct mq_consumer;

struct mq_delivery {
	uint64_t tag;
	int redelivered;
	long delivery_count; /* x-delivery-count (quorum queues), 0 if absent */
	char routing_key[MQ_KEY_MAX];
	char message_id[MQ_ID_MAX]; /* basic.properties message_id; "" if absent or too long */
	uint8_t *body;              /* malloc'd copy, owned by the delivery */
	size_t len;
};

/* mq_delivery_release - free the body. */
void mq_delivery_release(struct mq_delivery *d);

/*
 * mq_consumer_new - connect (to the first node of the URL list that
 * accepts), declare the topology, set the prefetch and start consuming
 * queue (manual acks). NULL when no broker can be reached or one says no
 * (the reason is logged); the caller retries with back-off.
 */
struct mq_consumer *mq_consumer_new(const char *url, const char *queue, int prefetch);
void mq_consumer_free(struct mq_consumer *c);

/*
 * mq_consumer_next - wait up to timeout_ms for the next delivery.
 * ERR_OK (*out filled; release it), ERR_TIMEOUT, ERR_CLOSED (cancelled, and
 * every delivery the broker sent has been returned: its cancel-ok came, and
 * nothing for 300 ms after it), or ERR_UNAVAILABLE
 * (the connection is gone: free the consumer and make a new one).
 */
int mq_consumer_next(struct mq_consumer *c, struct mq_delivery *out, int timeout_ms);

/*
 * mq_consumer_cancel - ask the broker to send no more deliveries, without
 * waiting for its answer. Those already sent still come from
 * mq_consumer_next, then ERR_CLOSED; they can be acked as usual, so a
 * stopping consumer finishes them instead of handing them back. ERR_OK,
 * ERR_UNAVAILABLE when the connection is gone.
 */
int mq_consumer_cancel(struct mq_consumer *c);

/* mq_consumer_ack / _reject - settle one delivery. requeue=0 on reject sends
 * it to the dead-letter queue. ERR_UNAVAILABLE when the connection is gone. */
int mq_consumer_ack(struct mq_consumer *c, uint64_t tag);
int mq_consumer_reject(struct mq_consumer *c, uint64_t tag, int requeue);

/*
 * mq_consumer_ack_upto - ack, in one basic.ack with multiple set, every
 * delivery of this consumer not settled yet whose tag is at most tag (tags
 * grow with every delivery). Settle the ones that must not be acked first.
 * ERR_UNAVAILABLE when the connection is gone.
 */
int mq_consumer_ack_upto(struct mq_consumer *c, uint64_t tag);

/* ---- topology ----------------------------------------------------------- */

/*
 * mq_declare_topology - declare (idempotently) the exchanges, the durable
 * quorum work queues with their dead-letter queues and delivery limit, and
 * the bindings. Takes an open amqp_connection_state_t (as void *) and a free
 * channel number; used by the publisher and the consumer on connect.
 */
int mq_declare_topology(void *amqp_conn, uint16_t channel);

#endif
