/* consume.c: the consume -> process in one transaction -> publish -> confirm -> ack loop. */
#include "consume.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"
#include "metrics.h"
#include "ops.h"
#include "proto.h"
#include "seal.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* A message that failed is requeued behind the others; waiting long before
 * the next delivery would only delay messages that may well succeed. */
#define RETRY_BACKOFF_MAX_MS 1000
/* How long one wait for a delivery lasts: the stop flag is checked between. */
#define NEXT_TIMEOUT_MS 500
/* While idle, PostgreSQL is pinged this often so that /readyz stays true. */
#define IDLE_PING_MS 5000
/* How often the publisher reads the queues' depths for /metrics: eight
 * passive declares, cheap. */
#define CONSUME_QUEUE_STATS_MS 5000

/*
 * The key for outgoing message ids. It is not a secret: the ids only need to
 * be deterministic (the same input message always gives the same outgoing
 * id, so the next stage's inbox recognises a re-publication) and distinct
 * between consumers. Changing it would break deduplication across a deploy.
 */
static const uint8_t consume_id_key[32] = {
    'o', 'r', 'd', 'e', 'r', 's', '.', 'c', 'o', 'n', 's', 'u', 'm', 'e', 'r', '.',
    'o', 'u', 't', 'c', 'o', 'm', 'e', '-', 'i', 'd', '.', 'v', '1', '.', '.', '.',
};

static volatile sig_atomic_t consume_stop;

enum settle {
	SETTLE_ACK,    /* done (processed or replayed) and published */
	SETTLE_POISON, /* can never succeed: dead-letter it */
	SETTLE_RETRY,  /* transient: requeue and back off */
};

struct consume {
	const struct consume_handler *h;
	const struct config *cfg;
	void *state;
	struct db *db;
	struct mq_publisher *pub;
	struct mq_consumer *mc;
	struct metrics *m;
	struct metric_family *messages;
	struct metric_family *latency;
	struct metric_family *redeliveries;
	struct metric_family *dead_lettered;
	struct ops_queue_gauges queues;
	struct ops *ops;
	/* Written by the loop thread, read by the ops thread for /readyz. */
	atomic_int db_ok;
	atomic_int consumer_ok;
	int backoff_ms;
	int64_t last_ping_ms;
	int64_t next_tick_ms; /* when handler->tick is due next */
};

/* ---- helpers ------------------------------------------------------------ */

int consume_stopping(void)
{
	return consume_stop != 0;
}

int consume_sleep_ms(int ms)
{
	struct timespec ts;

	while (ms > 0 && !consume_stop) {
		int step = ms < 50 ? ms : 50;

		ts.tv_sec = 0;
		ts.tv_nsec = (long)step * 1000000L;
		nanosleep(&ts, NULL);
		ms -= step;
	}
	return consume_stop != 0;
}

int consume_db_rc(int rc)
{
	if (rc == ERR_INVALID || rc == ERR_CONFLICT)
		return ERR_DB;
	return rc;
}

int consume_utf8_ok(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	if (!s)
		return 0;
	while (*p) {
		unsigned c = *p;
		size_t n, i;
		unsigned long cp;

		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		for (i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0; /* also stops at the NUL */
			cp = cp << 6 | (p[i] & 0x3f);
		}
		/* Overlong forms, surrogates and values past U+10FFFF. */
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		p += n + 1;
	}
	return 1;
}

