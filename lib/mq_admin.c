/* mq_admin.c: queue statistics, taking, settling and republishing messages for operators' tools. */
#include "mq_admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "err.h"
#include "mq_internal.h"

/* One channel each, so that a refused statistics query never returns taken messages. */
#define CH_TAKE 1
#define CH_PUBLISH 2
#define CH_STATS 3
#define CH_COUNT 4

#define PROPS_POOL_PAGE 4096

struct mq_props {
	amqp_pool_t pool;
	amqp_basic_properties_t p;
};

struct mq_admin {
	amqp_connection_state_t conn;
	int open[CH_COUNT];
	int dead;
	uint64_t publish_seq; /* the confirm tag of the last publish on CH_PUBLISH */
	char reason[MQ_ADMIN_REASON_MAX];
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- properties ------------------------------------------------------------ */

static int bytes_dup(amqp_pool_t *pool, amqp_bytes_t *b)
{
	amqp_bytes_t copy;

	if (!b->len) {
		*b = amqp_empty_bytes;
		return ERR_OK;
	}
	amqp_pool_alloc_bytes(pool, b->len, &copy);
	if (!copy.bytes)
		return ERR_NOMEM;
	memcpy(copy.bytes, b->bytes, b->len);
	*b = copy;
	return ERR_OK;
}

/* props_copy - a deep copy of src that outlives rabbitmq-c's buffers; NULL on ERR_NOMEM. */
static struct mq_props *props_copy(const amqp_basic_properties_t *src)
{
	static const struct {
		amqp_flags_t flag;
		size_t offset;
	} fields[] = {
	    {AMQP_BASIC_CONTENT_TYPE_FLAG, offsetof(amqp_basic_properties_t, content_type)},
	    {AMQP_BASIC_CONTENT_ENCODING_FLAG, offsetof(amqp_basic_properties_t, content_encoding)},
	    {AMQP_BASIC_CORRELATION_ID_FLAG, offsetof(amqp_basic_properties_t, correlation_id)},
	    {AMQP_BASIC_REPLY_TO_FLAG, offsetof(amqp_basic_properties_t, reply_to)},
	    {AMQP_BASIC_EXPIRATION_FLAG, offsetof(amqp_basic_properties_t, expiration)},
	    {AMQP_BASIC_MESSAGE_ID_FLAG, offsetof(amqp_basic_properties_t, message_id)},
	    {AMQP_BASIC_TYPE_FLAG, offsetof(amqp_basic_properties_t, type)},
	    {AMQP_BASIC_USER_ID_FLAG, offsetof(amqp_basic_properties_t, user_id)},
	    {AMQP_BASIC_APP_ID_FLAG, offsetof(amqp_basic_properties_t, app_id)},
	    {AMQP_BASIC_CLUSTER_ID_FLAG, offsetof(amqp_basic_properties_t, cluster_id)},
	};
	struct mq_props *pr = calloc(1, sizeof(*pr));

	if (!pr)
		return NULL;
	init_amqp_pool(&pr->pool, PROPS_POOL_PAGE);
	pr->p = *src;
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		amqp_bytes_t *b = (amqp_bytes_t *)((char *)&pr->p + fields[i].offset);

		if ((pr->p._flags & fields[i].flag) && bytes_dup(&pr->pool, b) != ERR_OK)
			goto fail;
	}
	if (pr->p._flags & AMQP_BASIC_HEADERS_FLAG) {
		if (amqp_table_clone(&src->headers, &pr->p.headers, &pr->pool) != AMQP_STATUS_OK)
			goto fail;
	} else {
		pr->p.headers = amqp_empty_table;
	}
	return pr;
fail:
	empty_amqp_pool(&pr->pool);
	free(pr);
	return NULL;
}

static void props_free(struct mq_props *pr)
{
	if (!pr)
		return;
	empty_amqp_pool(&pr->pool);
	free(pr);
}

static int key_is(amqp_bytes_t key, const char *want)
{
	size_t n = strlen(want);

	return key.len == n && memcmp(key.bytes, want, n) == 0;
}

static const amqp_field_value_t *table_find(const amqp_table_t *t, const char *key)
{
	for (int i = 0; i < t->num_entries; i++) {
		if (key_is(t->entries[i].key, key))
			return &t->entries[i].value;
	}
	return NULL;
}

static int is_string(const amqp_field_value_t *v)
{
	return v && (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES);
}

static void table_string(const amqp_table_t *t, const char *key, char *out, size_t size)
{
	const amqp_field_value_t *v = table_find(t, key);

	if (is_string(v))
		mq__copy_bytes(out, size, v->value.bytes);
	else
		out[0] = '\0';
}

