/* mq.c: RabbitMQ topology, the pipelined confirming publisher and the consumer. */
#include "mq.h"

#include <amqp.h>
#include <errno.h>
#include <netinet/in.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "log.h"
#include "mq_internal.h"

const char *const mq_work_queues[MQ_WORK_QUEUES] = {MQ_QUEUE_INVENTORY, MQ_QUEUE_PAYMENT,
                                                    MQ_QUEUE_ORDER, MQ_QUEUE_CART};
const char *const mq_stat_queues[MQ_STAT_QUEUES] = {
    MQ_QUEUE_INVENTORY,    MQ_QUEUE_PAYMENT,          MQ_QUEUE_ORDER,
    MQ_QUEUE_CART,         MQ_QUEUE_INVENTORY ".dlq", MQ_QUEUE_PAYMENT ".dlq",
    MQ_QUEUE_ORDER ".dlq", MQ_QUEUE_CART ".dlq"};

#define MQ_CONTENT_TYPE "application/x-protobuf"
#define MQ_HEARTBEAT_S 30
#define MQ_CONNECT_TIMEOUT_S 5
#define MQ_RPC_TIMEOUT_S 10
#define MQ_BACKOFF_MIN_MS 100
#define MQ_BACKOFF_MAX_MS 5000
/* A connection that lived this long resets the back-off to its minimum. */
#define MQ_STABLE_MS 10000
#define MQ_DEFAULT_IN_FLIGHT 10000
#define MQ_DEFAULT_CONFIRM_TIMEOUT_MS 10000
/* The broker's own default maximum is 128 MiB; our messages are small. */
#define MQ_BODY_MAX (16u * 1024 * 1024)
/* Channel 1 publishes (or consumes); channel 2 declares and polls stats. */
#define MQ_MAIN_CHANNEL 1
#define MQ_SIDE_CHANNEL 2
/*
 * The longest poll() when idle. Confirm deadlines and the stats timer
 * shorten it, a hand-over or a stop wakes it through the eventfd; what is
 * left is rabbitmq-c's heartbeat sending, which happens when frames are read.
 */
#define MQ_TICK_MS 1000
/* Frames read per drain, so that acks never starve the sending. */
#define MQ_MAX_FRAMES_PER_DRAIN 4096
/*
 * The publisher's output buffer: frames of a batch of messages, encoded
 * here and sent in as few send(2)s as the socket allows. A batch is closed
 * at MQ_BATCH_BYTES (acks are read between batches); any one message fits
 * an empty buffer; memory past MQ_OUT_KEEP is given back once sent.
 */
#define MQ_BATCH_BYTES (128u * 1024)
#define MQ_OUT_MAX (MQ_BODY_MAX + 64u * 1024)
#define MQ_OUT_KEEP (1024u * 1024)
/*
 * The most one SSL_write is given: one TLS record's worth. A write that
 * cannot finish holds on to the bytes it was given (OpenSSL wants them
 * again), so they count as sent; one record at a time keeps that to the
 * record the socket stopped at, and a record is either wholly in the
 * kernel or not usable by the broker at all.
 */
#define MQ_TLS_CHUNK 16384u
#define MQ_REASON_MAX 256

/* ---- shared helpers ------------------------------------------------------ */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static amqp_bytes_t bytes_of(const char *s, size_t len)
{
	amqp_bytes_t b;

	b.len = len;
	b.bytes = (void *)s;
	return b;
}

/* copy_bytes - an AMQP short string into a C string, cut to fit. */
static void copy_bytes(char *dst, size_t size, amqp_bytes_t b)
{
	size_t n = b.len < size - 1 ? b.len : size - 1;

	if (n)
		memcpy(dst, b.bytes, n);
	dst[n] = '\0';
}

/* reply_reason - what an RPC reply says went wrong, for the log. */
static void reply_reason(amqp_rpc_reply_t r, char *buf, size_t size)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		snprintf(buf, size, "ok");
		break;
	case AMQP_RESPONSE_NONE:
		snprintf(buf, size, "missing rpc reply");
		break;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		snprintf(buf, size, "%s", amqp_error_string2(r.library_error));
		break;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
			amqp_connection_close_t *c = r.reply.decoded;

			snprintf(buf, size, "connection closed by the broker: %u %.*s",
			         (unsigned)c->reply_code, (int)c->reply_text.len,
			         (const char *)c->reply_text.bytes);
		} else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			amqp_channel_close_t *c = r.reply.decoded;

			snprintf(buf, size, "channel closed by the broker: %u %.*s",
			         (unsigned)c->reply_code, (int)c->reply_text.len,
			         (const char *)c->reply_text.bytes);
		} else {
			snprintf(buf, size, "unexpected broker reply 0x%08x", (unsigned)r.reply.id);
		}
		break;
	default:
		snprintf(buf, size, "unknown rpc reply type");
		break;
	}
}

/*
 * rpc_failed - look at the last RPC reply on channel ch. Returns ERR_OK when
 * it succeeded. Otherwise writes the reason, answers a close from the broker
 * with close-ok (so that a closed channel can be opened again) and returns
 * ERR_MQ when only the channel is gone, ERR_UNAVAILABLE when the connection
 * is.
 */
static int rpc_failed(amqp_connection_state_t conn, amqp_channel_t ch, char *reason, size_t size)
{
	amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);

	if (r.reply_type == AMQP_RESPONSE_NORMAL)
		return ERR_OK;
	reply_reason(r, reason, size);
	if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION)
		return ERR_UNAVAILABLE;
	if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
		amqp_channel_close_ok_t ok = {0};

		if (amqp_send_method(conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK)
			return ERR_UNAVAILABLE;
		return ERR_MQ;
	}
	if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
		amqp_connection_close_ok_t ok = {0};

		amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
	}
	return ERR_UNAVAILABLE;
}

/*
 * struct mq_url - a parsed ORDERS_AMQP_URL: one amqp:// URL, or several
 * separated by commas (the nodes of a cluster). amqp_parse_url() cuts the
 * string it is given into pieces, so the copy lives as long as the parsed
 * form. info is the entry connected to, or the last one tried.
 */
struct mq_url {
	char *buf;
	struct amqp_connection_info info;
	struct amqp_connection_info entries[MQ_URLS_MAX];
	size_t n;
};

/*
 * The entry of the URL list this process last connected to. Every connect
 * tries that one first, so that once one connection has failed over to
 * another node the others, and every later reconnect, go straight there
 * instead of each waiting for the lost node first.
 */
static atomic_size_t mq_url_hint;

static int url_parse(struct mq_url *u, const char *url)
{
	char *s, *comma;

	if (!url)
		return ERR_INVALID;
	u->buf = strdup(url);
	if (!u->buf)
		return ERR_NOMEM;
	u->n = 0;
	for (s = u->buf; s; s = comma ? comma + 1 : NULL) {
		struct amqp_connection_info *e = &u->entries[u->n];

		comma = strchr(s, ',');
		if (comma)
			*comma = '\0';
		if (u->n == MQ_URLS_MAX || amqp_parse_url(s, e) != AMQP_STATUS_OK) {
			free(u->buf);
			u->buf = NULL;
			return ERR_INVALID;
		}
		/*
		 * "amqp://host:port/" names the vhost "" by the URI spec, which
		 * no broker has; everyone writing it means the default vhost "/".
		 */
		if (!e->vhost || !e->vhost[0])
			e->vhost = "/";
		u->n++;
	}
	u->info = u->entries[0];
	return ERR_OK;
}

static void url_release(struct mq_url *u)
{
	free(u->buf);
	u->buf = NULL;
}

int mq__url_each(const char *url, void (*fn)(void *arg, const struct amqp_connection_info *entry),
                 void *arg)
{
	struct mq_url u = {0};
	int rc = url_parse(&u, url);

	if (rc != ERR_OK)
		return rc;
	for (size_t i = 0; i < u.n; i++)
		fn(arg, &u.entries[i]);
	url_release(&u);
	return ERR_OK;
}

/*
 * host_open - connect to one broker (over TLS for amqps://) and log in,
 * with every wait bounded: the TCP connect, the TLS and AMQP handshakes and
 * each later RPC. *tls (when not NULL) gets the TLS session, NULL for plain
 * TCP. On failure the reason is written and nothing is left open.
 */
static int host_open(const struct amqp_connection_info *info, amqp_connection_state_t *out,
                     void **tls, char *reason, size_t size)
{
	struct timeval connect_tv = {MQ_CONNECT_TIMEOUT_S, 0};
	struct timeval rpc_tv = {MQ_RPC_TIMEOUT_S, 0};
	amqp_connection_state_t conn;
	amqp_rpc_reply_t r;
	void *session = NULL;
	int rc;

	conn = amqp_new_connection();
	if (!conn) {
		snprintf(reason, size, "out of memory");
		return ERR_NOMEM;
	}
	rc = mq__socket_open(conn, info->host, info->port, info->ssl, &connect_tv, &session, reason,
	                     size);
	if (rc) {
		amqp_destroy_connection(conn);
		return rc;
	}
	amqp_set_handshake_timeout(conn, &connect_tv);
	amqp_set_rpc_timeout(conn, &rpc_tv);
	r = amqp_login(conn, info->vhost, 0, AMQP_DEFAULT_FRAME_SIZE, MQ_HEARTBEAT_S,
	               AMQP_SASL_METHOD_PLAIN, info->user, info->password);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		reply_reason(r, reason, size);
		amqp_destroy_connection(conn);
		return ERR_UNAVAILABLE;
	}
	if (tls)
		*tls = session;
	*out = conn;
	return ERR_OK;
}

