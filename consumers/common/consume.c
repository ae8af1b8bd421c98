/* consume.c: take a batch, process it in one transaction, publish, confirm, ack; repeat. */
#include "consume.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "card.h"
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
/* While PostgreSQL stays down, a line about it at most this often. */
#define PG_WARN_EVERY_S 10
/* How long one wait for a delivery lasts: the stop flag is checked between. */
#define NEXT_TIMEOUT_MS 500
/* Stopping: the deliveries set on their way before the signal have come
 * within this long (see drain). */
#define CONSUME_QUIET_MS 300
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

/*
 * Set by the signal handler, which runs on whichever thread the kernel picks
 * (the ops server's and the publisher's do not block the signals): so a
 * lock-free atomic, which C11 lets a handler write and any thread read,
 * not a volatile sig_atomic_t, which is safe only between a handler and
 * the thread it interrupted.
 */
static atomic_int consume_stop;

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
	struct metric_family *batch_size;
	struct ops_queue_gauges queues;
	struct ops *ops;
	/* Written by the loop thread, read by the ops thread for /readyz. */
	atomic_int db_ok;
	atomic_int consumer_ok;
	/* Lines about PostgreSQL being down, retried at every back-off. */
	struct log_throttle pg_warn;
	int backoff_ms;
	int64_t last_ping_ms;
	int64_t next_tick_ms; /* when handler->tick is due next */
	/* Deliveries per batch, and room for a batch: */
	int batch;
	struct mq_delivery *deliveries;
	double *t0; /* when each was taken */
	struct item *items;
	/* A delivery taken for the last batch that belongs to the next one. */
	struct mq_delivery carry;
	double carry_t0;
	int has_carry;
	/* Stopping (see drain): draining, what has come is processed; acks are
	 * deferred (up to deferred_top) until the consumer is cancelled and
	 * drained, once the broker has said that nothing more will come. */
	int draining, drained, defer_acks;
	uint64_t deferred_top;
};

/* ---- helpers ------------------------------------------------------------ */

int consume_stopping(void)
{
	return atomic_load(&consume_stop) != 0;
}