int consume_sku_ok(const char *s)
{
	size_t i;

	if (!s)
		return 0;
	for (i = 0; s[i]; i++) {
		char c = s[i];

		if (i >= 64)
			return 0;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return i > 0;
}

int consume_currency_ok(const char *s)
{
	return s && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' && s[2] >= 'A' &&
	       s[2] <= 'Z' && s[3] == '\0';
}

int consume_field(const char *outcome, int n, char *out, size_t outlen)
{
	const char *p = outcome, *end;
	size_t len;

	if (!outcome || n < 0 || outlen == 0)
		return ERR_INVALID;
	while (n > 0) {
		p = strchr(p, ':');
		if (!p)
			return ERR_NOT_FOUND;
		p++;
		n--;
	}
	end = strchr(p, ':');
	len = end ? (size_t)(end - p) : strlen(p);
	if (len >= outlen)
		return ERR_TOO_BIG;
	memcpy(out, p, len);
	out[len] = '\0';
	return ERR_OK;
}

int consume_field_count(const char *outcome)
{
	int n = 1;

	if (!outcome)
		return 0;
	for (; *outcome; outcome++) {
		if (*outcome == ':')
			n++;
	}
	return n;
}

const char *consume_envelope_problem(const Orders__Envelope *env)
{
	if (!proto_envelope_ok(env))
		return "envelope missing, or without message_id or order_id";
	if (!ids_uuid_valid(env->order_id))
		return "order_id is not a lowercase uuid";
	if (!consume_utf8_ok(env->message_id) ||
	    (env->correlation_id && !consume_utf8_ok(env->correlation_id)))
		return "envelope text is not utf-8";
	return NULL;
}

/* Optional proto3 strings come as "" from protobuf-c, but be safe with NULL. */
static int text_ok(const char *s)
{
	return !s || consume_utf8_ok(s);
}

const char *consume_order_problem(const Orders__Order *o)
{
	size_t i;

	if (!o)
		return "order missing";
	if (o->n_lines < 1 || o->n_lines > 100)
		return "order must have 1 to 100 lines";
	for (i = 0; i < o->n_lines; i++) {
		const Orders__Line *l = o->lines[i];

		if (!l || !consume_sku_ok(l->sku))
			return "line sku does not match ^[A-Za-z0-9._-]{1,64}$";
		if (l->quantity < 1 || l->quantity > 999)
			return "line quantity must be 1 to 999";
		if (l->unit_price_cents < 0)
			return "line unit_price_cents is negative";
	}
	if (!consume_currency_ok(o->currency))
		return "currency is not three upper-case letters";
	if (o->cart_id && o->cart_id[0] && !ids_uuid_valid(o->cart_id))
		return "cart_id is not a lowercase uuid";
	if (o->total_cents < 0)
		return "total_cents is negative";
	if (!text_ok(o->customer_id) || !text_ok(o->customer_email) || !text_ok(o->client_id) ||
	    !text_ok(o->idempotency_key))
		return "order text is not utf-8";
	if (o->shipping) {
		const Orders__Address *a = o->shipping;

		if (!text_ok(a->name) || !text_ok(a->line1) || !text_ok(a->line2) ||
		    !text_ok(a->city) || !text_ok(a->postal_code) || !text_ok(a->country))
			return "shipping address text is not utf-8";
	}
	return NULL;
}

void consume_derived_id(const char *what, const char *id, char out[IDS_UUID_LEN + 1])
{
	ids_uuid_derived(consume_id_key, what, id, out);
}

int consume_pg_array_add(struct buf *b, const char *s, int first)
{
	int rc = ERR_OK;

	if (!first)
		rc = buf_append(b, ",", 1);
	if (!rc)
		rc = buf_append(b, "\"", 1);
	for (; !rc && *s; s++) {
		if (*s == '"' || *s == '\\')
			rc = buf_append(b, "\\", 1);
		if (!rc)
			rc = buf_append(b, s, 1);
	}
	if (!rc)
		rc = buf_append(b, "\"", 1);
	return rc;
}

static int is_poison(int rc)
{
	return rc == ERR_PARSE || rc == ERR_INVALID;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_signal(int sig)
{
	(void)sig;
	consume_stop = 1;
}

/* Sleep the current back-off, then double it up to max_ms. */
static void backoff_upto(struct consume *c, int max_ms)
{
	if (c->backoff_ms > max_ms)
		c->backoff_ms = max_ms;
	consume_sleep_ms(c->backoff_ms);
	c->backoff_ms = c->backoff_ms * 2 > max_ms ? max_ms : c->backoff_ms * 2;
}

static void backoff(struct consume *c)
{
	backoff_upto(c, BACKOFF_MAX_MS);
}

static void count(struct consume *c, const char *outcome, double t0)
{
	const char *labels[2] = {c->h->name, outcome};
	const char *name[1] = {c->h->name};

	metric_add(c->messages, labels, 1);
	metric_observe(c->latency, name, mono_s() - t0);
}

/* reason: "rejected" or "delivery_limit", as RabbitMQ's x-death header says. */
static void count_dead_lettered(struct consume *c, const char *reason)
{
	const char *labels[2] = {c->h->name, reason};

	metric_add(c->dead_lettered, labels, 1);
}

/* ---- one delivery -------------------------------------------------------- */

static int64_t parse_i64(const char *s)
{
	return s ? strtoll(s, NULL, 10) : 0;
}

/*
 * The transaction of step 2-3: record the message in the inbox and process
 * it, or read the outcome recorded before.
 */
static int run_transaction(const struct consume_handler *h, void *state, struct db *db,
                           struct consume_input *in, struct consume_result *res)
{
	static const char insert_sql[] =
	    "INSERT INTO inbox (consumer, message_id, order_id, outcome) "
	    "VALUES ($1, $2, $3::uuid, '') ON CONFLICT DO NOTHING "
	    "RETURNING floor(extract(epoch FROM processed_at) * 1000)::bigint";
	static const char select_sql[] =
	    "SELECT outcome, floor(extract(epoch FROM processed_at) * 1000)::bigint, "
	    "coalesce(order_id::text, '') FROM inbox WHERE consumer = $1 AND message_id = $2";
	static const char update_sql[] =
	    "UPDATE inbox SET outcome = $3 WHERE consumer = $1 AND message_id = $2";
	const char *params[3] = {h->name, in->message_id, in->order_id};
	char outcome[CONSUME_OUTCOME_MAX];
	PGresult *r = NULL;
	int rc, in_tx = 0;

	rc = consume_db_rc(db_begin(db));
	if (rc)
		goto out;
	in_tx = 1;
	rc = consume_db_rc(db_exec(db, insert_sql, 3, params, &r));
	if (rc)
		goto out;
	if (PQntuples(r) == 1) {
		in->processed_ms = parse_i64(PQgetvalue(r, 0, 0));
		PQclear(r);
		r = NULL;
		rc = h->process(state, db, in, res);
		if (rc)
			goto out;
		if (!res->outcome[0]) {
			log_error("handler gave no outcome", LF_STR("message_id", in->message_id));
			rc = ERR_INVALID;
			goto out;
		}
		params[2] = res->outcome;
		rc = consume_db_rc(db_exec(db, update_sql, 3, params, NULL));
		if (rc)
			goto out;
		in_tx = 0;
		rc = consume_db_rc(db_commit(db));
		goto out;
	}
	PQclear(r);
	r = NULL;
	rc = consume_db_rc(db_exec(db, select_sql, 2, params, &r));
	if (rc)
		goto out;
	if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0) || !PQgetvalue(r, 0, 0)[0]) {
		/* The row commits together with its outcome; this cannot last. */
		log_warn("inbox row has no outcome yet", LF_STR("message_id", in->message_id));
		rc = ERR_DB;
		goto out;
	}
	if (strcmp(PQgetvalue(r, 0, 2), in->order_id) != 0) {
		/* Replaying another order's outcome for this one would be wrong. */
		log_error("cannot replay: message_id was recorded for another order",
		          LF_STR("message_id", in->message_id), LF_STR("order_id", in->order_id));
		rc = ERR_INVALID;
		goto out;
	}
	snprintf(outcome, sizeof(outcome), "%s", PQgetvalue(r, 0, 0));
	in->processed_ms = parse_i64(PQgetvalue(r, 0, 1));
	PQclear(r);
	r = NULL;
	in_tx = 0;
	rc = consume_db_rc(db_commit(db));
	if (rc)
		goto out;
	res->replayed = 1;
	snprintf(res->outcome, sizeof(res->outcome), "%s", outcome);
	rc = h->replay(state, in, outcome, res);
	if (rc && is_poison(rc))
		log_error("cannot replay recorded outcome", LF_STR("message_id", in->message_id),
		          LF_STR("order_id", in->order_id), LF_STR("outcome", outcome));
out:
	PQclear(r);
	if (in_tx)
		db_rollback(db);
	return rc;
}