/*
 * conn_open - connect to the first entry of u that takes the connection,
 * trying them in turn from the one this process last reached; u->info is
 * left on the entry connected to, or the last one tried. On failure the
 * reason names every entry's failure (just the reason for a single URL)
 * and nothing is left open. *tls as for host_open.
 */
static int conn_open(struct mq_url *u, amqp_connection_state_t *out, void **tls, char *reason,
                     size_t size)
{
	size_t start = atomic_load(&mq_url_hint) % u->n, used = 0;
	int rc = ERR_UNAVAILABLE;

	reason[0] = '\0';
	for (size_t k = 0; k < u->n; k++) {
		size_t i = (start + k) % u->n;
		char why[MQ_REASON_MAX];
		int len;

		u->info = u->entries[i];
		rc = host_open(&u->info, out, tls, why, sizeof(why));
		if (rc == ERR_OK) {
			atomic_store(&mq_url_hint, i);
			return ERR_OK;
		}
		if (u->n == 1) {
			snprintf(reason, size, "%s", why);
		} else if (used < size) {
			/* What does not fit is cut; every entry is still tried. */
			len = snprintf(reason + used, size - used, "%s%s:%d: %s", used ? "; " : "",
			               u->info.host, u->info.port, why);
			used = len < 0 ? size : used + (size_t)len;
		}
		if (rc == ERR_NOMEM)
			break;
	}
	return rc;
}

/* conn_close - say goodbye when the connection still works, then free it. */
static void conn_close(amqp_connection_state_t conn, int graceful)
{
	if (!conn)
		return;
	if (graceful)
		amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
}

/* ---- topology ------------------------------------------------------------ */

static const struct {
	const char *queue;
	const char *keys[3];
} mq_bindings[MQ_WORK_QUEUES] = {
    {MQ_QUEUE_INVENTORY, {MQ_KEY_CHECKOUT_REQUESTED, NULL, NULL}},
    {MQ_QUEUE_PAYMENT, {MQ_KEY_INVENTORY_RESERVED, NULL, NULL}},
    {MQ_QUEUE_ORDER,
     {MQ_KEY_INVENTORY_REJECTED, MQ_KEY_PAYMENT_AUTHORIZED, MQ_KEY_PAYMENT_DECLINED}},
    {MQ_QUEUE_CART, {MQ_KEY_CART_CHANGED, MQ_KEY_CART_CHECKED_OUT, NULL}},
};

static amqp_table_entry_t str_entry(const char *key, const char *value)
{
	amqp_table_entry_t e;

	e.key = amqp_cstring_bytes(key);
	e.value.kind = AMQP_FIELD_KIND_UTF8;
	e.value.value.bytes = amqp_cstring_bytes(value);
	return e;
}

static amqp_table_entry_t int_entry(const char *key, int64_t value)
{
	amqp_table_entry_t e;

	e.key = amqp_cstring_bytes(key);
	e.value.kind = AMQP_FIELD_KIND_I64;
	e.value.value.i64 = value;
	return e;
}

/*
 * declare_steps - the declarations themselves, on an open channel. The
 * arguments must be byte-for-byte the same on every declare: a queue declared
 * again with other arguments makes the broker close the channel (406).
 */
static int declare_steps(amqp_connection_state_t conn, amqp_channel_t ch, char *reason, size_t size,
                         char *subject, size_t subject_size)
{
	static const struct {
		const char *name;
		const char *type;
	} exchanges[] = {
	    {MQ_EXCHANGE_ORDERS, "topic"},
	    {MQ_EXCHANGE_EVENTS, "topic"},
	    {MQ_EXCHANGE_DLX, "direct"},
	};
	int rc;

	for (size_t i = 0; i < sizeof(exchanges) / sizeof(exchanges[0]); i++) {
		snprintf(subject, subject_size, "%s", exchanges[i].name);
		amqp_exchange_declare(conn, ch, amqp_cstring_bytes(exchanges[i].name),
		                      amqp_cstring_bytes(exchanges[i].type), 0, 1, 0, 0,
		                      amqp_empty_table);
		rc = rpc_failed(conn, ch, reason, size);
		if (rc)
			return rc;
	}
	for (size_t i = 0; i < sizeof(mq_bindings) / sizeof(mq_bindings[0]); i++) {
		const char *q = mq_bindings[i].queue;
		char dlq[MQ_KEY_MAX + 8];
		amqp_table_entry_t work_args[6];
		amqp_table_entry_t dlq_args[1];
		amqp_table_t work_table = {6, work_args};
		amqp_table_t dlq_table = {1, dlq_args};

		work_args[0] = str_entry("x-queue-type", "quorum");
		work_args[1] = int_entry("x-delivery-limit", MQ_DELIVERY_LIMIT);
		work_args[2] = str_entry("x-dead-letter-exchange", MQ_EXCHANGE_DLX);
		work_args[3] = str_entry("x-dead-letter-routing-key", q);
		work_args[4] = str_entry("x-dead-letter-strategy", "at-least-once");
		work_args[5] = str_entry("x-overflow", "reject-publish");
		dlq_args[0] = str_entry("x-queue-type", "quorum");
		snprintf(dlq, sizeof(dlq), "%s.dlq", q);

		snprintf(subject, subject_size, "%s", q);
		amqp_queue_declare(conn, ch, amqp_cstring_bytes(q), 0, 1, 0, 0, work_table);
		rc = rpc_failed(conn, ch, reason, size);
		if (rc)
			return rc;
		for (size_t k = 0; k < 3 && mq_bindings[i].keys[k]; k++) {
			amqp_queue_bind(
			    conn, ch, amqp_cstring_bytes(q), amqp_cstring_bytes(MQ_EXCHANGE_ORDERS),
			    amqp_cstring_bytes(mq_bindings[i].keys[k]), amqp_empty_table);
			rc = rpc_failed(conn, ch, reason, size);
			if (rc)
				return rc;
		}
		snprintf(subject, subject_size, "%s", dlq);
		amqp_queue_declare(conn, ch, amqp_cstring_bytes(dlq), 0, 1, 0, 0, dlq_table);
		rc = rpc_failed(conn, ch, reason, size);
		if (rc)
			return rc;
		amqp_queue_bind(conn, ch, amqp_cstring_bytes(dlq),
		                amqp_cstring_bytes(MQ_EXCHANGE_DLX), amqp_cstring_bytes(q),
		                amqp_empty_table);
		rc = rpc_failed(conn, ch, reason, size);
		if (rc)
			return rc;
	}
	subject[0] = '\0';
	return ERR_OK;
}

int mq_declare_topology(void *amqp_conn, uint16_t channel)
{
	amqp_connection_state_t conn = amqp_conn;
	char reason[MQ_REASON_MAX] = "";
	char subject[MQ_KEY_MAX + 8] = "";
	int rc;

	if (!conn || channel == 0)
		return ERR_INVALID;
	/*
	 * The channel is opened here and closed again, so it is free
	 * afterwards; when the broker closes it on an error, rpc_failed() has
	 * already answered the close.
	 */
	amqp_channel_open(conn, channel);
	rc = rpc_failed(conn, channel, reason, sizeof(reason));
	if (rc)
		goto out;
	rc = declare_steps(conn, channel, reason, sizeof(reason), subject, sizeof(subject));
	if (rc)
		goto out;
	amqp_channel_close(conn, channel, AMQP_REPLY_SUCCESS);
	rc = rpc_failed(conn, channel, reason, sizeof(reason));
out:
	if (rc)
		log_error("cannot declare the rabbitmq topology", LF_STR("subject", subject),
		          LF_STR("reason", reason));
	return rc;
}

/* ---- publisher ----------------------------------------------------------- */

/*
 * struct mq_msg - one handed-over message, allocated in one piece: the
 * strings and the body follow the struct.
 */
struct mq_msg {
	struct mq_msg *next;
	struct mq_msg *prev; /* in-flight list only */
	uint64_t tag;        /* delivery tag once a byte of it is sent */
	int64_t deadline_ms; /* monotonic: hand-over time + confirm timeout */
	int64_t doubt_ms;    /* the same + written timeout: see mq_publisher_options */
	/* Its frames in p->out while that holds batch number batch. */
	size_t out_start;
	size_t out_end;
	uint64_t batch;
	mq_confirm_cb cb;
	void *arg;
	unsigned flags; /* MQ_PUBLISH_* */
	int returned;   /* the broker sent it back with basic.return */
	const char *exchange;
	const char *routing_key;
	const char *message_id; /* "" when absent */
	size_t exchange_len;
	size_t routing_key_len;
	size_t message_id_len;
	const uint8_t *body;
	size_t len;
	char data[];
};

/* A singly linked FIFO (submit queue and outbox). */
struct mq_fifo {
	struct mq_msg *head;
	struct mq_msg *tail;
};

struct mq_publisher {
	/* Set by mq_publisher_new(), read-only afterwards. */
	struct mq_url url;
	int confirm_timeout_ms;
	int written_timeout_ms;
	size_t max_in_flight;
	int declare_topology;
	int poll_stats_ms;
	int efd;
	pthread_t thread;
	int joined; /* the owner's: mq_publisher_stop has joined the thread */

	/* Shared with the publishing threads. */
	pthread_mutex_t mu;
	struct mq_fifo submit; /* guarded by mu */
	atomic_int stop;       /* written under mu */
	atomic_int connected;  /* written under mu by the publisher thread */
	atomic_size_t pending; /* queued + in flight; raised under mu */
	atomic_long stat_messages[MQ_STAT_QUEUES];
	atomic_long stat_consumers[MQ_STAT_QUEUES];
	atomic_int stat_valid[MQ_STAT_QUEUES];
	/* mq__publisher_fail_encode: set under mu, armed tells the thread to look. */
	atomic_int fault_armed;
	char fault_id[MQ_ID_MAX];
	int fault_err;