int consume_sleep_ms(int ms)
{
	struct timespec ts;

	while (ms > 0 && !atomic_load(&consume_stop)) {
		int step = ms < 50 ? ms : 50;

		ts.tv_sec = 0;
		ts.tv_nsec = (long)step * 1000000L;
		nanosleep(&ts, NULL);
		ms -= step;
	}
	return atomic_load(&consume_stop) != 0;
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

const char *consume_card_problem(const Orders__SealedCard *sc)
{
	if (!sc)
		return "sealed card missing";
	if (sc->sender_public_key.len != SEAL_KEY_BYTES)
		return "sealed card sender_public_key is not 32 bytes";
	if (sc->nonce.len != SEAL_NONCE_BYTES)
		return "sealed card nonce is not 24 bytes";
	if (sc->ciphertext.len <= SEAL_MAC_BYTES ||
	    sc->ciphertext.len > SEAL_MAC_BYTES + CARD_RECORD_MAX)
		return "sealed card ciphertext has an impossible length";
	if (!sc->brand || strlen(sc->brand) > 16 || !sc->last4 || strlen(sc->last4) != 4)
		return "sealed card brand or last4 missing";
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

int consume_pg_array(struct buf *b, const char *const *v, size_t n)
{
	size_t i, max = 3;
	int rc;

	/* Room for every string escaped in full, quoted, with a comma. */
	for (i = 0; i < n; i++)
		max += 2 * strlen(v[i]) + 3;
	buf_init(b, max);
	rc = buf_append_str(b, "{");
	for (i = 0; !rc && i < n; i++)
		rc = consume_pg_array_add(b, v[i], i == 0);
	return rc ? rc : buf_append_str(b, "}");
}

int consume_lock_all(struct db *db, const struct db_stmt *st, const char *const *keys, size_t n)
{
	struct buf b;
	const char *p[1];
	int rc;

	rc = consume_pg_array(&b, keys, n);
	if (!rc) {
		p[0] = b.data;
		rc = consume_db_rc(db_exec_stmt(db, st, 1, p, NULL));
	}
	buf_release(&b);
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
	atomic_store(&consume_stop, 1);
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

/* ---- one batch ----------------------------------------------------------- */

/*
 * How often a batch starts over without a message that failed in it, before
 * the messages left are retried one transaction each instead.
 */
#define BATCH_RESTARTS_MAX 3

/* What the inbox says of a delivery (inbox_claim). */
enum claim {
	CLAIM_MISSING,     /* neither inserted nor recorded with an outcome */
	CLAIM_NEW,         /* its row inserted now: process it */
	CLAIM_DONE,        /* processed before: replay the recorded outcome */
	CLAIM_OTHER_ORDER, /* its message_id was recorded for another order */
};

/* One delivery of a batch, from its decoding to its settlement. */
struct item {
	const struct mq_delivery *d;
	struct consume_input in;
	struct consume_result res;
	int rc;           /* what became of it so far: ERR_OK, poison or transient */
	int live;         /* decoded: it takes part in the transaction */
	enum claim claim; /* set by inbox_claim() in each attempt */
	int processed;    /* process() handled it in the current transaction */
};

static int64_t parse_i64(const char *s)
{
	return s ? strtoll(s, NULL, 10) : 0;
}

/* The live item of items[0..n) with this message id, or NULL. */
static struct item *item_by_id(struct item *items, size_t n, const char *message_id)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (items[i].live && strcmp(items[i].in.message_id, message_id) == 0)
			return &items[i];
	}
	return NULL;
}

/* Set the log context to it: its message id, and its order once decoded. */
static void item_context(const struct item *it)
{
	const char *id = consume_utf8_ok(it->d->message_id) ? it->d->message_id : NULL;

	if (it->in.order_id)
		log_context_set(it->in.correlation_id, id, it->in.order_id);
	else
		log_context_set(NULL, id, NULL);
}

/* Empty it->res for another attempt, keeping what the loop set in it. */
static void item_reset(struct item *it)
{
	char order_id[IDS_UUID_LEN + 1], message_id[IDS_UUID_LEN + 1];

	memcpy(order_id, it->res.order_id, sizeof(order_id));
	memcpy(message_id, it->res.message_id, sizeof(message_id));
	consume_result_release(&it->res);
	memcpy(it->res.order_id, order_id, sizeof(order_id));
	memcpy(it->res.message_id, message_id, sizeof(message_id));
	it->claim = CLAIM_MISSING;
	it->processed = 0;
}

static void item_release(const struct consume_handler *h, struct item *it)
{
	consume_result_release(&it->res);
	if (h->msg_free)
		h->msg_free(it->in.msg);
	memset(it, 0, sizeof(*it));
}

/* Step 1 for one delivery: check and decode it into it (live on success). */
static int item_decode(const struct consume_handler *h, void *state, struct item *it,
                       const struct mq_delivery *d)
{
	int rc;

	memset(it, 0, sizeof(*it));
	it->d = d;
	it->in.message_id = d->message_id;
	it->in.routing_key = d->routing_key;
	it->in.body = d->body;
	it->in.len = d->len;
	item_context(it);
	if (!d->message_id[0] || !consume_utf8_ok(d->message_id)) {
		log_error("cannot process message without a usable message_id",
		          LF_STR("routing_key", d->routing_key), LF_STR("queue", h->queue));
		rc = ERR_INVALID;
		goto out;
	}
	if (d->len > PROTO_MAX_MESSAGE) {
		log_error("cannot process message over the size limit",
		          LF_STR("message_id", d->message_id), LF_INT("bytes", d->len));
		rc = ERR_INVALID;
		goto out;
	}
	rc = h->decode(state, &it->in);
	if (rc == ERR_OK && !ids_uuid_valid(it->in.order_id))
		rc = ERR_INVALID;
	if (rc) {
		/* Poison is logged by the hook with its reason and by the caller. */
		if (!is_poison(rc))
			log_warn("cannot decode message", LF_STR("message_id", d->message_id),
			         LF_STR("routing_key", d->routing_key),
			         LF_STR("error", err_str(rc)));
		it->in.order_id = NULL;
		goto out;
	}
	/* From here on every line about this delivery says whose it is. */
	item_context(it);
	snprintf(it->res.order_id, sizeof(it->res.order_id), "%s", it->in.order_id);
	ids_uuid_derived(consume_id_key, h->name, d->message_id, it->in.out_message_id);
	memcpy(it->res.message_id, it->in.out_message_id, sizeof(it->res.message_id));
	it->live = 1;
out:
	it->rc = rc;
	return rc;
}

/*
 * Step 2 for the live items of a batch, in one statement: insert their
 * inbox rows, in delivery order. A row inserted marks its item CLAIM_NEW,
 * with the row's time; the others are read back in a second statement (only
 * when there are any) and marked by what they recorded. A concurrent
 * duplicate blocks on the unique key until the first transaction commits,
 * then conflicts, as one row at a time would.
 */
static int inbox_claim(const struct consume_handler *h, struct db *db, struct item *items, size_t n)
{
	static const struct db_stmt claim_st = {
	    "consume.inbox_claim",
	    "INSERT INTO inbox (consumer, message_id, order_id, outcome) "
	    "SELECT $1, m.id, m.order_id::uuid, '' "
	    "FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS m(id, order_id, n) "
	    "ORDER BY m.n ON CONFLICT DO NOTHING "
	    "RETURNING message_id, floor(extract(epoch FROM processed_at) * 1000)::bigint"};
	static const struct db_stmt recall_st = {
	    "consume.inbox_recall",
	    "SELECT message_id, outcome, floor(extract(epoch FROM processed_at) * 1000)::bigint, "
	    "coalesce(order_id::text, '') FROM inbox "
	    "WHERE consumer = $1 AND message_id = ANY ($2::text[])"};
	const char *ids[CONSUME_BATCH_MAX], *order_ids[CONSUME_BATCH_MAX];
	const char *p[3];
	struct buf b_ids, b_orders;
	PGresult *r = NULL;
	size_t i, k = 0;
	int rc, row;

	/* Both are released at the end, whatever fails first. */
	buf_init(&b_ids, 0);
	buf_init(&b_orders, 0);
	for (i = 0; i < n && k < CONSUME_BATCH_MAX; i++) {
		if (!items[i].live)
			continue;
		items[i].claim = CLAIM_MISSING;
		ids[k] = items[i].in.message_id;
		order_ids[k++] = items[i].in.order_id;
	}
	rc = consume_pg_array(&b_ids, ids, k);
	rc = rc ? rc : consume_pg_array(&b_orders, order_ids, k);
	if (rc)
		goto out;
	p[0] = h->name;
	p[1] = b_ids.data;
	p[2] = b_orders.data;
	rc = consume_db_rc(db_exec_stmt(db, &claim_st, 3, p, &r));
	if (rc)
		goto out;
	for (row = 0; row < PQntuples(r); row++) {
		struct item *it = item_by_id(items, n, PQgetvalue(r, row, 0));

		if (it) {
			it->claim = CLAIM_NEW;
			it->in.processed_ms = parse_i64(PQgetvalue(r, row, 1));
		}
	}
	PQclear(r);
	r = NULL;
	/* The ones seen before, to be replayed. */
	for (i = 0, k = 0; i < n; i++) {
		if (items[i].live && items[i].claim == CLAIM_MISSING)
			ids[k++] = items[i].in.message_id;
	}
	if (k == 0)
		goto out;
	buf_release(&b_ids);
	rc = consume_pg_array(&b_ids, ids, k);
	if (rc)
		goto out;
	p[1] = b_ids.data;
	rc = consume_db_rc(db_exec_stmt(db, &recall_st, 2, p, &r));
	if (rc)
		goto out;
	for (row = 0; row < PQntuples(r); row++) {
		struct item *it = item_by_id(items, n, PQgetvalue(r, row, 0));

		if (!it || it->claim != CLAIM_MISSING || PQgetisnull(r, row, 1) ||
		    !PQgetvalue(r, row, 1)[0])
			continue; /* no outcome yet: CLAIM_MISSING it stays */
		if (strcmp(PQgetvalue(r, row, 3), it->in.order_id) != 0) {
			it->claim = CLAIM_OTHER_ORDER;
			continue;
		}
		it->claim = CLAIM_DONE;
		snprintf(it->res.outcome, sizeof(it->res.outcome), "%s", PQgetvalue(r, row, 1));
		it->in.processed_ms = parse_i64(PQgetvalue(r, row, 2));
	}
out:
	PQclear(r);
	buf_release(&b_ids);
	buf_release(&b_orders);
	return rc;
}

/*
 * Step 3 for one claimed delivery, inside the batch's transaction: process
 * it, or replay the outcome recorded before.
 */
static int item_run(const struct consume_handler *h, void *state, struct db *db, struct item *it)
{
	struct consume_input *in = &it->in;
	struct consume_result *res = &it->res;
	char outcome[CONSUME_OUTCOME_MAX];
	int rc;

	switch (it->claim) {
	case CLAIM_NEW:
		it->processed = 1;
		rc = h->process(state, db, in, res);
		if (!rc && !res->outcome[0] && !h->finish) {
			log_error("handler gave no outcome", LF_STR("message_id", in->message_id));
			rc = ERR_INVALID;
		}
		return rc;
	case CLAIM_DONE:
		break;
	case CLAIM_OTHER_ORDER:
		/* Replaying another order's outcome for this one would be wrong. */
		log_error("cannot replay: message_id was recorded for another order",
		          LF_STR("message_id", in->message_id), LF_STR("order_id", in->order_id));
		return ERR_INVALID;
	default:
		/* The row commits together with its outcome; this cannot last. */
		log_warn("inbox row has no outcome yet", LF_STR("message_id", in->message_id));
		return ERR_DB;
	}
	snprintf(outcome, sizeof(outcome), "%s", res->outcome);
	res->replayed = 1;
	rc = h->replay(state, in, outcome, res);
	if (rc && is_poison(rc))
		log_error("cannot replay recorded outcome", LF_STR("message_id", in->message_id),
		          LF_STR("order_id", in->order_id), LF_STR("outcome", outcome));
	return rc;
}

/* Write the outcomes of the processed items into their inbox rows, in one statement. */
static int write_outcomes(const struct consume_handler *h, struct db *db, struct item *items,
                          size_t n)
{
	static const struct db_stmt st = {
	    "consume.inbox_outcomes",
	    "UPDATE inbox i SET outcome = u.outcome "
	    "FROM unnest($2::text[], $3::text[]) AS u(message_id, outcome) "
	    "WHERE i.consumer = $1 AND i.message_id = u.message_id"};
	const char *ids[CONSUME_BATCH_MAX], *outcomes[CONSUME_BATCH_MAX];
	struct buf b_ids, b_outcomes;
	const char *p[3];
	size_t i, k = 0;
	int rc;

	buf_init(&b_ids, 0);
	buf_init(&b_outcomes, 0);
	for (i = 0; i < n && k < CONSUME_BATCH_MAX; i++) {
		if (!items[i].processed)
			continue;
		ids[k] = items[i].in.message_id;
		outcomes[k++] = items[i].res.outcome;
	}
	rc = consume_pg_array(&b_ids, ids, k);
	rc = rc ? rc : consume_pg_array(&b_outcomes, outcomes, k);
	if (!rc) {
		p[0] = h->name;
		p[1] = b_ids.data;
		p[2] = b_outcomes.data;
		rc = consume_db_rc(db_exec_stmt(db, &st, 3, p, NULL));
	}
	buf_release(&b_ids);
	buf_release(&b_outcomes);
	return rc;
}

/* Hand the processed items to the handler's finish hook, then check their outcomes. */
static int finish_items(const struct consume_handler *h, void *state, struct db *db,
                        struct item *items, size_t n, const struct consume_input **ins,
                        struct consume_result **ress, size_t *nproc)
{
	size_t i, k = 0;
	int rc;

	for (i = 0; i < n; i++) {
		if (!items[i].processed)
			continue;
		ins[k] = &items[i].in;
		ress[k] = &items[i].res;
		k++;
	}
	*nproc = k;
	if (!k)
		return ERR_OK;
	if (h->finish) {
		rc = h->finish(state, db, ins, ress, k);
		if (rc)
			return rc;
	}
	for (i = 0; i < k; i++) {
		if (!ress[i]->outcome[0]) {
			log_error("handler gave no outcome",
			          LF_STR("message_id", ins[i]->message_id),
			          LF_STR("order_id", ins[i]->order_id));
			return ERR_INVALID;
		}
	}
	return ERR_OK;
}

/*
 * One attempt at the transaction of the live items. ERR_OK once it
 * committed. Otherwise the error, with *failed the index of the item whose
 * own step failed, or n when the batch as a whole failed; nothing is
 * committed either way.
 */
static int batch_attempt(const struct consume_handler *h, void *state, struct db *db,
                         struct item *items, size_t n, const struct consume_input **ins,
                         struct consume_result **ress, size_t *failed)
{
	size_t i, k = 0, nproc = 0;
	int rc, in_tx = 0;

	*failed = n;
	rc = consume_db_rc(db_begin(db));
	if (rc)
		goto out;
	in_tx = 1;
	if (h->prepare) {
		for (i = 0; i < n; i++) {
			if (items[i].live)
				ins[k++] = &items[i].in;
		}
		rc = h->prepare(state, db, ins, k);
		if (rc)
			goto out;
	}
	rc = inbox_claim(h, db, items, n);
	if (rc)
		goto out;
	for (i = 0; i < n; i++) {
		if (!items[i].live)
			continue;
		item_context(&items[i]);
		rc = item_run(h, state, db, &items[i]);
		if (rc) {
			*failed = i;
			goto out;
		}
	}
	log_context_clear();
	rc = finish_items(h, state, db, items, n, ins, ress, &nproc);
	if (rc)
		goto out;
	if (nproc) {
		rc = write_outcomes(h, db, items, n);
		if (rc)
			goto out;
	}
	in_tx = 0;
	rc = consume_db_rc(db_commit(db));
out:
	log_context_clear();
	if (in_tx)
		db_rollback(db);
	return rc;
}

/* Empty the results of the live items for a new attempt; the number of them. */
static size_t reset_live(struct item *items, size_t n, int rc)
{
	size_t i, live = 0;

	for (i = 0; i < n; i++) {
		if (!items[i].live)
			continue;
		item_reset(&items[i]);
		items[i].rc = rc;
		live++;
	}
	return live;
}

/*
 * Steps 2-3 for the live items of a batch, in one transaction. ERR_OK once
 * it committed (or had nothing to commit): each item's rc says what became
 * of it, and a live item with rc ERR_OK has its result. Otherwise the
 * batch's own error, nothing is committed and no item has a result; with a
 * single live item, that is its own error.
 *
 * No savepoint per message: a message that fails aborts the attempt, and
 * the batch starts over without it (it is settled by its own error), at
 * most BATCH_RESTARTS_MAX times. Failures are rare, and savepoints would
 * cost two round trips per message and a subtransaction each (past 64 in
 * one transaction, every snapshot in the database gets slower).
 */
static int batch_tx(const struct consume_handler *h, void *state, struct db *db, struct item *items,
                    size_t n)
{
	const struct consume_input **ins = NULL;
	struct consume_result **ress = NULL;
	size_t live, failed;
	int rc = ERR_OK, restarts = 0;

	live = reset_live(items, n, ERR_OK);
	if (!live)
		return ERR_OK;
	ins = malloc(live * sizeof(*ins));
	ress = malloc(live * sizeof(*ress));
	if (!ins || !ress) {
		rc = ERR_NOMEM;
		goto out;
	}
	if (!db) {
		rc = ERR_UNAVAILABLE;
		goto out;
	}
	for (;;) {
		rc = batch_attempt(h, state, db, items, n, ins, ress, &failed);
		if (!rc)
			break;
		live = reset_live(items, n, ERR_OK);
		if (failed == n || live == 1 || restarts == BATCH_RESTARTS_MAX)
			goto out;
		/* PostgreSQL gone is no fault of the message's: the caller holds them all. */
		if (!is_poison(rc) && db_ping(db) != ERR_OK)
			goto out;
		items[failed].live = 0;
		items[failed].rc = rc;
		if (!--live)
			break;
		restarts++;
	}
	rc = ERR_OK;
out:
	if (rc)
		reset_live(items, n, rc);
	free(ins);
	free(ress);
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
	struct item it;
	int rc;

	memset(res, 0, sizeof(*res));
	if (!db)
		return ERR_UNAVAILABLE;
	rc = item_decode(h, state, &it, d);
	if (it.live) {
		rc = batch_tx(h, state, db, &it, 1);
		if (!rc)
			rc = it.rc;
		/* The caller's lines are about this delivery. */
		item_context(&it);
	}
	*res = it.res;
	memset(&it.res, 0, sizeof(it.res));
	item_release(h, &it);
	return rc;
}

/* 1 when d[i]'s message id is that of an earlier one of d. */
static int repeated_id(const struct mq_delivery *d, size_t i)
{
	size_t j;

	for (j = 0; j < i; j++) {
		if (strcmp(d[j].message_id, d[i].message_id) == 0)
			return 1;
	}
	return 0;
}

int consume__deliver_batch(const struct consume_handler *h, void *state, struct db *db,
                           const struct mq_delivery *d, size_t n, struct consume_result *res,
                           int *rcs)
{
	struct item *items;
	size_t i;
	int rc;

	if (!h || !d || !res || !rcs || n < 1 || n > CONSUME_BATCH_MAX)
		return ERR_INVALID;
	for (i = 0; i < n; i++) {
		if (d[i].message_id[0] && repeated_id(d, i))
			return ERR_INVALID;
	}
	items = calloc(n, sizeof(*items));
	if (!items)
		return ERR_NOMEM;
	for (i = 0; i < n; i++)
		item_decode(h, state, &items[i], &d[i]);
	rc = batch_tx(h, state, db, items, n);
	for (i = 0; i < n; i++) {
		rcs[i] = items[i].rc;
		res[i] = items[i].res;
		memset(&items[i].res, 0, sizeof(items[i].res));
		item_release(h, &items[i]);
	}
	free(items);
	log_context_clear();
	return rc;
}

/* ---- the loop's side of a batch ------------------------------------------ */

/* The rendezvous between publish_all() and the publisher's confirms. */
struct confirm_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t pending;
};