void consume_result_release(struct consume_result *res)
{
	free(res->body);
	free(res->extra.body);
	memset(res, 0, sizeof(*res));
}

int consume__deliver(const struct consume_handler *h, void *state, struct db *db,
                     const struct mq_delivery *d, struct consume_result *res)
{
	struct consume_input in;
	int rc;

	memset(res, 0, sizeof(*res));
	memset(&in, 0, sizeof(in));
	if (!db)
		return ERR_UNAVAILABLE;
	in.message_id = d->message_id;
	in.routing_key = d->routing_key;
	in.body = d->body;
	in.len = d->len;
	log_context_set(NULL, consume_utf8_ok(d->message_id) ? d->message_id : NULL, NULL);
	if (!d->message_id[0] || !consume_utf8_ok(d->message_id)) {
		log_error("cannot process message without a usable message_id",
		          LF_STR("routing_key", d->routing_key), LF_STR("queue", h->queue));
		return ERR_INVALID;
	}
	if (d->len > PROTO_MAX_MESSAGE) {
		log_error("cannot process message over the size limit",
		          LF_STR("message_id", d->message_id), LF_INT("bytes", d->len));
		return ERR_INVALID;
	}
	rc = h->decode(state, &in);
	if (rc == ERR_OK && !ids_uuid_valid(in.order_id))
		rc = ERR_INVALID;
	if (rc) {
		/* Poison is logged by the hook with its reason and by the caller. */
		if (!is_poison(rc))
			log_warn("cannot decode message", LF_STR("message_id", d->message_id),
			         LF_STR("routing_key", d->routing_key),
			         LF_STR("error", err_str(rc)));
		goto out;
	}
	/* From here on every line about this delivery says whose it is. */
	log_context_set(in.correlation_id, d->message_id, in.order_id);
	snprintf(res->order_id, sizeof(res->order_id), "%s", in.order_id);
	ids_uuid_derived(consume_id_key, h->name, d->message_id, in.out_message_id);
	memcpy(res->message_id, in.out_message_id, sizeof(res->message_id));
	rc = run_transaction(h, state, db, &in, res);
	if (rc) {
		char order_id[IDS_UUID_LEN + 1];

		/* Keep the order id for the caller's log lines. */
		memcpy(order_id, res->order_id, sizeof(order_id));
		consume_result_release(res);
		memcpy(res->order_id, order_id, sizeof(order_id));
	}
out:
	if (h->msg_free)
		h->msg_free(in.msg);
	return rc;
}