/* death_parse - the newest x-death entry (the broker puts it first), when there is one. */
static void death_parse(const amqp_basic_properties_t *p, struct mq_message *m)
{
	const amqp_field_value_t *v, *keys, *count;
	const amqp_table_t *t;
	struct mq_death *d = &m->death;
	int ok;

	if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
		return;
	v = table_find(&p->headers, "x-death");
	if (!v || v->kind != AMQP_FIELD_KIND_ARRAY || v->value.array.num_entries < 1 ||
	    v->value.array.entries[0].kind != AMQP_FIELD_KIND_TABLE)
		return;
	t = &v->value.array.entries[0].value.table;
	table_string(t, "queue", d->queue, sizeof(d->queue));
	table_string(t, "reason", d->reason, sizeof(d->reason));
	table_string(t, "exchange", d->exchange, sizeof(d->exchange));
	d->routing_key[0] = '\0';
	keys = table_find(t, "routing-keys");
	if (keys && keys->kind == AMQP_FIELD_KIND_ARRAY && keys->value.array.num_entries > 0 &&
	    is_string(&keys->value.array.entries[0]))
		mq__copy_bytes(d->routing_key, sizeof(d->routing_key),
		               keys->value.array.entries[0].value.bytes);
	count = table_find(t, "count");
	d->count = count ? mq__header_int(count, &ok) : 0;
	if (count && !ok)
		d->count = 0;
	m->has_death = 1;
}

void mq_message_release(struct mq_message *m)
{
	if (!m)
		return;
	free(m->body);
	m->body = NULL;
	m->len = 0;
	props_free(m->props);
	m->props = NULL;
}

/* ---- connection and channels ---------------------------------------------- */

static int failed(struct mq_admin *a, uint16_t ch)
{
	int rc = mq__rpc_failed(a->conn, ch, a->reason, sizeof(a->reason));

	if (rc == ERR_MQ)
		a->open[ch] = 0;
	else if (rc)
		a->dead = 1;
	return rc;
}

/* channel - open ch when the broker closed it (publishing with confirms). */
static int channel(struct mq_admin *a, uint16_t ch)
{
	int rc;

	if (a->dead) {
		if (!a->reason[0])
			snprintf(a->reason, sizeof(a->reason), "the connection is gone");
		return ERR_UNAVAILABLE;
	}
	a->reason[0] = '\0';
	amqp_maybe_release_buffers(a->conn);
	if (a->open[ch])
		return ERR_OK;
	amqp_channel_open(a->conn, ch);
	rc = failed(a, ch);
	if (rc)
		return rc;
	if (ch == CH_PUBLISH) {
		amqp_confirm_select(a->conn, ch);
		rc = failed(a, ch);
		if (rc)
			return rc;
		a->publish_seq = 0;
	}
	a->open[ch] = 1;
	return ERR_OK;
}

struct mq_admin *mq_admin_new(const char *url, char *reason, size_t size)
{
	struct mq_admin *a = calloc(1, sizeof(*a));
	int rc;

	if (!a) {
		snprintf(reason, size, "out of memory");
		return NULL;
	}
	rc = mq__connect(url, &a->conn, a->reason, sizeof(a->reason));
	for (uint16_t ch = CH_TAKE; rc == ERR_OK && ch < CH_COUNT; ch++)
		rc = channel(a, ch);
	if (rc) {
		snprintf(reason, size, "%s", a->reason);
		mq_admin_free(a);
		return NULL;
	}
	return a;
}

void mq_admin_free(struct mq_admin *a)
{
	if (!a)
		return;
	if (a->conn)
		mq__close(a->conn, !a->dead);
	free(a);
}

const char *mq_admin_last_error(const struct mq_admin *a)
{
	return a ? a->reason : "";
}

/* not_found - the last RPC was refused with 404 (no such queue or exchange). */
static int not_found(struct mq_admin *a)
{
	amqp_rpc_reply_t r = amqp_get_rpc_reply(a->conn);

	return r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
	       r.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
	       ((amqp_channel_close_t *)r.reply.decoded)->reply_code == AMQP_NOT_FOUND;
}

/* ---- statistics and taking -------------------------------------------------- */

int mq_admin_queue_stats(struct mq_admin *a, const char *queue, long *messages, long *consumers)
{
	amqp_queue_declare_ok_t *ok;
	int rc, missing;

	if (!a || !queue)
		return ERR_INVALID;
	rc = channel(a, CH_STATS);
	if (rc)
		return rc;
	ok = amqp_queue_declare(a->conn, CH_STATS, amqp_cstring_bytes(queue), 1, 0, 0, 0,
	                        amqp_empty_table);
	if (!ok) {
		missing = not_found(a);
		rc = failed(a, CH_STATS);
		return rc == ERR_MQ && missing ? ERR_NOT_FOUND : rc;
	}
	if (messages)
		*messages = (long)ok->message_count;
	if (consumers)
		*consumers = (long)ok->consumer_count;
	return ERR_OK;
}