struct confirm_slot {
	struct confirm_wait *w;
	int result;
};

static void on_confirm(void *arg, int result)
{
	struct confirm_slot *s = arg;
	struct confirm_wait *w = s->w;

	pthread_mutex_lock(&w->mu);
	s->result = result;
	if (--w->pending == 0)
		pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* Hand one outgoing message to the publisher; its result lands in slot. */
static void publish_one(struct consume *c, struct confirm_wait *w, struct confirm_slot *slot,
                        const char *exchange, const char *routing_key, const char *message_id,
                        const uint8_t *body, size_t len)
{
	unsigned flags;
	int rc;

	slot->w = w;
	slot->result = ERR_OK;
	if (!exchange)
		return;
	/*
	 * Work for the next stage must reach its queue before this delivery
	 * is acked; an event nobody listens to may go nowhere.
	 */
	flags = strcmp(exchange, MQ_EXCHANGE_ORDERS) == 0 ? MQ_PUBLISH_MANDATORY : 0;
	/* Counted first: the confirm may come before the call returns. */
	pthread_mutex_lock(&w->mu);
	w->pending++;
	pthread_mutex_unlock(&w->mu);
	rc = mq_publisher_publish(c->pub, exchange, routing_key, message_id, body, len, flags,
	                          on_confirm, slot);
	if (rc) {
		pthread_mutex_lock(&w->mu);
		w->pending--;
		pthread_mutex_unlock(&w->mu);
		slot->result = rc;
	}
}

/*
 * Step 4: publish the outgoing messages of every item done so far, all in
 * flight together, and wait for their confirms. An item whose messages are
 * not all confirmed becomes a retry.
 */
static int publish_all(struct consume *c, struct item *items, size_t n)
{
	struct confirm_wait w;
	struct confirm_slot *slots;
	size_t i;

	slots = calloc(2 * n, sizeof(*slots));
	if (!slots)
		return ERR_NOMEM;
	w.pending = 0;
	if (pthread_mutex_init(&w.mu, NULL)) {
		free(slots);
		return ERR_NOMEM;
	}
	if (pthread_cond_init(&w.cv, NULL)) {
		pthread_mutex_destroy(&w.mu);
		free(slots);
		return ERR_NOMEM;
	}
	for (i = 0; i < n; i++) {
		const struct consume_result *res = &items[i].res;

		if (!items[i].live || items[i].rc)
			continue;
		publish_one(c, &w, &slots[2 * i], res->exchange, res->routing_key, res->message_id,
		            res->body, res->len);
		publish_one(c, &w, &slots[2 * i + 1], res->extra.exchange, res->extra.routing_key,
		            res->extra.message_id, res->extra.body, res->extra.len);
	}
	/* Every callback comes: the confirm timeout bounds the wait. */
	pthread_mutex_lock(&w.mu);
	while (w.pending > 0)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	for (i = 0; i < n; i++) {
		struct item *it = &items[i];
		int k;

		if (!it->live || it->rc)
			continue;
		for (k = 0; k < 2; k++) {
			const struct confirm_slot *s = &slots[2 * i + k];

			if (s->result == ERR_OK)
				continue;
			item_context(it);
			/* A connection lost (a broker node stopping; a message sent
			 * whole is then in doubt) is an outage the redelivery rides
			 * out; a refusal (nack, unroutable) is not. */
			log_at(s->result == ERR_UNAVAILABLE || s->result == ERR_CLOSED ||
			               s->result == ERR_TIMEOUT || s->result == ERR_IN_DOUBT
			           ? LOG_WARN
			           : LOG_ERROR,
			       "cannot publish outcome, will retry",
			       LF_STR("message_id", it->d->message_id),
			       LF_STR("order_id", it->res.order_id),
			       LF_STR("routing_key",
			              k ? it->res.extra.routing_key : it->res.routing_key),
			       LF_STR("error", err_str(s->result)));
			/* Never poison: the redelivery publishes again. */
			it->rc = ERR_UNAVAILABLE;
			break;
		}
	}
	log_context_clear();
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.mu);
	free(slots);
	return ERR_OK;
}