/* Publish one outgoing message of res (none when exchange is NULL), logging a failure. */
static int publish_out(struct consume *c, const struct mq_delivery *d,
                       const struct consume_result *res, const char *exchange,
                       const char *routing_key, const char *message_id, const uint8_t *body,
                       size_t len)
{
	unsigned flags;
	int rc;

	if (!exchange)
		return ERR_OK;
	/*
	 * Work for the next stage must reach its queue before this delivery
	 * is acked; an event nobody listens to may go nowhere.
	 */
	flags = strcmp(exchange, MQ_EXCHANGE_ORDERS) == 0 ? MQ_PUBLISH_MANDATORY : 0;
	rc = mq_publish_sync(c->pub, exchange, routing_key, message_id, body, len, flags);
	if (rc)
		log_error("cannot publish outcome, will retry", LF_STR("message_id", d->message_id),
		          LF_STR("order_id", res->order_id), LF_STR("routing_key", routing_key),
		          LF_STR("error", err_str(rc)));
	return rc;
}

static enum settle handle(struct consume *c, const struct mq_delivery *d, const char **label)
{
	struct consume_result res;
	enum settle s;
	int rc;

	for (;;) {
		rc = consume__deliver(c->h, c->state, c->db, d, &res);
		if (rc == ERR_OK)
			break;
		if (is_poison(rc)) {
			log_error(
			    "cannot process message, dead-lettering it",
			    LF_STR("message_id", d->message_id), LF_STR("order_id", res.order_id),
			    LF_STR("routing_key", d->routing_key), LF_STR("error", err_str(rc)));
			s = SETTLE_POISON;
			goto out;
		}
		/*
		 * PostgreSQL itself gone: hold the delivery and wait for it
		 * rather than requeue, which would count against the
		 * delivery limit and dead-letter good messages in an outage.
		 */
		if (db_ping(c->db) != ERR_OK && !consume_stopping()) {
			atomic_store(&c->db_ok, 0);
			log_warn("cannot reach postgresql, holding the message",
			         LF_STR("message_id", d->message_id),
			         LF_STR("order_id", res.order_id), LF_STR("error", err_str(rc)),
			         LF_INT("retry_in_ms", c->backoff_ms));
			backoff(c);
			if (!consume_stopping())
				continue;
		}
		log_warn("cannot process message, will retry", LF_STR("message_id", d->message_id),
		         LF_STR("order_id", res.order_id), LF_STR("routing_key", d->routing_key),
		         LF_STR("error", err_str(rc)), LF_INT("delivery_count", d->delivery_count));
		s = SETTLE_RETRY;
		goto out;
	}
	atomic_store(&c->db_ok, 1);