int mq_admin_get(struct mq_admin *a, const char *queue, struct mq_message *out)
{
	amqp_basic_get_ok_t *ok;
	amqp_rpc_reply_t r;
	amqp_message_t msg;
	struct mq_message m;
	const amqp_field_value_t *count;
	int rc;

	if (!a || !queue || !out)
		return ERR_INVALID;
	rc = channel(a, CH_TAKE);
	if (rc)
		return rc;
	r = amqp_basic_get(a->conn, CH_TAKE, amqp_cstring_bytes(queue), 0);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
		return failed(a, CH_TAKE);
	if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
		return ERR_NOT_FOUND;
	memset(&m, 0, sizeof(m));
	ok = r.reply.decoded;
	m.tag = ok->delivery_tag;
	mq__copy_bytes(m.exchange, sizeof(m.exchange), ok->exchange);
	mq__copy_bytes(m.routing_key, sizeof(m.routing_key), ok->routing_key);
	r = amqp_read_message(a->conn, CH_TAKE, &msg, 0);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		a->dead = 1;
		snprintf(a->reason, sizeof(a->reason), "cannot read the message");
		return ERR_UNAVAILABLE;
	}
	if ((msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) &&
	    msg.properties.message_id.len < sizeof(m.message_id))
		mq__copy_bytes(m.message_id, sizeof(m.message_id), msg.properties.message_id);
	count = (msg.properties._flags & AMQP_BASIC_HEADERS_FLAG)
	            ? table_find(&msg.properties.headers, "x-delivery-count")
	            : NULL;
	if (count) {
		int is_int;
		long n = mq__header_int(count, &is_int);

		m.delivery_count = is_int && n > 0 ? n : 0;
	}
	death_parse(&msg.properties, &m);
	m.len = msg.body.len;
	m.body = malloc(m.len ? m.len : 1);
	m.props = props_copy(&msg.properties);
	if (m.len && m.body)
		memcpy(m.body, msg.body.bytes, m.len);
	amqp_destroy_message(&msg);
	if (!m.body || !m.props) {
		/* Hand it back: nobody else may take it while this one holds it. */
		mq_message_release(&m);
		amqp_basic_reject(a->conn, CH_TAKE, m.tag, 1);
		snprintf(a->reason, sizeof(a->reason), "out of memory");
		return ERR_NOMEM;
	}
	*out = m;
	return ERR_OK;
}

static int status_rc(struct mq_admin *a, int st)
{
	if (st == AMQP_STATUS_OK)
		return ERR_OK;
	a->dead = 1;
	snprintf(a->reason, sizeof(a->reason), "%s", amqp_error_string2(st));
	return ERR_UNAVAILABLE;
}

int mq_admin_ack(struct mq_admin *a, uint64_t tag)
{
	int rc;

	if (!a)
		return ERR_INVALID;
	rc = channel(a, CH_TAKE);
	return rc ? rc : status_rc(a, amqp_basic_ack(a->conn, CH_TAKE, tag, 0));
}

int mq_admin_reject(struct mq_admin *a, uint64_t tag, int requeue)
{
	int rc;

	if (!a)
		return ERR_INVALID;
	rc = channel(a, CH_TAKE);
	return rc ? rc : status_rc(a, amqp_basic_reject(a->conn, CH_TAKE, tag, requeue ? 1 : 0));
}

int mq_admin_requeue_all(struct mq_admin *a)
{
	int rc;

	if (!a)
		return ERR_INVALID;
	rc = channel(a, CH_TAKE);
	/* Tag 0 with multiple set: every delivery on the channel not yet settled. */
	return rc ? rc : status_rc(a, amqp_basic_nack(a->conn, CH_TAKE, 0, 1, 1));
}

/* ---- republishing ------------------------------------------------------------ */

/* confirm_of - whether an ack or nack with this tag covers the message seq. */
static int covers(uint64_t tag, int multiple, uint64_t seq)
{
	return tag == seq || (multiple && tag >= seq);
}

/*
 * wait_confirm - read frames until the broker confirms publish seq. A
 * basic.return (mandatory, unroutable) comes before the confirm of the same
 * message; one message is in flight at a time, so it is always this one.
 */