/* PostgreSQL does not answer: msg, at most every PG_WARN_EVERY_S while it lasts. */
static void pg_down(struct consume *c, const char *msg, size_t messages, int rc)
{
	long held;

	atomic_store(&c->db_ok, 0);
	if (log_throttle_due(&c->pg_warn, PG_WARN_EVERY_S, &held))
		log_warn(msg, LF_INT("messages", (long long)messages), LF_STR("error", err_str(rc)),
		         LF_INT("retry_in_ms", c->backoff_ms), LF_INT("warnings_suppressed", held));
}

/* PostgreSQL answers: said once when it did not before. */
static void pg_up(struct consume *c)
{
	long held;

	atomic_store(&c->db_ok, 1);
	if (log_throttle_clear(&c->pg_warn, &held))
		log_info("postgresql reachable again", LF_INT("warnings_suppressed", held));
}

/*
 * Steps 2-3 with the loop's persistence: a batch that fails as a whole is
 * held while PostgreSQL is unreachable, and otherwise its messages are
 * retried one transaction each, so that only the culprit fails.
 */
static void transact(struct consume *c, struct item *items, size_t n)
{
	size_t i, live;
	int rc, down = 0;

	for (;;) {
		rc = batch_tx(c->h, c->state, c->db, items, n);
		if (rc == ERR_OK) {
			pg_up(c);
			return;
		}
		for (i = 0, live = 0; i < n; i++)
			live += items[i].live ? 1 : 0;
		if (live == 1 && is_poison(rc))
			return;
		/*
		 * PostgreSQL itself gone: hold the batch and wait for it rather
		 * than requeue, which would count against the delivery limit
		 * and dead-letter good messages in an outage.
		 */
		down = db_ping(c->db) != ERR_OK;
		if (!down || consume_stopping())
			break;
		pg_down(c, "cannot reach postgresql, holding the messages", live, rc);
		backoff(c);
		if (consume_stopping())
			break;
	}
	if (live > 1 && !down) {
		log_warn("cannot process the batch, processing its messages one at a time",
		         LF_INT("messages", live), LF_STR("error", err_str(rc)));
		for (i = 0; i < n; i++) {
			if (items[i].live)
				transact(c, &items[i], 1);
		}
		return;
	}
	/* Given up (stopping, or one message): what failed the batch is transient. */
	for (i = 0; i < n; i++) {
		if (items[i].live)
			items[i].rc = live > 1 && is_poison(rc) ? ERR_UNAVAILABLE : rc;
	}
}