	if (publish_out(c, d, &res, res.exchange, res.routing_key, res.message_id, res.body,
	                res.len) != ERR_OK ||
	    publish_out(c, d, &res, res.extra.exchange, res.extra.routing_key, res.extra.message_id,
	                res.extra.body, res.extra.len) != ERR_OK) {
		s = SETTLE_RETRY;
		goto out;
	}
	log_info(res.replayed ? "message replayed" : "message processed",
	         LF_STR("message_id", d->message_id), LF_STR("order_id", res.order_id),
	         LF_STR("outcome", res.outcome), LF_STR("routing_key", d->routing_key),
	         LF_STR("published_to", res.exchange ? res.routing_key : ""),
	         LF_STR("out_message_id", res.exchange ? res.message_id : ""),
	         LF_STR("also_published_to", res.extra.exchange ? res.extra.routing_key : ""),
	         LF_STR("also_out_message_id", res.extra.exchange ? res.extra.message_id : ""));
	*label = res.replayed ? "replayed" : "processed";
	s = SETTLE_ACK;
out:
	consume_result_release(&res);
	return s;
}

/*
 * Settle one delivery; a broken connection is dropped to be made again (the
 * broker returns the delivery then). ERR_OK when the broker was told.
 */
static int settle(struct consume *c, const struct mq_delivery *d, enum settle s)
{
	int rc;

	if (s == SETTLE_ACK)
		rc = mq_consumer_ack(c->mc, d->tag);
	else
		rc = mq_consumer_reject(c->mc, d->tag, s == SETTLE_RETRY);
	if (rc) {
		log_warn("cannot settle delivery, reconnecting",
		         LF_STR("message_id", d->message_id), LF_STR("error", err_str(rc)));
		mq_consumer_free(c->mc);
		c->mc = NULL;
		atomic_store(&c->consumer_ok, 0);
	}
	return rc;
}