	/* The publisher thread's own. */
	amqp_connection_state_t conn;
	int fd;
	void *tls;             /* the TLS session of an amqps:// connection, else NULL */
	struct mq_fifo outbox; /* taken from submit, not yet encoded */
	struct buf out;        /* encoded frames, sent a batch at a time */
	size_t out_sent;       /* bytes of out the socket has taken */
	size_t out_tried;      /* TLS: out up to here is given to a write not finished, or 0 */
	uint64_t out_batch;    /* counts the batches out has held */
	/*
	 * Messages whose frames are in out and of which no byte has gone to
	 * the socket, in out's order: the broker knows nothing of them, so
	 * they have no delivery tag yet and can still be taken out (expired).
	 * The first byte sent makes a message in flight.
	 */
	struct mq_fifo staged;
	struct mq_msg *fl_head; /* in flight, ascending tags */
	struct mq_msg *fl_tail;
	uint64_t next_tag;
	int stats_open;
	int stat_warned[MQ_STAT_QUEUES];
	int got_frames;
	char reason[MQ_REASON_MAX];
	/*
	 * A basic.return read on the main channel whose content header has not
	 * come yet: the message id that names the returned message is in the
	 * header, so the method's fields wait here for it.
	 */
	int ret_pending;
	unsigned ret_code;
	char ret_exchange[MQ_KEY_MAX];
	char ret_key[MQ_KEY_MAX];
	char ret_text[MQ_REASON_MAX];
};

static void fifo_push(struct mq_fifo *f, struct mq_msg *m)
{
	m->next = NULL;
	if (f->tail)
		f->tail->next = m;
	else
		f->head = m;
	f->tail = m;
}

static struct mq_msg *fifo_pop(struct mq_fifo *f)
{
	struct mq_msg *m = f->head;

	if (m) {
		f->head = m->next;
		if (!f->head)
			f->tail = NULL;
		m->next = NULL;
	}
	return m;
}

/* fifo_append - move every message of src to the end of dst. */
static void fifo_append(struct mq_fifo *dst, struct mq_fifo *src)
{
	if (!src->head)
		return;
	if (dst->tail)
		dst->tail->next = src->head;
	else
		dst->head = src->head;
	dst->tail = src->tail;
	src->head = NULL;
	src->tail = NULL;
}

static void inflight_push(struct mq_publisher *p, struct mq_msg *m)
{
	m->next = NULL;
	m->prev = p->fl_tail;
	if (p->fl_tail)
		p->fl_tail->next = m;
	else
		p->fl_head = m;
	p->fl_tail = m;
}

static void inflight_unlink(struct mq_publisher *p, struct mq_msg *m)
{
	if (m->prev)
		m->prev->next = m->next;
	else
		p->fl_head = m->next;
	if (m->next)
		m->next->prev = m->prev;
	else
		p->fl_tail = m->prev;
	m->next = NULL;
	m->prev = NULL;
}

/*
 * finish - tell the owner and forget the message. Called from the publisher
 * thread with no lock held, so a callback may take its own locks.
 */
static void finish(struct mq_publisher *p, struct mq_msg *m, int result)
{
	m->cb(m->arg, result);
	free(m);
	atomic_fetch_sub(&p->pending, 1);
}

static void fail_fifo(struct mq_publisher *p, struct mq_fifo *f, int result)
{
	struct mq_msg *m;

	while ((m = fifo_pop(f)))
		finish(p, m, result);
}

/*
 * sent_whole - every byte of in-flight m has gone to the socket: its frames
 * were in an earlier batch of p->out, or in this one before out_sent.
 */
static int sent_whole(const struct mq_publisher *p, const struct mq_msg *m)
{
	return m->batch != p->out_batch || m->out_end <= p->out_sent;
}

/*
 * fail_inflight - the connection is going: a message sent whole may have
 * reached the broker and been stored (ERR_IN_DOUBT); one cut short cannot
 * have been, and fails with result.
 */
static void fail_inflight(struct mq_publisher *p, int result)
{
	struct mq_msg *m;

	while ((m = p->fl_head)) {
		inflight_unlink(p, m);
		finish(p, m, sent_whole(p, m) ? ERR_IN_DOUBT : result);
	}
}

/*
 * settled_result - what a confirm means for m: the broker acks a message it
 * returned as unroutable (it was handled: dropped), which for a mandatory
 * publish is a failure.
 */
static int settled_result(const struct mq_msg *m, int result)
{
	return result == ERR_OK && m->returned ? ERR_UNROUTABLE : result;
}

/*
 * mark_returned - find the in-flight message a basic.return is about and
 * mark it, so that its ack (which the broker sends after the return) fails
 * it. The return names no delivery tag, only the message's properties and
 * where it went: the message id, the exchange and the routing key identify
 * it. Only mandatory messages are ever returned. Should several unreturned
 * messages match (callers reusing an id for the same route, which they must
 * not), the oldest is marked: the broker returns in publish order, and each
 * of them, going the same way, gets a return of its own.
 */
static void mark_returned(struct mq_publisher *p, const amqp_basic_properties_t *props)
{
	char id[MQ_ID_MAX] = "";
	struct mq_msg *found = NULL;
	size_t matches = 0;

	if (props && (props->_flags & AMQP_BASIC_MESSAGE_ID_FLAG))
		copy_bytes(id, sizeof(id), props->message_id);
	if (id[0]) {
		for (struct mq_msg *m = p->fl_head; m; m = m->next) {
			if (!(m->flags & MQ_PUBLISH_MANDATORY) || m->returned ||
			    strcmp(m->message_id, id) != 0 ||
			    strcmp(m->exchange, p->ret_exchange) != 0 ||
			    strcmp(m->routing_key, p->ret_key) != 0)
				continue;
			if (!found)
				found = m;
			matches++;
		}
	}
	if (!found) {
		/* Timed out already, or not ours to pair: its ack fails nothing. */
		log_warn("cannot match a message returned by rabbitmq", LF_STR("message_id", id),
		         LF_STR("exchange", p->ret_exchange), LF_STR("routing_key", p->ret_key),
		         LF_INT("reply_code", p->ret_code), LF_STR("reason", p->ret_text));
		return;
	}
	if (matches > 1)
		log_warn("several messages in flight share a returned message id",
		         LF_STR("message_id", id), LF_STR("routing_key", p->ret_key),
		         LF_INT("matches", (long long)matches));
	found->returned = 1;
	log_warn("rabbitmq returned an unroutable message", LF_STR("message_id", id),
	         LF_STR("exchange", p->ret_exchange), LF_STR("routing_key", p->ret_key),
	         LF_INT("reply_code", p->ret_code), LF_STR("reason", p->ret_text));
}

/*
 * settle - a basic.ack or basic.nack. With multiple set it covers every tag
 * up to tag (0: all outstanding). Tags we no longer hold (timed out) are
 * ignored.
 */
static void settle(struct mq_publisher *p, uint64_t tag, int multiple, int result)
{
	struct mq_msg *m;

	if (multiple) {
		while ((m = p->fl_head) && (tag == 0 || m->tag <= tag)) {
			inflight_unlink(p, m);
			finish(p, m, settled_result(m, result));
		}
		return;
	}
	if (!p->fl_head || tag < p->fl_head->tag || tag > p->fl_tail->tag)
		return;
	/* Acks arrive nearly in order: search from the nearer end. */
	if (tag - p->fl_head->tag <= p->fl_tail->tag - tag) {
		for (m = p->fl_head; m && m->tag < tag; m = m->next)
			;
	} else {
		for (m = p->fl_tail; m && m->tag > tag; m = m->prev)
			;
	}
	if (m && m->tag == tag) {
		inflight_unlink(p, m);
		finish(p, m, settled_result(m, result));
	}
}

/* out_done - every byte of p->out is sent: start the next batch. */
static void out_done(struct mq_publisher *p)
{
	p->out_sent = 0;
	p->out_tried = 0;
	p->out_batch++;
	if (p->out.cap > MQ_OUT_KEEP)
		buf_release(&p->out);
	else
		buf_reset(&p->out);
}

/*
 * expire_staged - take the staged messages past their deadline out of
 * p->out and fail them with ERR_TIMEOUT: not a byte of them has gone to
 * the socket, so the broker never sees them. They are the first of the
 * staged list (deadlines follow hand-over order) and their frames one
 * piece of p->out at or past what any write has been given; the messages
 * staged after them move down with their frames. They never had a
 * delivery tag, so the tags of the channel stay the broker's.
 */
static void expire_staged(struct mq_publisher *p, int64_t now)
{
	struct mq_fifo gone = {NULL, NULL};
	struct mq_msg *m;
	size_t from, to = 0;

	if (!p->staged.head || p->staged.head->deadline_ms > now)
		return;
	from = p->staged.head->out_start;
	while ((m = p->staged.head) && m->deadline_ms <= now) {
		to = m->out_end;
		fifo_push(&gone, fifo_pop(&p->staged));
	}
	buf_cut(&p->out, from, to - from);
	for (m = p->staged.head; m; m = m->next) {
		m->out_start -= to - from;
		m->out_end -= to - from;
	}
	if (p->out_sent == p->out.len)
		out_done(p);
	fail_fifo(p, &gone, ERR_TIMEOUT);
}