static enum settle fate(const struct item *it)
{
	if (it->rc == ERR_OK)
		return SETTLE_ACK;
	return is_poison(it->rc) ? SETTLE_POISON : SETTLE_RETRY;
}

/* Log what became of one item, as the loop used to per message. */
static void log_item(const struct item *it)
{
	const struct mq_delivery *d = it->d;
	const struct consume_result *res = &it->res;

	item_context(it);
	switch (fate(it)) {
	case SETTLE_ACK:
		log_info(
		    res->replayed ? "message replayed" : "message processed",
		    LF_STR("message_id", d->message_id), LF_STR("order_id", res->order_id),
		    LF_STR("outcome", res->outcome), LF_STR("routing_key", d->routing_key),
		    LF_STR("published_to", res->exchange ? res->routing_key : ""),
		    LF_STR("out_message_id", res->exchange ? res->message_id : ""),
		    LF_STR("also_published_to", res->extra.exchange ? res->extra.routing_key : ""),
		    LF_STR("also_out_message_id", res->extra.exchange ? res->extra.message_id : ""),
		    LF_INT("redelivered", d->redelivered),
		    LF_INT("delivery_count", d->delivery_count));
		break;
	case SETTLE_POISON:
		log_error("cannot process message, dead-lettering it",
		          LF_STR("message_id", d->message_id), LF_STR("order_id", res->order_id),
		          LF_STR("routing_key", d->routing_key), LF_STR("error", err_str(it->rc)));
		break;
	case SETTLE_RETRY:
		log_warn("cannot process message, will retry", LF_STR("message_id", d->message_id),
		         LF_STR("order_id", res->order_id), LF_STR("routing_key", d->routing_key),
		         LF_STR("error", err_str(it->rc)),
		         LF_INT("delivery_count", d->delivery_count));
		break;
	}
	log_context_clear();
}