/* ---- the loop ------------------------------------------------------------ */

/* Make sure PostgreSQL answers before taking a delivery; 0 when it does. */
static int ensure_db(struct consume *c)
{
	if (!c->db) {
		c->db = db_new(c->cfg->pg_dsn);
		if (!c->db)
			return -1;
		atomic_store(&c->db_ok, 1);
		c->last_ping_ms = ids_now_ms();
	}
	if (!atomic_load(&c->db_ok) || ids_now_ms() - c->last_ping_ms >= IDLE_PING_MS) {
		int ok = db_ping(c->db) == ERR_OK;

		c->last_ping_ms = ids_now_ms();
		if (ok && !atomic_load(&c->db_ok))
			log_info("postgresql reachable again");
		atomic_store(&c->db_ok, ok);
		if (!ok)
			return -1;
	}
	return 0;
}

/*
 * Run the handler's periodic work when it is due. Called between deliveries
 * only, so the connection is never inside another message's transaction.
 */
static void tick(struct consume *c)
{
	int64_t now = ids_now_ms();

	if (!c->h->tick || now < c->next_tick_ms)
		return;
	c->next_tick_ms = now + c->h->tick_ms;
	if (c->h->tick(c->state, c->db, c->pub) != ERR_OK && db_ping(c->db) != ERR_OK)
		atomic_store(&c->db_ok, 0);
}

/* How long to wait for a delivery: not past the next tick. */
static int next_timeout_ms(const struct consume *c)
{
	int64_t left;

	if (!c->h->tick)
		return NEXT_TIMEOUT_MS;
	left = c->next_tick_ms - ids_now_ms();
	if (left < 1)
		return 1;
	return left < NEXT_TIMEOUT_MS ? (int)left : NEXT_TIMEOUT_MS;
}

static void run(struct consume *c)
{
	int warned_db = 0, warned_pub = 0;

	while (!consume_stopping()) {
		struct mq_delivery d;
		const char *label = NULL;
		const char *name[1] = {c->h->name};
		enum settle s;
		double t0;
		int rc, settled, last_try;

		if (ensure_db(c)) {
			if (!warned_db++)
				log_warn("cannot reach postgresql, waiting");
			backoff(c);
			continue;
		}
		warned_db = 0;
		/* Nothing taken could be passed on while the publisher is down. */
		if (!mq_publisher_connected(c->pub)) {
			if (!warned_pub++)
				log_warn("rabbitmq publisher not connected, waiting");
			backoff(c);
			continue;
		}
		warned_pub = 0;
		tick(c);
		if (!atomic_load(&c->db_ok))
			continue;
		if (!c->mc) {
			c->mc = mq_consumer_new(c->cfg->amqp_url, c->h->queue, c->cfg->prefetch);
			if (!c->mc) {
				backoff(c);
				continue;
			}
			atomic_store(&c->consumer_ok, 1);
			c->backoff_ms = BACKOFF_MIN_MS;
			log_info("consuming", LF_STR("queue", c->h->queue),
			         LF_INT("prefetch", c->cfg->prefetch));
		}
		memset(&d, 0, sizeof(d));
		rc = mq_consumer_next(c->mc, &d, next_timeout_ms(c));
		if (rc == ERR_TIMEOUT)
			continue;
		if (rc == ERR_NOMEM) {
			/* The delivery went back to the queue; the connection is fine. */
			backoff(c);
			continue;
		}
		if (rc) {
			log_warn("lost the rabbitmq consumer connection, reconnecting",
			         LF_STR("queue", c->h->queue), LF_STR("error", err_str(rc)));
			mq_consumer_free(c->mc);
			c->mc = NULL;
			atomic_store(&c->consumer_ok, 0);
			backoff(c);
			continue;
		}
		t0 = mono_s();
		if (d.redelivered)
			metric_add(c->redeliveries, name, 1);
		/*
		 * The quorum queue dead-letters a message returned more than
		 * MQ_DELIVERY_LIMIT times; x-delivery-count counts the returns
		 * before this delivery.
		 */
		last_try = d.delivery_count >= MQ_DELIVERY_LIMIT;
		s = handle(c, &d, &label);
		settled = settle(c, &d, s) == ERR_OK;
		log_context_clear();
		mq_delivery_release(&d);
		switch (s) {
		case SETTLE_ACK:
			count(c, label, t0);
			c->backoff_ms = BACKOFF_MIN_MS;
			break;
		case SETTLE_POISON:
			count(c, "poison", t0);
			if (settled)
				count_dead_lettered(c, "rejected");
			break;
		case SETTLE_RETRY:
			count(c, "retried", t0);
			if (settled && last_try)
				count_dead_lettered(c, "delivery_limit");
			backoff_upto(c, RETRY_BACKOFF_MAX_MS);
			break;
		}
	}
}