static int wait_confirm(struct mq_admin *a, uint64_t seq, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	int returned = 0;

	for (;;) {
		int64_t left = deadline - now_ms();
		struct timeval tv;
		amqp_frame_t f;
		int st;

		if (left < 0)
			left = 0;
		tv.tv_sec = (time_t)(left / 1000);
		tv.tv_usec = (suseconds_t)(left % 1000) * 1000;
		st = amqp_simple_wait_frame_noblock(a->conn, &f, &tv);
		if (st == AMQP_STATUS_TIMEOUT) {
			snprintf(a->reason, sizeof(a->reason), "no confirm within %d ms",
			         timeout_ms);
			return ERR_TIMEOUT;
		}
		if (st != AMQP_STATUS_OK)
			return status_rc(a, st);
		if (f.frame_type != AMQP_FRAME_METHOD)
			continue;
		switch (f.payload.method.id) {
		case AMQP_BASIC_ACK_METHOD: {
			amqp_basic_ack_t *ack = f.payload.method.decoded;

			if (f.channel != CH_PUBLISH ||
			    !covers(ack->delivery_tag, ack->multiple, seq))
				break;
			if (!returned)
				return ERR_OK;
			snprintf(a->reason, sizeof(a->reason), "no queue is bound for the key");
			return ERR_UNROUTABLE;
		}
		case AMQP_BASIC_NACK_METHOD: {
			amqp_basic_nack_t *nack = f.payload.method.decoded;

			if (f.channel != CH_PUBLISH ||
			    !covers(nack->delivery_tag, nack->multiple, seq))
				break;
			snprintf(a->reason, sizeof(a->reason), "the broker refused the message");
			return ERR_NACKED;
		}
		case AMQP_BASIC_RETURN_METHOD: {
			amqp_message_t msg;
			amqp_rpc_reply_t r = amqp_read_message(a->conn, f.channel, &msg, 0);

			if (r.reply_type != AMQP_RESPONSE_NORMAL) {
				a->dead = 1;
				snprintf(a->reason, sizeof(a->reason),
				         "cannot read a returned message");
				return ERR_UNAVAILABLE;
			}
			amqp_destroy_message(&msg);
			returned = 1;
			break;
		}
		case AMQP_CHANNEL_CLOSE_METHOD: {
			amqp_channel_close_t *cl = f.payload.method.decoded;
			amqp_channel_close_ok_t close_ok = {0};
			char text[MQ_ADMIN_REASON_MAX / 2];

			mq__copy_bytes(text, sizeof(text), cl->reply_text);
			snprintf(a->reason, sizeof(a->reason),
			         "channel closed by the broker: %u %s", (unsigned)cl->reply_code,
			         text);
			amqp_send_method(a->conn, f.channel, AMQP_CHANNEL_CLOSE_OK_METHOD,
			                 &close_ok);
			a->open[f.channel] = 0;
			return ERR_MQ;
		}
		case AMQP_CONNECTION_CLOSE_METHOD: {
			amqp_connection_close_ok_t close_ok = {0};

			snprintf(a->reason, sizeof(a->reason), "connection closed by the broker");
			amqp_send_method(a->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &close_ok);
			a->dead = 1;
			return ERR_UNAVAILABLE;
		}
		default:
			break;
		}
	}
}

int mq_admin_republish(struct mq_admin *a, const char *exchange, const char *routing_key,
                       const struct mq_message *m, int timeout_ms)
{
	amqp_basic_properties_t p;
	amqp_table_entry_t *kept = NULL;
	amqp_bytes_t body;
	int rc, st;

	if (!a || !exchange || !routing_key || !m || !m->props || timeout_ms <= 0)
		return ERR_INVALID;
	rc = channel(a, CH_PUBLISH);
	if (rc)
		return rc;
	p = m->props->p;
	p._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
	p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	/* The broker counts deliveries itself; a stale count must not travel along. */
	if ((p._flags & AMQP_BASIC_HEADERS_FLAG) && p.headers.num_entries > 0) {
		int n = 0;

		kept = calloc((size_t)p.headers.num_entries, sizeof(*kept));
		if (!kept)
			return ERR_NOMEM;
		for (int i = 0; i < p.headers.num_entries; i++) {
			if (!key_is(p.headers.entries[i].key, "x-delivery-count"))
				kept[n++] = p.headers.entries[i];
		}
		p.headers.entries = kept;
		p.headers.num_entries = n;
	}
	body.len = m->len;
	body.bytes = m->body;
	st = amqp_basic_publish(a->conn, CH_PUBLISH, amqp_cstring_bytes(exchange),
	                        amqp_cstring_bytes(routing_key), 1, 0, &p, body);
	free(kept);
	if (st != AMQP_STATUS_OK)
		return status_rc(a, st);
	a->publish_seq++;
	return wait_confirm(a, a->publish_seq, timeout_ms);
}