/* Forget the consumer connection (its unsettled deliveries go back to the queue). */
static void drop_consumer(struct consume *c)
{
	mq_consumer_free(c->mc);
	c->mc = NULL;
	atomic_store(&c->consumer_ok, 0);
	if (c->has_carry) {
		mq_delivery_release(&c->carry);
		c->has_carry = 0;
	}
}

/*
 * Step 5: reject what is not to be acked, then ack the rest with one
 * basic.ack up to the highest tag: every lower tag of this connection is
 * settled by then (the batch's deliveries are the oldest unsettled ones).
 * settled[i] = 1 for each item the broker was told about. A broken
 * connection is dropped to be made again (the broker returns the rest).
 */
static void settle_all(struct consume *c, const struct item *items, size_t n, int *settled,
                       int *multiple)
{
	uint64_t top = 0;
	size_t i, acks = 0;
	int rc = ERR_OK;

	for (i = 0; i < n; i++) {
		enum settle s = fate(&items[i]);

		settled[i] = 0;
		if (s == SETTLE_ACK) {
			acks++;
			if (items[i].d->tag > top)
				top = items[i].d->tag;
			continue;
		}
		if (!rc) {
			rc = mq_consumer_reject(c->mc, items[i].d->tag, s == SETTLE_RETRY);
			settled[i] = rc == ERR_OK;
		}
	}
	*multiple = 0;
	if (!rc && acks && c->defer_acks) {
		/* Stopping: an ack would let the queue send more (see drain). */
		if (top > c->deferred_top)
			c->deferred_top = top;
		for (i = 0; i < n; i++) {
			if (fate(&items[i]) == SETTLE_ACK)
				settled[i] = 1;
		}
		return;
	}
	if (!rc && acks) {
		*multiple = acks > 1;
		rc = acks == 1 ? mq_consumer_ack(c->mc, top) : mq_consumer_ack_upto(c->mc, top);
		for (i = 0; !rc && i < n; i++) {
			if (fate(&items[i]) == SETTLE_ACK)
				settled[i] = 1;
		}
	}
	if (rc) {
		log_warn("cannot settle deliveries, reconnecting", LF_INT("messages", n),
		         LF_STR("error", err_str(rc)));
		drop_consumer(c);
	}
}