/*
 * expire - messages past their deadline (all three lists are in deadline
 * order). Those not sent yet fail with ERR_TIMEOUT and are never sent. A
 * message of which bytes have gone to the socket may be stored by the
 * broker yet (a broker that stopped reading reads them later): it waits
 * for its confirm until its doubt_ms, then fails with ERR_IN_DOUBT.
 */
static void expire(struct mq_publisher *p, int64_t now)
{
	struct mq_msg *m;

	while ((m = p->outbox.head) && m->deadline_ms <= now)
		finish(p, fifo_pop(&p->outbox), ERR_TIMEOUT);
	expire_staged(p, now);
	while ((m = p->fl_head) && m->doubt_ms <= now) {
		inflight_unlink(p, m);
		finish(p, m, ERR_IN_DOUBT);
	}
}

static int stopping(struct mq_publisher *p)
{
	return atomic_load(&p->stop);
}

/* take_submitted - move the submit queue into the outbox in one lock. */
static void take_submitted(struct mq_publisher *p)
{
	pthread_mutex_lock(&p->mu);
	fifo_append(&p->outbox, &p->submit);
	pthread_mutex_unlock(&p->mu);
}

static void drain_eventfd(struct mq_publisher *p)
{
	uint64_t v;

	while (read(p->efd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		;
}

/* wait_wakeup - sleep up to ms, or less when woken (a stop). */
static void wait_wakeup(struct mq_publisher *p, int ms)
{
	int64_t end = now_ms() + ms;

	while (!stopping(p)) {
		int64_t left = end - now_ms();
		struct pollfd pfd = {.fd = p->efd, .events = POLLIN};

		if (left <= 0)
			break;
		if (poll(&pfd, 1, (int)left) > 0)
			drain_eventfd(p);
	}
}

/*
 * read_frames - everything the broker has sent, without blocking. Returns 0,
 * or -1 when the connection is lost (p->reason says why).
 */
static int read_frames(struct mq_publisher *p)
{
	struct timeval zero = {0, 0};
	amqp_frame_t f;

	for (int n = 0; n < MQ_MAX_FRAMES_PER_DRAIN; n++) {
		int st = amqp_simple_wait_frame_noblock(p->conn, &f, &zero);

		if (st == AMQP_STATUS_TIMEOUT)
			return 0;
		if (st != AMQP_STATUS_OK) {
			snprintf(p->reason, sizeof(p->reason), "%s", amqp_error_string2(st));
			return -1;
		}
		p->got_frames = 1;
		if (f.frame_type == AMQP_FRAME_HEADER) {
			/*
			 * A content header right after a basic.return on the main
			 * channel is the returned message's: content frames follow
			 * their method without another method between them.
			 */
			if (f.channel == MQ_MAIN_CHANNEL && p->ret_pending) {
				p->ret_pending = 0;
				mark_returned(p, f.payload.properties.decoded);
			}
			continue;
		}
		if (f.frame_type != AMQP_FRAME_METHOD)
			continue; /* the body of a returned message: not needed */
		if (f.channel == MQ_MAIN_CHANNEL)
			p->ret_pending = 0;
		switch (f.payload.method.id) {
		case AMQP_BASIC_ACK_METHOD: {
			amqp_basic_ack_t *a = f.payload.method.decoded;

			if (f.channel == MQ_MAIN_CHANNEL)
				settle(p, a->delivery_tag, a->multiple, ERR_OK);
			break;
		}
		case AMQP_BASIC_NACK_METHOD: {
			amqp_basic_nack_t *a = f.payload.method.decoded;

			if (f.channel == MQ_MAIN_CHANNEL)
				settle(p, a->delivery_tag, a->multiple, ERR_NACKED);
			break;
		}
		case AMQP_CHANNEL_CLOSE_METHOD: {
			amqp_channel_close_t *c = f.payload.method.decoded;
			amqp_channel_close_ok_t ok = {0};

			snprintf(p->reason, sizeof(p->reason),
			         "channel %u closed by the broker: %u %.*s", (unsigned)f.channel,
			         (unsigned)c->reply_code, (int)c->reply_text.len,
			         (const char *)c->reply_text.bytes);
			if (amqp_send_method(p->conn, f.channel, AMQP_CHANNEL_CLOSE_OK_METHOD,
			                     &ok) != AMQP_STATUS_OK)
				return -1;
			if (f.channel == MQ_SIDE_CHANNEL) {
				p->stats_open = 0;
				break;
			}
			return -1;
		}
		case AMQP_CONNECTION_CLOSE_METHOD: {
			amqp_connection_close_t *c = f.payload.method.decoded;
			amqp_connection_close_ok_t ok = {0};

			snprintf(p->reason, sizeof(p->reason),
			         "connection closed by the broker: %u %.*s",
			         (unsigned)c->reply_code, (int)c->reply_text.len,
			         (const char *)c->reply_text.bytes);
			amqp_send_method(p->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
			return -1;
		}
		case AMQP_BASIC_RETURN_METHOD: {
			amqp_basic_return_t *r = f.payload.method.decoded;

			if (f.channel != MQ_MAIN_CHANNEL)
				break;
			p->ret_pending = 1;
			p->ret_code = r->reply_code;
			copy_bytes(p->ret_exchange, sizeof(p->ret_exchange), r->exchange);
			copy_bytes(p->ret_key, sizeof(p->ret_key), r->routing_key);
			copy_bytes(p->ret_text, sizeof(p->ret_text), r->reply_text);
			break;
		}
		default:
			break; /* connection.blocked and the like */
		}
	}
	return 0;
}

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
	for (int i = bytes - 1; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

/* One frame (type, channel, size, payload, frame-end) onto p->out. */
static int frame_append(struct mq_publisher *p, uint8_t type, const void *payload, size_t len)
{
	uint8_t head[7];
	static const uint8_t end = AMQP_FRAME_END;
	int rc;

	head[0] = type;
	put_be(head + 1, MQ_MAIN_CHANNEL, 2);
	put_be(head + 3, len, 4);
	rc = buf_append(&p->out, head, sizeof(head));
	if (rc == ERR_OK)
		rc = buf_append(&p->out, payload, len);
	if (rc == ERR_OK)
		rc = buf_append(&p->out, &end, 1);
	return rc;
}

/*
 * encode_publish - the frames amqp_basic_publish() would send for m
 * (basic.publish, the content header, the body in frame_max pieces), onto
 * p->out, all or nothing. Encoded here because amqp_basic_publish() makes a
 * send(2) per frame; with the frames of many messages in one buffer, a
 * batch leaves in one. ERR_TOO_BIG when p->out has no room for them.
 */
static int encode_publish(struct mq_publisher *p, const struct mq_msg *m)
{
	uint8_t method[4 + 2 * 256 + 16], header[12 + 512];
	amqp_basic_publish_t pub;
	amqp_basic_properties_t props;
	size_t before = p->out.len, piece = (size_t)amqp_get_frame_max(p->conn) - 8;
	int n, rc;

	memset(&pub, 0, sizeof(pub));
	pub.exchange = bytes_of(m->exchange, m->exchange_len);
	pub.routing_key = bytes_of(m->routing_key, m->routing_key_len);
	pub.mandatory = (m->flags & MQ_PUBLISH_MANDATORY) != 0;
	memset(&props, 0, sizeof(props));
	props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
	props.content_type = amqp_cstring_bytes(MQ_CONTENT_TYPE);
	props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	if (m->message_id_len) {
		props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
		props.message_id = bytes_of(m->message_id, m->message_id_len);
	}

	/* Both return the encoded length (their documentation says 0). */
	put_be(method, AMQP_BASIC_PUBLISH_METHOD, 4);
	n = amqp_encode_method(AMQP_BASIC_PUBLISH_METHOD, &pub,
	                       (amqp_bytes_t){sizeof(method) - 4, method + 4});
	if (n < 0)
		return ERR_INVALID;
	rc = frame_append(p, AMQP_FRAME_METHOD, method, 4 + (size_t)n);
	put_be(header, AMQP_BASIC_CLASS, 2);
	put_be(header + 2, 0, 2); /* weight */
	put_be(header + 4, m->len, 8);
	n = amqp_encode_properties(AMQP_BASIC_CLASS, &props,
	                           (amqp_bytes_t){sizeof(header) - 12, header + 12});
	if (n < 0)
		rc = ERR_INVALID;
	if (rc == ERR_OK)
		rc = frame_append(p, AMQP_FRAME_HEADER, header, 12 + (size_t)n);
	for (size_t off = 0; rc == ERR_OK && off < m->len; off += piece)
		rc = frame_append(p, AMQP_FRAME_BODY, m->body + off,
		                  m->len - off < piece ? m->len - off : piece);
	if (rc != ERR_OK)
		buf_truncate(&p->out, before);
	return rc;
}

/*
 * drop_body - m without its body, which is in p->out now: a message waits
 * for its confirm with only what pairs a return with it, which keeps the
 * memory of 20,000 messages in flight small. The body is the last part of
 * m; should realloc move m (it is on no list here), its strings are found
 * again at the same offsets.
 */
static struct mq_msg *drop_body(struct mq_msg *m)
{
	size_t keep = (size_t)((const char *)m->body - m->data);
	size_t ex = (size_t)(m->exchange - m->data), rk = (size_t)(m->routing_key - m->data);
	size_t id = (size_t)(m->message_id - m->data);
	struct mq_msg *smaller;

	m->body = NULL;
	m->len = 0;
	smaller = realloc(m, sizeof(*m) + keep);
	if (!smaller)
		return m;
	smaller->exchange = smaller->data + ex;
	smaller->routing_key = smaller->data + rk;
	smaller->message_id = smaller->data + id;
	return smaller;
}

static int out_pending(const struct mq_publisher *p)
{
	return p->out.len > 0;
}

/*
 * out_write - write what the socket takes now of len bytes at buf: > 0
 * bytes written, 0 none now, -1 failed (p->reason says why). Over TLS the
 * bytes go through OpenSSL (the raw socket would bypass it), whose rule for
 * a write that could not finish holds here: the bytes it was given
 * (p->out from out_sent to out_tried) neither move nor change until it
 * has finished, so the retry passes the same buffer, and at least as long.
 */
static ssize_t out_write(struct mq_publisher *p, const uint8_t *buf, size_t len)
{
	char ebuf[128];
	ssize_t w;

	if (p->tls)
		return mq__tls_write(p->tls, buf, len, p->reason, sizeof(p->reason));
	do
		w = send(p->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w > 0)
		return w;
	if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	snprintf(p->reason, sizeof(p->reason), "send: %s",
	         w < 0 ? strerror_r(errno, ebuf, sizeof(ebuf)) : "nothing sent");
	return -1;
}

/*
 * promote - the staged messages a write has reached (or, over TLS, been
 * given) are in flight now: the broker counts them, so each takes the
 * channel's next delivery tag, in the order they are sent.
 */
static void promote(struct mq_publisher *p)
{
	size_t reached = p->out_tried > p->out_sent ? p->out_tried : p->out_sent;
	struct mq_msg *m;

	while ((m = p->staged.head) && m->out_start < reached) {
		fifo_pop(&p->staged);
		m->tag = ++p->next_tag;
		inflight_push(p, m);
	}
}

/*
 * flush_out - send what the socket takes now, never waiting: a broker that
 * stops reading (a memory alarm) must not freeze this thread, which also
 * times messages out. Staged messages past their deadline are taken out
 * first, so that none is sent late. Until everything is sent, nothing else
 * may be written on the connection (rabbitmq-c writes heartbeats when it
 * reads), so the caller reads no frames while out_pending(). 0, or -1 when
 * the connection failed (p->reason says why).
 */
static int flush_out(struct mq_publisher *p)
{
	expire_staged(p, now_ms());
	while (p->out_sent < p->out.len) {
		size_t len = p->out.len - p->out_sent;
		ssize_t w;

		if (p->tls && len > MQ_TLS_CHUNK)
			len = MQ_TLS_CHUNK;
		w = out_write(p, (const uint8_t *)p->out.data + p->out_sent, len);
		if (w < 0)
			return -1;
		if (w == 0) {
			if (p->tls)
				p->out_tried = p->out_sent + len;
			promote(p);
			return 0;
		}
		p->out_sent += (size_t)w;
		p->out_tried = 0;
		promote(p);
	}
	out_done(p);
	return 0;
}

/* encode_fault - the failure mq__publisher_fail_encode planted for m, once; else ERR_OK. */
static int encode_fault(struct mq_publisher *p, const struct mq_msg *m)
{
	int rc = ERR_OK;

	if (!atomic_load(&p->fault_armed))
		return ERR_OK;
	pthread_mutex_lock(&p->mu);
	if (strcmp(p->fault_id, m->message_id) == 0) {
		rc = p->fault_err;
		p->fault_id[0] = '\0';
		atomic_store(&p->fault_armed, 0);
	}
	pthread_mutex_unlock(&p->mu);
	return rc;
}

/*
 * send_outbox - publish what is waiting, a batch at a time, reading acks
 * between batches; stop while the socket takes no more (the rest of the
 * batch is sent when it is writable again). A message past its deadline
 * is not encoded; one that cannot be encoded fails alone (ERR_NOMEM, or
 * ERR_INVALID: it never can be), and the connection goes on.
 */
static int send_outbox(struct mq_publisher *p)
{
	struct mq_msg *m;

	if (flush_out(p))
		return -1;
	while (!out_pending(p) && p->outbox.head) {
		int64_t now = now_ms();

		while ((m = p->outbox.head) && p->out.len < MQ_BATCH_BYTES) {
			size_t start = p->out.len;
			int rc;

			if (m->deadline_ms <= now) {
				finish(p, fifo_pop(&p->outbox), ERR_TIMEOUT);
				continue;
			}
			rc = encode_fault(p, m);
			if (rc == ERR_OK)
				rc = encode_publish(p, m);
			if (rc == ERR_TOO_BIG && out_pending(p))
				break; /* the next batch takes it */
			fifo_pop(&p->outbox);
			if (rc != ERR_OK) {
				log_warn("cannot encode a message to publish",
				         LF_STR("message_id", m->message_id),
				         LF_STR("routing_key", m->routing_key),
				         LF_STR("reason", err_str(rc)));
				finish(p, m, rc == ERR_NOMEM ? ERR_NOMEM : ERR_INVALID);
				continue;
			}
			m = drop_body(m);
			m->out_start = start;
			m->out_end = p->out.len;
			m->batch = p->out_batch;
			fifo_push(&p->staged, m);
		}
		if (flush_out(p))
			return -1;
		if (!out_pending(p) && read_frames(p))
			return -1;
	}
	return 0;
}

/*
 * poll_stats - passive-declare each of mq_stat_queues on the stats channel. A
 * missing queue makes the broker close that channel (404): it is opened
 * again next time. Returns -1 only when the connection is lost.
 */
static int poll_stats(struct mq_publisher *p)
{
	char reason[MQ_REASON_MAX];

	for (size_t i = 0; i < MQ_STAT_QUEUES; i++) {
		amqp_queue_declare_ok_t *ok;
		int rc;

		if (!p->stats_open) {
			amqp_channel_open(p->conn, MQ_SIDE_CHANNEL);
			rc = rpc_failed(p->conn, MQ_SIDE_CHANNEL, reason, sizeof(reason));
			if (rc == ERR_UNAVAILABLE) {
				snprintf(p->reason, sizeof(p->reason), "%s", reason);
				return -1;
			}
			if (rc)
				return 0;
			p->stats_open = 1;
		}
		ok = amqp_queue_declare(p->conn, MQ_SIDE_CHANNEL,
		                        amqp_cstring_bytes(mq_stat_queues[i]), 1, 0, 0, 0,
		                        amqp_empty_table);
		if (ok) {
			atomic_store(&p->stat_messages[i], (long)ok->message_count);
			atomic_store(&p->stat_consumers[i], (long)ok->consumer_count);
			atomic_store(&p->stat_valid[i], 1);
			p->stat_warned[i] = 0;
			continue;
		}
		rc = rpc_failed(p->conn, MQ_SIDE_CHANNEL, reason, sizeof(reason));
		if (rc == ERR_UNAVAILABLE) {
			snprintf(p->reason, sizeof(p->reason), "%s", reason);
			return -1;
		}
		p->stats_open = 0;
		atomic_store(&p->stat_valid[i], 0);
		/* Once per queue going missing, not on every poll. */
		if (!p->stat_warned[i])
			log_warn("cannot read rabbitmq queue stats",
			         LF_STR("queue", mq_stat_queues[i]), LF_STR("reason", reason));
		p->stat_warned[i] = 1;
	}
	amqp_maybe_release_buffers_on_channel(p->conn, MQ_SIDE_CHANNEL);
	return 0;
}

static int publisher_connect(struct mq_publisher *p)
{
	amqp_connection_state_t conn;
	void *tls;
	int rc;

	rc = conn_open(&p->url, &conn, &tls, p->reason, sizeof(p->reason));
	if (rc)
		return rc;
	amqp_channel_open(conn, MQ_MAIN_CHANNEL);
	rc = rpc_failed(conn, MQ_MAIN_CHANNEL, p->reason, sizeof(p->reason));
	if (rc)
		goto fail;
	amqp_confirm_select(conn, MQ_MAIN_CHANNEL);
	rc = rpc_failed(conn, MQ_MAIN_CHANNEL, p->reason, sizeof(p->reason));
	if (rc)
		goto fail;
	if (p->declare_topology) {
		rc = mq_declare_topology(conn, MQ_SIDE_CHANNEL);
		if (rc) {
			snprintf(p->reason, sizeof(p->reason), "cannot declare the topology: %s",
			         err_str(rc));
			goto fail;
		}
	}
	p->conn = conn;
	p->fd = amqp_get_sockfd(conn);
	p->tls = tls;
	p->next_tag = 0;
	p->stats_open = 0;
	p->ret_pending = 0;
	pthread_mutex_lock(&p->mu);
	atomic_store(&p->connected, 1);
	pthread_mutex_unlock(&p->mu);
	return ERR_OK;
fail:
	conn_close(conn, rc == ERR_MQ);
	return rc;
}

/*
 * publisher_disconnect - mark the publisher down first (under the lock, so
 * no message can slip into the submit queue afterwards), then fail every
 * message not confirmed and drop the connection.
 */
static void publisher_disconnect(struct mq_publisher *p, int result, int graceful)
{
	struct mq_fifo left;

	pthread_mutex_lock(&p->mu);
	atomic_store(&p->connected, 0);
	left = p->submit;
	p->submit.head = NULL;
	p->submit.tail = NULL;
	pthread_mutex_unlock(&p->mu);
	fail_inflight(p, result);
	fail_fifo(p, &p->staged, result);
	fail_fifo(p, &p->outbox, result);
	fail_fifo(p, &left, result);
	/* A frame half sent leaves nothing to say goodbye on. */
	conn_close(p->conn, graceful && !out_pending(p));
	buf_release(&p->out);
	p->out_sent = 0;
	p->out_tried = 0;
	p->out_batch++;
	p->conn = NULL;
	p->fd = -1;
	p->tls = NULL;
	for (size_t i = 0; i < MQ_STAT_QUEUES; i++)
		atomic_store(&p->stat_valid[i], 0);
}

/*
 * Whether input waits, without waiting for it: on the socket, or already
 * decrypted in OpenSSL's buffer, which poll() cannot see.
 */
static int readable(const struct mq_publisher *p)
{
	struct pollfd pfd = {.fd = p->fd, .events = POLLIN};

	if (p->tls && mq__tls_pending(p->tls))
		return 1;
	return poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
}

/*
 * publisher_run - the connected loop. Returns 0 on a stop request, -1 when
 * the connection is lost.
 */
static int publisher_run(struct mq_publisher *p)
{
	int heartbeat_ms = amqp_get_heartbeat(p->conn) * 1000;
	int64_t last_rx = now_ms();
	int64_t next_stats = p->poll_stats_ms > 0 ? now_ms() : INT64_MAX;

	for (;;) {
		struct pollfd pfd[2];
		int64_t now, wait;

		if (stopping(p))
			return 0;
		take_submitted(p);
		p->got_frames = 0;
		if (send_outbox(p) || (!out_pending(p) && read_frames(p)))
			return -1;
		now = now_ms();
		if (p->got_frames)
			last_rx = now;
		expire(p, now);
		if (now >= next_stats && !out_pending(p)) {
			if (poll_stats(p))
				return -1;
			next_stats = now + p->poll_stats_ms;
		}
		amqp_maybe_release_buffers(p->conn);
		/* Bytes already in rabbitmq-c's (or OpenSSL's) buffers never wake poll(). */
		if (!out_pending(p) &&
		    (amqp_frames_enqueued(p->conn) || amqp_data_in_buffer(p->conn) ||
		     (p->tls && mq__tls_pending(p->tls))))
			continue;
		/*
		 * Heartbeat frames are eaten inside rabbitmq-c, but they do make
		 * the socket readable: no byte for three intervals is a dead peer.
		 */
		if (heartbeat_ms > 0 && now - last_rx > 3 * (int64_t)heartbeat_ms) {
			snprintf(p->reason, sizeof(p->reason), "missed heartbeats");
			return -1;
		}
		wait = MQ_TICK_MS;
		if (p->outbox.head && p->outbox.head->deadline_ms - now < wait)
			wait = p->outbox.head->deadline_ms - now;
		if (p->staged.head && p->staged.head->deadline_ms - now < wait)
			wait = p->staged.head->deadline_ms - now;
		if (p->fl_head && p->fl_head->doubt_ms - now < wait)
			wait = p->fl_head->doubt_ms - now;
		if (next_stats - now < wait)
			wait = next_stats - now;
		if (wait < 0)
			wait = 0;
		/*
		 * While a batch is half sent no frame may be read, so waiting
		 * for input would only spin: an unread ack or heartbeat keeps
		 * the socket readable. Wait to write then; input still counts
		 * as a live peer, looked at once per wait below.
		 */
		pfd[0].fd = p->fd;
		pfd[0].events = out_pending(p) ? POLLOUT : POLLIN | (p->outbox.head ? POLLOUT : 0);
		pfd[0].revents = 0;
		pfd[1].fd = p->efd;
		pfd[1].events = POLLIN;
		pfd[1].revents = 0;
		if (poll(pfd, 2, (int)wait) < 0 && errno != EINTR) {
			char ebuf[128];

			snprintf(p->reason, sizeof(p->reason), "poll: %s",
			         strerror_r(errno, ebuf, sizeof(ebuf)));
			return -1;
		}
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
			last_rx = now_ms();
		else if (out_pending(p) && !(pfd[0].revents & POLLOUT) && readable(p))
			last_rx = now_ms();
		if (pfd[1].revents & POLLIN)
			drain_eventfd(p);
	}
}

static void *publisher_main(void *arg)
{
	struct mq_publisher *p = arg;
	int backoff_ms = MQ_BACKOFF_MIN_MS;
	int failures = 0;

	while (!stopping(p)) {
		int64_t up_since;

		if (publisher_connect(p) != ERR_OK) {
			/* The first failure in a row is a warning, the rest are noise. */
			if (failures++ == 0)
				log_warn(
				    "cannot connect to rabbitmq", LF_STR("host", p->url.info.host),
				    LF_INT("port", p->url.info.port), LF_STR("reason", p->reason),
				    LF_INT("retry_ms", backoff_ms));
			else
				log_debug(
				    "cannot connect to rabbitmq", LF_STR("host", p->url.info.host),
				    LF_INT("port", p->url.info.port), LF_STR("reason", p->reason),
				    LF_INT("retry_ms", backoff_ms));
			wait_wakeup(p, backoff_ms);
			backoff_ms =
			    backoff_ms * 2 > MQ_BACKOFF_MAX_MS ? MQ_BACKOFF_MAX_MS : backoff_ms * 2;
			continue;
		}
		log_info("connected to rabbitmq", LF_STR("host", p->url.info.host),
		         LF_INT("port", p->url.info.port), LF_STR("role", "publisher"),
		         LF_STR("tls", mq__tls_version(p->tls)),
		         LF_INT("failed_attempts", failures));
		failures = 0;
		up_since = now_ms();
		if (publisher_run(p) == 0) {
			publisher_disconnect(p, ERR_CLOSED, 1);
			break;
		}
		log_warn("lost the connection to rabbitmq", LF_STR("host", p->url.info.host),
		         LF_INT("port", p->url.info.port), LF_STR("reason", p->reason),
		         LF_INT("in_flight", atomic_load(&p->pending)));
		publisher_disconnect(p, ERR_UNAVAILABLE, 0);
		if (now_ms() - up_since >= MQ_STABLE_MS)
			backoff_ms = MQ_BACKOFF_MIN_MS;
		wait_wakeup(p, backoff_ms);
		backoff_ms =
		    backoff_ms * 2 > MQ_BACKOFF_MAX_MS ? MQ_BACKOFF_MAX_MS : backoff_ms * 2;
	}
	/* Stopped while disconnected: nothing can be in the lists but be sure. */
	publisher_disconnect(p, ERR_CLOSED, 0);
	return NULL;
}

struct mq_publisher *mq_publisher_new(const struct mq_publisher_options *opt)
{
	struct mq_publisher *p;
	int rc;

	if (!opt)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->efd = -1;
	p->fd = -1;
	buf_init(&p->out, MQ_OUT_MAX);
	rc = url_parse(&p->url, opt->url);
	if (rc) {
		log_error("cannot parse the rabbitmq url", LF_STR("reason", err_str(rc)));
		free(p);
		return NULL;
	}
	p->confirm_timeout_ms =
	    opt->confirm_timeout_ms > 0 ? opt->confirm_timeout_ms : MQ_DEFAULT_CONFIRM_TIMEOUT_MS;
	p->written_timeout_ms = opt->written_timeout_ms > p->confirm_timeout_ms
	                            ? opt->written_timeout_ms
	                            : p->confirm_timeout_ms;
	p->max_in_flight =
	    opt->max_in_flight > 0 ? (size_t)opt->max_in_flight : MQ_DEFAULT_IN_FLIGHT;
	p->declare_topology = opt->declare_topology;
	p->poll_stats_ms = opt->poll_queue_stats_ms;
	atomic_init(&p->stop, 0);
	atomic_init(&p->connected, 0);
	atomic_init(&p->pending, 0);
	atomic_init(&p->fault_armed, 0);
	for (size_t i = 0; i < MQ_STAT_QUEUES; i++) {
		atomic_init(&p->stat_messages[i], 0);
		atomic_init(&p->stat_consumers[i], 0);
		atomic_init(&p->stat_valid[i], 0);
	}
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->efd < 0)
		goto fail_url;
	if (pthread_mutex_init(&p->mu, NULL))
		goto fail_efd;
	if (pthread_create(&p->thread, NULL, publisher_main, p))
		goto fail_mu;
	return p;
fail_mu:
	pthread_mutex_destroy(&p->mu);
fail_efd:
	close(p->efd);
fail_url:
	url_release(&p->url);
	free(p);
	return NULL;
}

static void wake(struct mq_publisher *p)
{
	uint64_t one = 1;
	ssize_t n = write(p->efd, &one, sizeof(one));

	/* EAGAIN means the counter is full: the thread is being woken anyway. */
	(void)n;
}

void mq_publisher_stop(struct mq_publisher *p)
{
	if (!p || p->joined)
		return;
	pthread_mutex_lock(&p->mu);
	atomic_store(&p->stop, 1);
	pthread_mutex_unlock(&p->mu);
	wake(p);
	pthread_join(p->thread, NULL);
	p->joined = 1;
}

void mq_publisher_free(struct mq_publisher *p)
{
	if (!p)
		return;
	mq_publisher_stop(p);
	pthread_mutex_destroy(&p->mu);
	close(p->efd);
	url_release(&p->url);
	free(p);
}

int mq_publisher_publish(struct mq_publisher *p, const char *exchange, const char *routing_key,
                         const char *message_id, const void *body, size_t len, unsigned flags,
                         mq_confirm_cb cb, void *arg)
{
	size_t el, kl, il;
	struct mq_msg *m;
	char *s;
	int was_empty;

	if (!p || !exchange || !routing_key || (!body && len) || !cb ||
	    (flags & ~(unsigned)MQ_PUBLISH_MANDATORY))
		return ERR_INVALID;
	if (!message_id)
		message_id = "";
	/* A returned message is found again by its id only. */
	if ((flags & MQ_PUBLISH_MANDATORY) && !message_id[0])
		return ERR_INVALID;
	el = strlen(exchange);
	kl = strlen(routing_key);
	il = strlen(message_id);
	if (el >= MQ_KEY_MAX || kl >= MQ_KEY_MAX || il >= MQ_ID_MAX)
		return ERR_INVALID;
	if (len > MQ_BODY_MAX)
		return ERR_TOO_BIG;
	/* Refuse cheaply before copying; checked again under the lock. */
	if (atomic_load(&p->stop))
		return ERR_CLOSED;
	if (!atomic_load(&p->connected))
		return ERR_UNAVAILABLE;

	m = malloc(sizeof(*m) + el + kl + il + 3 + len);
	if (!m)
		return ERR_NOMEM;
	s = m->data;
	memcpy(s, exchange, el + 1);
	m->exchange = s;
	m->exchange_len = el;
	s += el + 1;
	memcpy(s, routing_key, kl + 1);
	m->routing_key = s;
	m->routing_key_len = kl;
	s += kl + 1;
	memcpy(s, message_id, il + 1);
	m->message_id = s;
	m->message_id_len = il;
	s += il + 1;
	if (len)
		memcpy(s, body, len);
	m->body = (const uint8_t *)s;
	m->len = len;
	m->cb = cb;
	m->arg = arg;
	m->flags = flags;
	m->returned = 0;
	m->tag = 0;
	m->prev = NULL;
	m->next = NULL;
	m->deadline_ms = now_ms() + p->confirm_timeout_ms;
	m->doubt_ms = m->deadline_ms - p->confirm_timeout_ms + p->written_timeout_ms;
	m->out_start = 0;
	m->out_end = 0;
	m->batch = 0;

	pthread_mutex_lock(&p->mu);
	if (atomic_load(&p->stop)) {
		pthread_mutex_unlock(&p->mu);
		free(m);
		return ERR_CLOSED;
	}
	if (!atomic_load(&p->connected)) {
		pthread_mutex_unlock(&p->mu);
		free(m);
		return ERR_UNAVAILABLE;
	}
	if (atomic_load(&p->pending) >= p->max_in_flight) {
		pthread_mutex_unlock(&p->mu);
		free(m);
		return ERR_TOO_BIG;
	}
	atomic_fetch_add(&p->pending, 1);
	was_empty = p->submit.head == NULL;
	fifo_push(&p->submit, m);
	pthread_mutex_unlock(&p->mu);
	/* Only the first message of a batch needs to wake the thread. */
	if (was_empty)
		wake(p);
	return ERR_OK;
}

int mq_publisher_connected(const struct mq_publisher *p)
{
	return p ? atomic_load(&p->connected) : 0;
}

int mq_publisher_queue_stats(const struct mq_publisher *p, size_t i, long *messages,
                             long *consumers)
{
	long m, c;

	if (!p || i >= MQ_STAT_QUEUES)
		return ERR_INVALID;
	if (!atomic_load(&p->stat_valid[i]))
		return ERR_NOT_FOUND;
	m = atomic_load(&p->stat_messages[i]);
	c = atomic_load(&p->stat_consumers[i]);
	if (messages)
		*messages = m;
	if (consumers)
		*consumers = c;
	return ERR_OK;
}

/* A stack-allocated rendezvous between mq_publish_sync() and the callback. */
struct sync_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	int result;
};

static void sync_cb(void *arg, int result)
{
	struct sync_wait *w = arg;

	pthread_mutex_lock(&w->mu);
	w->result = result;
	w->done = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

int mq_publish_sync(struct mq_publisher *p, const char *exchange, const char *routing_key,
                    const char *message_id, const void *body, size_t len, unsigned flags)
{
	struct sync_wait w;
	int rc;

	w.done = 0;
	w.result = ERR_OK;
	if (pthread_mutex_init(&w.mu, NULL))
		return ERR_NOMEM;
	if (pthread_cond_init(&w.cv, NULL)) {
		pthread_mutex_destroy(&w.mu);
		return ERR_NOMEM;
	}
	rc = mq_publisher_publish(p, exchange, routing_key, message_id, body, len, flags, sync_cb,
	                          &w);
	if (rc == ERR_OK) {
		/* The callback always comes: the confirm timeout bounds the wait. */
		pthread_mutex_lock(&w.mu);
		while (!w.done)
			pthread_cond_wait(&w.cv, &w.mu);
		rc = w.result;
		pthread_mutex_unlock(&w.mu);
	}
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.mu);
	return rc;
}

/* ---- consumer ------------------------------------------------------------ */

/* Our consumer tag on MQ_MAIN_CHANNEL (one consumer per connection). */
#define CONSUMER_TAG "orders"
/*
 * A quorum queue may still hand the channel a delivery it sent before it
 * saw the cancel, after the channel's cancel-ok (seen with 3.10): a
 * cancelled consumer is done once nothing has come for this long after the
 * cancel-ok or the last delivery.
 */
#define MQ_CANCEL_QUIET_MS 300

struct mq_consumer {
	amqp_connection_state_t conn;
	int dead;
	int cancelling;         /* basic.cancel sent */
	int cancelled;          /* cancel-ok read */
	int64_t quiet_until_ms; /* then done, unless a delivery comes first */
};

void mq_delivery_release(struct mq_delivery *d)
{
	if (!d)
		return;
	free(d->body);
	d->body = NULL;
	d->len = 0;
}

struct mq_consumer *mq_consumer_new(const char *url, const char *queue, int prefetch)
{
	struct mq_consumer *c = NULL;
	struct mq_url u = {0};
	amqp_connection_state_t conn = NULL;
	char reason[MQ_REASON_MAX] = "";
	void *tls = NULL;
	int rc;

	if (!queue || prefetch < 0 || prefetch > UINT16_MAX) {
		log_error("cannot start a rabbitmq consumer", LF_STR("reason", "bad arguments"));
		return NULL;
	}
	rc = url_parse(&u, url);
	if (rc) {
		snprintf(reason, sizeof(reason), "cannot parse the url");
		goto out;
	}
	rc = conn_open(&u, &conn, &tls, reason, sizeof(reason));
	if (rc)
		goto out;
	amqp_channel_open(conn, MQ_MAIN_CHANNEL);
	rc = rpc_failed(conn, MQ_MAIN_CHANNEL, reason, sizeof(reason));
	if (rc)
		goto out;
	amqp_basic_qos(conn, MQ_MAIN_CHANNEL, 0, (uint16_t)prefetch, 0);
	rc = rpc_failed(conn, MQ_MAIN_CHANNEL, reason, sizeof(reason));
	if (rc)
		goto out;
	rc = mq_declare_topology(conn, MQ_SIDE_CHANNEL);
	if (rc) {
		snprintf(reason, sizeof(reason), "cannot declare the topology: %s", err_str(rc));
		goto out;
	}
	amqp_basic_consume(conn, MQ_MAIN_CHANNEL, amqp_cstring_bytes(queue),
	                   amqp_cstring_bytes(CONSUMER_TAG), 0, 0, 0, amqp_empty_table);
	rc = rpc_failed(conn, MQ_MAIN_CHANNEL, reason, sizeof(reason));
	if (rc)
		goto out;
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(reason, sizeof(reason), "out of memory");
		rc = ERR_NOMEM;
		goto out;
	}
	c->conn = conn;
	conn = NULL;
	log_info("connected to rabbitmq", LF_STR("host", u.info.host), LF_INT("port", u.info.port),
	         LF_STR("role", "consumer"), LF_STR("queue", queue),
	         LF_STR("tls", mq__tls_version(tls)));
out:
	if (rc)
		log_error("cannot start a rabbitmq consumer", LF_STR("queue", queue),
		          LF_STR("host", u.buf ? u.info.host : ""),
		          LF_INT("port", u.buf ? u.info.port : 0), LF_STR("reason", reason));
	conn_close(conn, rc == ERR_MQ);
	url_release(&u);
	return c;
}

int mq_consumer_cancel(struct mq_consumer *c)
{
	amqp_basic_cancel_t m = {.consumer_tag = amqp_cstring_bytes(CONSUMER_TAG)};

	if (!c)
		return ERR_INVALID;
	if (c->dead)
		return ERR_UNAVAILABLE;
	if (c->cancelling)
		return ERR_OK;
	/* Sent, not waited for: the cancel-ok comes behind the deliveries
	 * already on their way, which mq_consumer_next goes on returning. */
	if (amqp_send_method(c->conn, MQ_MAIN_CHANNEL, AMQP_BASIC_CANCEL_METHOD, &m) !=
	    AMQP_STATUS_OK) {
		c->dead = 1;
		return ERR_UNAVAILABLE;
	}
	c->cancelling = 1;
	return ERR_OK;
}

void mq_consumer_free(struct mq_consumer *c)
{
	if (!c)
		return;
	/* Unacked deliveries go back to the queue when the connection closes. */
	conn_close(c->conn, !c->dead);
	free(c);
}

static long header_int(const amqp_field_value_t *v, int *ok)
{
	*ok = 1;
	switch (v->kind) {
	case AMQP_FIELD_KIND_I8:
		return v->value.i8;
	case AMQP_FIELD_KIND_U8:
		return v->value.u8;
	case AMQP_FIELD_KIND_I16:
		return v->value.i16;
	case AMQP_FIELD_KIND_U16:
		return v->value.u16;
	case AMQP_FIELD_KIND_I32:
		return v->value.i32;
	case AMQP_FIELD_KIND_U32:
		return (long)v->value.u32;
	case AMQP_FIELD_KIND_I64:
		return (long)v->value.i64;
	case AMQP_FIELD_KIND_U64:
	case AMQP_FIELD_KIND_TIMESTAMP:
		return v->value.u64 > (uint64_t)LONG_MAX ? LONG_MAX : (long)v->value.u64;
	default:
		*ok = 0;
		return 0;
	}
}

static long delivery_count(const amqp_basic_properties_t *props)
{
	static const char key[] = "x-delivery-count";

	if (!(props->_flags & AMQP_BASIC_HEADERS_FLAG))
		return 0;
	for (int i = 0; i < props->headers.num_entries; i++) {
		const amqp_table_entry_t *e = &props->headers.entries[i];
		int ok;
		long n;

		if (e->key.len != sizeof(key) - 1 || memcmp(e->key.bytes, key, sizeof(key) - 1))
			continue;
		n = header_int(&e->value, &ok);
		return ok && n > 0 ? n : 0;
	}
	return 0;
}

/*
 * other_frame - amqp_consume_message() found a frame that is not a delivery
 * and put it back. A close means the consumer is done for; anything else
 * (a stray ack, a heartbeat-era leftover) is dropped.
 */
static int other_frame(struct mq_consumer *c)
{
	amqp_frame_t f;
	int st = amqp_simple_wait_frame(c->conn, &f);

	if (st != AMQP_STATUS_OK) {
		log_error("lost the connection to rabbitmq", LF_STR("role", "consumer"),
		          LF_STR("reason", amqp_error_string2(st)));
		return ERR_UNAVAILABLE;
	}
	if (f.frame_type != AMQP_FRAME_METHOD)
		return ERR_OK;
	if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
		amqp_channel_close_t *cl = f.payload.method.decoded;
		amqp_channel_close_ok_t ok = {0};
		char text[MQ_REASON_MAX];

		copy_bytes(text, sizeof(text), cl->reply_text);
		log_error("lost the rabbitmq channel", LF_STR("role", "consumer"),
		          LF_INT("code", cl->reply_code), LF_STR("reason", text));
		amqp_send_method(c->conn, f.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
		return ERR_UNAVAILABLE;
	}
	if (f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
		amqp_connection_close_t *cl = f.payload.method.decoded;
		amqp_connection_close_ok_t ok = {0};
		char text[MQ_REASON_MAX];

		/*
		 * The broker closing the connection in order (320
		 * CONNECTION_FORCED when a node stops or an operator closes it)
		 * is an event to note, not a failure: the consumer reconnects,
		 * to another node when there is one.
		 */
		copy_bytes(text, sizeof(text), cl->reply_text);
		log_warn("rabbitmq closed the connection", LF_STR("role", "consumer"),
		         LF_INT("code", cl->reply_code), LF_STR("reason", text));
		amqp_send_method(c->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
		return ERR_UNAVAILABLE;
	}
	if (f.payload.method.id == AMQP_BASIC_CANCEL_OK_METHOD && c->cancelling) {
		/* The broker sends it after the last delivery to this consumer. */
		c->cancelled = 1;
		return ERR_OK;
	}
	if (f.payload.method.id == AMQP_BASIC_CANCEL_METHOD) {
		/* The queue was deleted under us: nothing more will come. */
		log_error("rabbitmq cancelled the consumer", LF_STR("role", "consumer"));
		return ERR_UNAVAILABLE;
	}
	return ERR_OK;
}

int mq_consumer_next(struct mq_consumer *c, struct mq_delivery *out, int timeout_ms)
{
	int64_t deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : INT64_MAX;
	amqp_envelope_t env;
	struct mq_delivery d;
	const amqp_basic_properties_t *props;

	if (!c || !out)
		return ERR_INVALID;
	if (c->dead)
		return ERR_UNAVAILABLE;
	if (c->cancelled && c->quiet_until_ms < deadline)
		deadline = c->quiet_until_ms;
	for (;;) {
		struct timeval tv, *tvp = NULL;
		amqp_rpc_reply_t r;
		char reason[MQ_REASON_MAX];

		if (deadline != INT64_MAX) {
			int64_t left = deadline - now_ms();

			if (left < 0)
				left = 0;
			tv.tv_sec = (time_t)(left / 1000);
			tv.tv_usec = (suseconds_t)(left % 1000) * 1000;
			tvp = &tv;
		}
		amqp_maybe_release_buffers(c->conn);
		r = amqp_consume_message(c->conn, &env, tvp, 0);
		if (r.reply_type == AMQP_RESPONSE_NORMAL)
			break;
		if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
		    r.library_error == AMQP_STATUS_TIMEOUT)
			return c->cancelled && now_ms() >= c->quiet_until_ms ? ERR_CLOSED
			                                                     : ERR_TIMEOUT;
		if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
		    r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
			int was_cancelled = c->cancelled;
			int rc = other_frame(c);

			if (rc) {
				c->dead = 1;
				return rc;
			}
			if (c->cancelled && !was_cancelled) {
				c->quiet_until_ms = now_ms() + MQ_CANCEL_QUIET_MS;
				if (c->quiet_until_ms < deadline)
					deadline = c->quiet_until_ms;
			}
			continue; /* not a delivery: wait on for one */
		}
		reply_reason(r, reason, sizeof(reason));
		log_error("lost the connection to rabbitmq", LF_STR("role", "consumer"),
		          LF_STR("reason", reason));
		c->dead = 1;
		return ERR_UNAVAILABLE;
	}

	if (c->cancelled)
		c->quiet_until_ms = now_ms() + MQ_CANCEL_QUIET_MS;
	memset(&d, 0, sizeof(d));
	props = &env.message.properties;
	d.tag = env.delivery_tag;
	d.redelivered = env.redelivered ? 1 : 0;
	d.delivery_count = delivery_count(props);
	copy_bytes(d.routing_key, sizeof(d.routing_key), env.routing_key);
	/* Cut short, two long ids could become one inbox entry: a message_id
	 * that does not fit is left out, so the message counts as having none. */
	if ((props->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) &&
	    props->message_id.len < sizeof(d.message_id))
		copy_bytes(d.message_id, sizeof(d.message_id), props->message_id);
	d.len = env.message.body.len;
	/* malloc(0) may return NULL; an empty body still gets a byte of room. */
	d.body = malloc(d.len ? d.len : 1);
	if (!d.body) {
		/* Hand it back so that another attempt (or consumer) gets it. */
		amqp_basic_reject(c->conn, MQ_MAIN_CHANNEL, d.tag, 1);
		amqp_destroy_envelope(&env);
		return ERR_NOMEM;
	}
	if (d.len)
		memcpy(d.body, env.message.body.bytes, d.len);
	amqp_destroy_envelope(&env);
	amqp_maybe_release_buffers(c->conn);
	*out = d;
	return ERR_OK;
}