static int ready(void *arg, char *why, size_t whylen)
{
	struct consume *c = arg;

	if (!atomic_load(&c->db_ok)) {
		snprintf(why, whylen, "postgresql unreachable");
		return ERR_UNAVAILABLE;
	}
	if (!mq_publisher_connected(c->pub)) {
		snprintf(why, whylen, "rabbitmq publisher not connected");
		return ERR_UNAVAILABLE;
	}
	if (!atomic_load(&c->consumer_ok)) {
		snprintf(why, whylen, "rabbitmq consumer not connected");
		return ERR_UNAVAILABLE;
	}
	return ERR_OK;
}

static void collect_queue_stats(void *arg)
{
	struct consume *c = arg;

	/* c->pub is set before the ops server starts and freed after it stops. */
	ops_queue_gauges_update(&c->queues, c->pub);
}

static int setup_metrics(struct consume *c)
{
	static const char *const outcomes[] = {"processed", "replayed", "poison", "retried"};
	static const char *const reasons[] = {"rejected", "delivery_limit"};
	const char *name[1] = {c->h->name};
	size_t i;

	c->m = metrics_new();
	if (!c->m)
		return ERR_NOMEM;
	c->messages = metrics_counter(c->m, "orders_messages_total",
	                              "Messages settled by the consumer, by outcome "
	                              "(processed, replayed, poison, retried).",
	                              "consumer,outcome");
	c->latency = metrics_histogram(c->m, "orders_message_processing_seconds",
	                               "Time from delivery to settlement of one message.",
	                               "consumer", metrics_latency_bounds, metrics_latency_nbounds);
	c->redeliveries = metrics_counter(c->m, "orders_message_redeliveries_total",
	                                  "Deliveries the broker marked redelivered.", "consumer");
	c->dead_lettered = metrics_counter(
	    c->m, "orders_messages_dead_lettered_total",
	    "Messages sent to the dead-letter queue: rejected as poison, or failed on the last "
	    "delivery the delivery limit allows.",
	    "consumer,reason");
	if (!c->messages || !c->latency || !c->redeliveries || !c->dead_lettered ||
	    ops_queue_gauges_init(&c->queues, c->m) != ERR_OK ||
	    metrics_process(c->m, ORDERS_VERSION) != ERR_OK)
		return ERR_NOMEM;
	/* Every series from the start at 0, so that a rate() over it has a beginning. */
	for (i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++) {
		const char *labels[2] = {c->h->name, outcomes[i]};

		metric_add(c->messages, labels, 0);
	}
	for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
		const char *labels[2] = {c->h->name, reasons[i]};

		metric_add(c->dead_lettered, labels, 0);
	}
	metric_add(c->redeliveries, name, 0);
	metrics_on_collect(c->m, collect_queue_stats, c);
	return ERR_OK;
}

static int install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a blocking wait should return early and see the flag. */
	if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL))
		return ERR_IO;
	sa.sa_handler = SIG_IGN;
	if (sigaction(SIGPIPE, &sa, NULL))
		return ERR_IO;
	return ERR_OK;
}