/* Steps 1-5 for the batch of deliveries d[0..n), taken at t0[i]. */
static void handle_batch(struct consume *c, struct mq_delivery *d, const double *t0, size_t n)
{
	struct item *items = c->items;
	const char *name[1] = {c->h->name};
	int settled[CONSUME_BATCH_MAX];
	int retried = 0, acked = 0, multiple = 0;
	long counts[3] = {0, 0, 0};
	double t_tx, t_pub, t_end;
	size_t i;

	metric_observe(c->batch_size, name, (double)n);
	t_tx = mono_s();
	for (i = 0; i < n; i++)
		item_decode(c->h, c->state, &items[i], &d[i]);
	log_context_clear();
	transact(c, items, n);
	t_pub = mono_s();
	if (publish_all(c, items, n) != ERR_OK) {
		for (i = 0; i < n; i++) {
			if (items[i].rc == ERR_OK)
				items[i].rc = ERR_NOMEM;
		}
	}
	for (i = 0; i < n; i++)
		log_item(&items[i]);
	settle_all(c, items, n, settled, &multiple);
	t_end = mono_s();
	for (i = 0; i < n; i++)
		counts[fate(&items[i])]++;
	log_debug("batch settled", LF_INT("messages", n), LF_INT("acked", counts[SETTLE_ACK]),
	          LF_INT("dead_lettered", counts[SETTLE_POISON]),
	          LF_INT("requeued", counts[SETTLE_RETRY]), LF_INT("ack_multiple", multiple),
	          LF_DBL("transaction_ms", (t_pub - t_tx) * 1e3),
	          LF_DBL("publish_ms", (t_end - t_pub) * 1e3));
	for (i = 0; i < n; i++) {
		const struct item *it = &items[i];
		/*
		 * The quorum queue dead-letters a message returned more than
		 * MQ_DELIVERY_LIMIT times; x-delivery-count counts the returns
		 * before this delivery.
		 */
		int last_try = it->d->delivery_count >= MQ_DELIVERY_LIMIT;

		switch (fate(it)) {
		case SETTLE_ACK:
			count(c, it->res.replayed ? "replayed" : "processed", t0[i]);
			acked = 1;
			break;
		case SETTLE_POISON:
			count(c, "poison", t0[i]);
			if (settled[i])
				count_dead_lettered(c, "rejected");
			break;
		case SETTLE_RETRY:
			count(c, "retried", t0[i]);
			if (settled[i] && last_try)
				count_dead_lettered(c, "delivery_limit");
			retried = 1;
			break;
		}
	}
	for (i = 0; i < n; i++) {
		item_release(c->h, &items[i]);
		mq_delivery_release(&d[i]);
	}
	if (retried)
		backoff_upto(c, RETRY_BACKOFF_MAX_MS);
	else if (acked)
		c->backoff_ms = BACKOFF_MIN_MS;
}

/* ---- the loop ------------------------------------------------------------ */

/* Make sure PostgreSQL answers before taking a delivery; 0 when it does. */
static int ensure_db(struct consume *c)
{
	if (!c->db) {
		c->db = db_new(c->cfg->pg_dsn);
		if (!c->db) {
			pg_down(c, "cannot reach postgresql, waiting", 0, ERR_UNAVAILABLE);
			return -1;
		}
		pg_up(c);
		c->last_ping_ms = ids_now_ms();
	}
	if (!atomic_load(&c->db_ok) || ids_now_ms() - c->last_ping_ms >= IDLE_PING_MS) {
		int ok = db_ping(c->db) == ERR_OK;

		c->last_ping_ms = ids_now_ms();
		if (!ok) {
			pg_down(c, "cannot reach postgresql, waiting", 0, ERR_UNAVAILABLE);
			return -1;
		}
		pg_up(c);
	}
	return 0;
}

/*
 * Run the handler's periodic work when it is due. Called between batches
 * only, so the connection is never inside another transaction.
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

/* Note one delivery taken. */
static void taken(struct consume *c, const struct mq_delivery *d, double *t0)
{
	const char *name[1] = {c->h->name};

	*t0 = mono_s();
	if (d->redelivered)
		metric_add(c->redeliveries, name, 1);
}

/*
 * Take a batch into d (room for c->batch): the delivery carried over from
 * the last batch or the next one to come, then whatever else arrives within
 * CONSUME_BATCH_WINDOW_MS. Returns how many; 0 when none came (the
 * connection may have been dropped meanwhile).
 */
static size_t take_batch(struct consume *c, struct mq_delivery *d, double *t0)
{
	int64_t end;
	size_t n = 0;
	int rc;

	if (c->has_carry) {
		d[0] = c->carry;
		t0[0] = c->carry_t0;
		c->has_carry = 0;
	} else {
		memset(&d[0], 0, sizeof(d[0]));
		rc = mq_consumer_next(c->mc, &d[0], next_timeout_ms(c));
		if (rc == ERR_TIMEOUT)
			return 0;
		if (rc == ERR_CLOSED) {
			c->drained = 1;
			return 0;
		}
		if (rc == ERR_NOMEM) {
			/* The delivery went back to the queue; the connection is fine. */
			backoff(c);
			return 0;
		}
		if (rc)
			goto lost;
		taken(c, &d[0], &t0[0]);
	}
	n = 1;
	end = ids_now_ms() + CONSUME_BATCH_WINDOW_MS;
	while (n < (size_t)c->batch && (c->draining || !consume_stopping())) {
		int64_t left = end - ids_now_ms();

		memset(&d[n], 0, sizeof(d[n]));
		rc = mq_consumer_next(c->mc, &d[n], left > 0 ? (int)left : 0);
		if (rc == ERR_TIMEOUT || rc == ERR_NOMEM)
			break;
		if (rc == ERR_CLOSED) {
			c->drained = 1;
			break;
		}
		if (rc)
			goto lost;
		taken(c, &d[n], &t0[n]);
		if (d[n].message_id[0] && repeated_id(d, n)) {
			/* The same message twice: the second is a replay, next time. */
			c->carry = d[n];
			c->carry_t0 = t0[n];
			c->has_carry = 1;
			break;
		}
		n++;
	}
	return n;
lost:
	log_warn("lost the rabbitmq consumer connection, reconnecting",
	         LF_STR("queue", c->h->queue), LF_STR("error", err_str(rc)));
	/* What was taken goes back to the queue with the connection. */
	while (n > 0)
		mq_delivery_release(&d[--n]);
	drop_consumer(c);
	backoff(c);
	return 0;
}