static int consumer_ack(struct mq_consumer *c, uint64_t tag, int multiple)
{
	if (!c)
		return ERR_INVALID;
	if (c->dead || amqp_basic_ack(c->conn, MQ_MAIN_CHANNEL, tag, multiple) != AMQP_STATUS_OK) {
		c->dead = 1;
		return ERR_UNAVAILABLE;
	}
	return ERR_OK;
}

int mq_consumer_ack(struct mq_consumer *c, uint64_t tag)
{
	return consumer_ack(c, tag, 0);
}

int mq_consumer_ack_upto(struct mq_consumer *c, uint64_t tag)
{
	return consumer_ack(c, tag, 1);
}

int mq_consumer_reject(struct mq_consumer *c, uint64_t tag, int requeue)
{
	if (!c)
		return ERR_INVALID;
	if (c->dead ||
	    amqp_basic_reject(c->conn, MQ_MAIN_CHANNEL, tag, requeue ? 1 : 0) != AMQP_STATUS_OK) {
		c->dead = 1;
		return ERR_UNAVAILABLE;
	}
	return ERR_OK;
}

/* ---- internals shared with mq_admin.c (mq_internal.h) -------------------- */

int mq__publisher_fail_encode(struct mq_publisher *p, const char *message_id, int err)
{
	if (!p || !message_id || !message_id[0] || strlen(message_id) >= MQ_ID_MAX ||
	    (err != ERR_INVALID && err != ERR_NOMEM))
		return ERR_INVALID;
	pthread_mutex_lock(&p->mu);
	snprintf(p->fault_id, sizeof(p->fault_id), "%s", message_id);
	p->fault_err = err;
	atomic_store(&p->fault_armed, 1);
	pthread_mutex_unlock(&p->mu);
	return ERR_OK;
}

int mq__connect(const char *url, amqp_connection_state_t *out, char *reason, size_t size)
{
	struct mq_url u = {0};
	int rc = url_parse(&u, url);

	if (rc) {
		snprintf(reason, size, "cannot parse the url");
		return rc;
	}
	rc = conn_open(&u, out, NULL, reason, size);
	url_release(&u);
	return rc;
}

void mq__close(amqp_connection_state_t conn, int graceful)
{
	conn_close(conn, graceful);
}

int mq__rpc_failed(amqp_connection_state_t conn, uint16_t channel, char *reason, size_t size)
{
	return rpc_failed(conn, channel, reason, size);
}

long mq__header_int(const amqp_field_value_t *v, int *ok)
{
	return header_int(v, ok);
}

void mq__copy_bytes(char *dst, size_t size, amqp_bytes_t b)
{
	copy_bytes(dst, size, b);
}