static void usage(FILE *f, const char *name)
{
	fprintf(f,
	        "usage: orders-%s\n"
	        "Consumes queue messages until SIGTERM or SIGINT. Configured only through\n"
	        "ORDERS_* environment variables (see the README).\n",
	        name);
}

int consume_main(const struct consume_handler *h, int argc, char **argv)
{
	struct consume c;
	struct config cfg;
	struct mq_publisher_options opt;
	enum log_level level = LOG_INFO;
	char err[256], daemon[64];
	int status = 1, inited = 0, port, rc;

	if (argc > 1) {
		if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
			usage(stdout, h->name);
			return 0;
		}
		usage(stderr, h->name);
		return 2;
	}
	memset(&c, 0, sizeof(c));
	err[0] = '\0';
	if (config_load_for(&cfg, h->needs, err, sizeof(err)) != ERR_OK) {
		fprintf(stderr, "orders-%s: %s\n", h->name, err[0] ? err : "bad configuration");
		return 2;
	}
	log_level_parse(cfg.log_level, &level);
	snprintf(daemon, sizeof(daemon), "orders-%s", h->name);
	log_init(daemon, level);
	config_log(&cfg);

	c.h = h;
	c.cfg = &cfg;
	c.backoff_ms = BACKOFF_MIN_MS;
	atomic_init(&c.db_ok, 0);
	atomic_init(&c.consumer_ok, 0);

	if (seal_init() != ERR_OK) {
		log_error("cannot initialise libsodium");
		goto out;
	}
	if (install_signals() != ERR_OK) {
		log_error("cannot install signal handlers", LF_STR("reason", strerror(errno)));
		goto out;
	}
	if (setup_metrics(&c) != ERR_OK)
		goto nomem;

	memset(&opt, 0, sizeof(opt));
	opt.url = cfg.amqp_url;
	opt.confirm_timeout_ms = cfg.publish_timeout_ms;
	opt.declare_topology = 1;
	opt.poll_queue_stats_ms = CONSUME_QUEUE_STATS_MS;
	c.pub = mq_publisher_new(&opt);
	if (!c.pub) {
		log_error("cannot start the rabbitmq publisher");
		goto out;
	}
	/* PostgreSQL may be down at start: the loop keeps trying. */
	c.db = db_new(cfg.pg_dsn);
	if (c.db) {
		atomic_store(&c.db_ok, 1);
		c.last_ping_ms = ids_now_ms();
	}

	port = cfg.metrics_port > 0 ? cfg.metrics_port : h->default_port;
	c.ops = ops_new(cfg.http_bind, port, c.m, ready, &c);
	if (!c.ops) {
		log_error("cannot serve the ops endpoints", LF_INT("port", port));
		goto out;
	}
	if (h->tick && h->tick_ms <= 0) {
		log_error("cannot run the handler: it has a tick but no tick_ms");
		goto out;
	}
	if (h->init) {
		rc = h->init(&cfg, &c.state);
		if (rc) {
			log_error("cannot initialise the handler", LF_STR("error", err_str(rc)));
			goto out;
		}
		inited = 1;
	}
	log_info("started", LF_STR("queue", h->queue), LF_INT("ops_port", port));
	run(&c);
	log_info("stopping", LF_STR("queue", h->queue));
	status = 0;
	goto out;
nomem:
	log_error("cannot set up metrics", LF_STR("error", err_str(ERR_NOMEM)));
out:
	/* The consumer first: its unacked deliveries go back to the queue. */
	if (c.mc)
		mq_consumer_free(c.mc);
	ops_free(c.ops);
	if (h->fini && inited)
		h->fini(c.state);
	mq_publisher_free(c.pub);
	db_free(c.db);
	metrics_free(c.m);
	if (status == 0)
		log_info("stopped");
	return status;
}