static void run(struct consume *c)
{
	int warned_pub = 0;

	while (!consume_stopping()) {
		size_t n;

		if (ensure_db(c)) {
			backoff(c);
			continue;
		}
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
			         LF_INT("prefetch", c->cfg->prefetch), LF_INT("batch", c->batch));
		}
		n = take_batch(c, c->deliveries, c->t0);
		if (n)
			handle_batch(c, c->deliveries, c->t0, n);
	}
}

/*
 * Stopping: finish the deliveries the broker has already sent (up to the
 * prefetch) instead of handing them back when the connection closes. On a
 * quorum queue every message handed back counts against its delivery
 * limit, and consumers are scaled in often.
 *
 * A cancel alone is not enough: a quorum queue sends a delivery for every
 * ack, and one still on its way when the channel has answered the cancel
 * is handed back. So from the signal on nothing is acked, and the deliveries
 * that earlier acks set on their way come in within CONSUME_QUIET_MS; then
 * the consumer is cancelled, the rest is processed until the broker's
 * cancel-ok, and everything is acked at once. (A message published in the
 * moment the cancel takes may still be handed back.) Whatever is left after
 * ORDERS_DRAIN_TIMEOUT_MS goes back as before (the inbox makes a
 * redelivery harmless).
 */
static void drain(struct consume *c)
{
	int64_t start = ids_now_ms(), end = start + c->cfg->drain_timeout_ms;
	long done = 0;
	int cancelled = 0;

	if (!c->mc)
		return;
	c->draining = 1;
	c->defer_acks = 1;
	while (c->mc && (!c->drained || c->has_carry) && ids_now_ms() < end) {
		size_t n;

		if (!cancelled && ids_now_ms() - start >= CONSUME_QUIET_MS) {
			if (mq_consumer_cancel(c->mc) != ERR_OK)
				break;
			cancelled = 1;
		}
		n = take_batch(c, c->deliveries, c->t0);
		if (n)
			handle_batch(c, c->deliveries, c->t0, n);
		done += (long)n;
	}
	c->defer_acks = 0;
	if (c->mc && c->deferred_top && mq_consumer_ack_upto(c->mc, c->deferred_top) != ERR_OK)
		log_warn("cannot ack the deliveries finished while stopping; they come again",
		         LF_INT("messages", done));
	log_info("finished the deliveries in hand", LF_INT("messages", done),
	         LF_INT("complete", c->drained && !c->has_carry));
}

/* Deliveries per batch: ORDERS_CONSUMER_BATCH, else the handler's, at most the prefetch. */
static int batch_size(const struct consume_handler *h, const struct config *cfg)
{
	int n = cfg->consumer_batch > 0 ? cfg->consumer_batch
	                                : (h->batch > 0 ? h->batch : CONSUME_BATCH_DEFAULT);

	/* The broker sends no more than the prefetch before an ack. */
	if (n > cfg->prefetch)
		n = cfg->prefetch;
	return n > CONSUME_BATCH_MAX ? CONSUME_BATCH_MAX : n;
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
	static const double batch_bounds[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
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
	c->batch_size = metrics_histogram(c->m, "orders_consumer_batch_size",
	                                  "Deliveries the consumer took into one batch (one "
	                                  "transaction).",
	                                  "consumer", batch_bounds,
	                                  sizeof(batch_bounds) / sizeof(batch_bounds[0]));
	if (!c->messages || !c->latency || !c->redeliveries || !c->dead_lettered ||
	    !c->batch_size || ops_queue_gauges_init(&c->queues, c->m) != ERR_OK ||
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
	if (mq_tls_configure(
	        &(struct mq_tls_options){cfg.amqp_ca_file, cfg.amqp_cert_file, cfg.amqp_key_file},
	        err, sizeof(err)) != ERR_OK) {
		log_error("cannot use the rabbitmq tls settings", LF_STR("reason", err));
		goto out;
	}

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
	c.batch = batch_size(h, &cfg);
	c.deliveries = calloc((size_t)c.batch, sizeof(*c.deliveries));
	c.t0 = calloc((size_t)c.batch, sizeof(*c.t0));
	c.items = calloc((size_t)c.batch, sizeof(*c.items));
	if (!c.deliveries || !c.t0 || !c.items)
		goto nomem;
	if (h->init) {
		rc = h->init(&cfg, &c.state);
		if (rc) {
			log_error("cannot initialise the handler", LF_STR("error", err_str(rc)));
			goto out;
		}
		inited = 1;
	}
	log_info("started", LF_STR("queue", h->queue), LF_INT("ops_port", port),
	         LF_INT("batch", c.batch));
	run(&c);
	log_info("stopping", LF_STR("queue", h->queue));
	drain(&c);
	status = 0;
	goto out;
nomem:
	log_error("cannot start", LF_STR("error", err_str(ERR_NOMEM)));
out:
	/* The consumer first: its unacked deliveries go back to the queue. */
	drop_consumer(&c);
	free(c.deliveries);
	free(c.t0);
	free(c.items);
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
