/* dlq.c: orderctl dlq: list, replay or drop the messages parked in a dead-letter queue. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "mq.h"
#include "mq_admin.h"
#include "orderctl.h"
#include "proto.h"

enum dlq_action { DLQ_LIST, DLQ_REPLAY, DLQ_DROP };

struct dlq_run {
	enum dlq_action action;
	const char *queue; /* the work queue */
	char dlq[MQ_KEY_MAX + 8];
	const char *message_id; /* only these; NULL = all */
	long max;               /* act on (list: show) at most this many */
	int json;
	int confirm_timeout_ms;
	struct mq_admin *a;
	long parked; /* ready in the .dlq when the run began */
	long taken, matched, done, skipped, failed;
	json_t *out; /* --json: the messages */
};

/* ---- one message -------------------------------------------------------------- */

/* order_of - the order id in the message's envelope, printable; "" when it has none. */
static void order_of(const struct mq_message *m, char *out, size_t size)
{
	Orders__Envelope *env = NULL;

	out[0] = '\0';
	if (proto_envelope_peek(m->body, m->len, &env) != ERR_OK)
		return;
	ctl_printable(env->order_id, out, size);
	orders__envelope__free_unpacked(env, NULL);
}

/*
 * describe - what is shown of a parked message: ids, keys, the dead-letter
 * reason and its size. Never the body: a checkout carries the sealed card.
 */
static json_t *describe(const struct mq_message *m)
{
	char id[MQ_ID_MAX], key[MQ_KEY_MAX], orig[MQ_KEY_MAX], reason[32], from[MQ_KEY_MAX];
	char order[80];
	json_t *o = json_object();

	if (!o)
		return NULL;
	order_of(m, order, sizeof(order));
	json_object_set_new(o, "message_id",
	                    json_string(ctl_printable(m->message_id, id, sizeof(id))));
	json_object_set_new(o, "routing_key",
	                    json_string(ctl_printable(m->routing_key, key, sizeof(key))));
	if (m->has_death) {
		json_object_set_new(
		    o, "original_routing_key",
		    json_string(ctl_printable(m->death.routing_key, orig, sizeof(orig))));
		json_object_set_new(
		    o, "reason",
		    json_string(ctl_printable(m->death.reason, reason, sizeof(reason))));
		json_object_set_new(o, "death_count", json_integer(m->death.count));
		json_object_set_new(o, "dead_lettered_from",
		                    json_string(ctl_printable(m->death.queue, from, sizeof(from))));
	} else {
		json_object_set_new(o, "original_routing_key", json_null());
		json_object_set_new(o, "reason", json_null());
		json_object_set_new(o, "death_count", json_null());
		json_object_set_new(o, "dead_lettered_from", json_null());
	}
	json_object_set_new(o, "order_id", order[0] ? json_string(order) : json_null());
	json_object_set_new(o, "delivery_count", json_integer(m->delivery_count));
	json_object_set_new(o, "size", json_integer((json_int_t)m->len));
	return o;
}

static const char *str_or(json_t *o, const char *key, const char *none)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s && *s ? s : none;
}

static void print_row(json_t *o)
{
	json_t *count = json_object_get(o, "death_count");
	char n[24] = "-";

	if (json_is_integer(count))
		snprintf(n, sizeof(n), "%lld", (long long)json_integer_value(count));
	printf("%-40s %-20s %-15s %5s %-36s %8lld\n", str_or(o, "message_id", "-"),
	       str_or(o, "original_routing_key", "?"), str_or(o, "reason", "-"), n,
	       str_or(o, "order_id", "-"),
	       (long long)json_integer_value(json_object_get(o, "size")));
}

/*
 * why_not - why a parked message cannot be replayed, or NULL when it can:
 * it needs an id (a consumer parks a message without one again at once)
 * and the routing key it had before the work queue dead-lettered it.
 */
static const char *why_not(const struct dlq_run *r, const struct mq_message *m)
{
	if (!m->message_id[0])
		return "it has no message_id, so a consumer would park it again";
	if (!m->has_death || !m->death.routing_key[0])
		return "it has no x-death routing key, so its original routing key is unknown";
	if (strcmp(m->death.queue, r->queue) != 0)
		return "its x-death says it was dead-lettered from another queue";
	return NULL;
}

static void say(const struct dlq_run *r, const char *what, const struct mq_message *m,
                const char *detail)
{
	char id[MQ_ID_MAX];

	if (r->json)
		return;
	printf("%s %s%s%s\n", what,
	       m->message_id[0] ? ctl_printable(m->message_id, id, sizeof(id)) : "(no message_id)",
	       detail ? ": " : "", detail ? detail : "");
}

/*
 * replay - republish one parked message where it came from, and remove it
 * from the .dlq only after the broker confirmed the copy. Returns 0 to go
 * on, -1 when the connection is gone.
 */
static int replay(struct dlq_run *r, struct mq_message *m, json_t *o)
{
	const char *no = why_not(r, m);
	char detail[MQ_ADMIN_REASON_MAX + 64], key[MQ_KEY_MAX];
	int rc;

	if (no) {
		r->skipped++;
		json_object_set_new(o, "result", json_string("skipped"));
		json_object_set_new(o, "detail", json_string(no));
		say(r, "skipped", m, no);
		return 0;
	}
	rc = mq_admin_republish(r->a, MQ_EXCHANGE_ORDERS, m->death.routing_key, m,
	                        r->confirm_timeout_ms);
	if (rc) {
		r->failed++;
		snprintf(detail, sizeof(detail), "cannot republish it (%s: %s); it stays parked",
		         err_str(rc), mq_admin_last_error(r->a));
		json_object_set_new(o, "result", json_string("failed"));
		json_object_set_new(o, "detail", json_string(detail));
		say(r, "failed", m, detail);
		return rc == ERR_UNAVAILABLE ? -1 : 0;
	}
	rc = mq_admin_ack(r->a, m->tag);
	r->done++;
	if (rc) {
		/* The copy is in the work queue: this one comes back and would be a duplicate. */
		r->failed++;
		snprintf(detail, sizeof(detail),
		         "republished, but not removed from the .dlq (%s); a replay of it again "
		         "is harmless: the consumers' inbox processes a message once",
		         mq_admin_last_error(r->a));
		json_object_set_new(o, "result", json_string("replayed_not_removed"));
		json_object_set_new(o, "detail", json_string(detail));
		say(r, "replayed", m, detail);
		return -1;
	}
	snprintf(detail, sizeof(detail), "to exchange %s, routing key %s", MQ_EXCHANGE_ORDERS,
	         ctl_printable(m->death.routing_key, key, sizeof(key)));
	json_object_set_new(o, "result", json_string("replayed"));
	say(r, "replayed", m, detail);
	return 0;
}

static int drop(struct dlq_run *r, struct mq_message *m, json_t *o)
{
	if (mq_admin_ack(r->a, m->tag) != ERR_OK) {
		r->failed++;
		say(r, "failed", m, mq_admin_last_error(r->a));
		return -1;
	}
	r->done++;
	json_object_set_new(o, "result", json_string("dropped"));
	say(r, "dropped", m, NULL);
	return 0;
}

/* ---- the run -------------------------------------------------------------------- */

/*
 * walk - take every message that was parked when the run began (one
 * re-parked meanwhile comes after them and is not taken again), act on
 * those selected, and put back whatever was not removed.
 */
static int walk(struct dlq_run *r)
{
	int rc = ERR_OK;

	while (r->taken < r->parked && r->matched < r->max) {
		struct mq_message m;
		json_t *o;
		int stop = 0;

		rc = mq_admin_get(r->a, r->dlq, &m);
		if (rc == ERR_NOT_FOUND) {
			rc = ERR_OK;
			break;
		}
		if (rc)
			break;
		r->taken++;
		if (r->message_id && strcmp(r->message_id, m.message_id) != 0) {
			mq_message_release(&m);
			continue;
		}
		r->matched++;
		o = describe(&m);
		if (!o) {
			mq_message_release(&m);
			rc = ERR_NOMEM;
			break;
		}
		if (r->action == DLQ_REPLAY)
			stop = replay(r, &m, o);
		else if (r->action == DLQ_DROP)
			stop = drop(r, &m, o);
		else if (!r->json)
			print_row(o);
		json_array_append_new(r->out, o);
		mq_message_release(&m);
		if (stop) {
			rc = ERR_UNAVAILABLE;
			break;
		}
	}
	/* Whatever was taken and not removed goes back; so it does if this fails. */
	if (mq_admin_requeue_all(r->a) != ERR_OK && rc == ERR_OK)
		rc = ERR_UNAVAILABLE;
	return rc;
}

static int summary(struct dlq_run *r, int rc)
{
	static const char *const verbs[] = {"shown", "replayed", "dropped"};
	long left = -1;
	json_t *root;

	if (rc == ERR_OK && mq_admin_queue_stats(r->a, r->dlq, &left, NULL) != ERR_OK)
		left = -1;
	if (r->json) {
		root = json_object();
		if (!root)
			return ctl_fail("out of memory");
		json_object_set_new(root, "queue", json_string(r->dlq));
		json_object_set_new(root, "parked", json_integer(r->parked));
		json_object_set_new(root, verbs[r->action],
		                    json_integer(r->action == DLQ_LIST ? r->matched : r->done));
		if (r->action == DLQ_REPLAY) {
			json_object_set_new(root, "skipped", json_integer(r->skipped));
			json_object_set_new(root, "failed", json_integer(r->failed));
		}
		json_object_set_new(root, "left", left >= 0 ? json_integer(left) : json_null());
		json_object_set(root, "messages", r->out);
		json_dumpf(root, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(root);
	} else if (r->action == DLQ_LIST) {
		printf("# %s: %ld parked, %ld shown, all left in place\n", r->dlq, r->parked,
		       r->matched);
	} else {
		char n[24] = "?";

		if (left >= 0)
			snprintf(n, sizeof(n), "%ld", left);
		printf("%s: %ld %s, %ld skipped, %ld failed; %s left parked\n", r->dlq, r->done,
		       verbs[r->action], r->skipped, r->failed, n);
	}
	if (fflush(stdout) != 0)
		return ctl_fail("cannot write the output");
	if (rc)
		return ctl_fail("%s: stopped early: %s (%s)", r->dlq, err_str(rc),
		                mq_admin_last_error(r->a));
	if (r->failed)
		return CTL_FAIL;
	if (r->message_id && r->matched == 0)
		return ctl_fail("%s: no parked message has message_id '%s'", r->dlq, r->message_id);
	return CTL_OK;
}

static int parse(struct dlq_run *r, int argc, char **argv)
{
	static const char *const actions[] = {"list", "replay", "drop"};
	int found = 0, rc;

	if (argc < 2)
		return ctl_usage("dlq needs an action: list, replay or drop");
	for (int k = 0; k < 3; k++) {
		if (!strcmp(argv[1], actions[k])) {
			r->action = (enum dlq_action)k;
			found = 1;
		}
	}
	if (!found)
		return ctl_usage("dlq: unknown action '%s' (list, replay or drop)", argv[1]);
	if (argc < 3 || argv[2][0] == '-')
		return ctl_usage("dlq %s needs a work queue name", actions[r->action]);
	if (ctl_work_queue(argv[2]) < 0)
		return ctl_usage("dlq: '%s' is no work queue (%s, %s, %s or %s)", argv[2],
		                 mq_work_queues[0], mq_work_queues[1], mq_work_queues[2],
		                 mq_work_queues[3]);
	r->queue = argv[2];
	snprintf(r->dlq, sizeof(r->dlq), "%s.dlq", r->queue);
	r->max = r->action == DLQ_LIST ? 1000 : CTL_LONG_MAX_ARG;
	for (int i = 3; i < argc; i++) {
		rc = CTL_OK;
		if (!strcmp(argv[i], "--json"))
			r->json = 1;
		else if (!strcmp(argv[i], "--max"))
			rc = ctl_long_arg(argc, argv, &i, 1, CTL_LONG_MAX_ARG, &r->max);
		else if (!strcmp(argv[i], "--message-id"))
			rc = ctl_str_arg(argc, argv, &i, &r->message_id);
		else
			return ctl_usage("dlq %s: unknown argument '%s'", actions[r->action],
			                 argv[i]);
		if (rc)
			return rc;
	}
	if (r->action == DLQ_DROP && !r->message_id)
		return ctl_usage("dlq drop needs --message-id: it never empties a queue wholesale");
	return CTL_OK;
}

int ctl_dlq(struct ctl *c, int argc, char **argv)
{
	struct dlq_run r;
	char reason[MQ_ADMIN_REASON_MAX];
	int rc;

	memset(&r, 0, sizeof(r));
	rc = parse(&r, argc, argv);
	if (rc)
		return rc;
	r.confirm_timeout_ms = c->cfg.publish_timeout_ms > 0 ? c->cfg.publish_timeout_ms : 5000;
	r.out = json_array();
	if (!r.out)
		return ctl_fail("out of memory");
	r.a = mq_admin_new(c->cfg.amqp_url, reason, sizeof(reason));
	if (!r.a) {
		json_decref(r.out);
		return ctl_fail("cannot connect to rabbitmq: %s", reason);
	}
	rc = mq_admin_queue_stats(r.a, r.dlq, &r.parked, NULL);
	if (rc == ERR_OK) {
		if (!r.json && r.action == DLQ_LIST)
			printf("%-40s %-20s %-15s %5s %-36s %8s\n", "MESSAGE_ID",
			       "ORIGINAL_ROUTING_KEY", "REASON", "COUNT", "ORDER_ID", "SIZE");
		rc = summary(&r, walk(&r));
	} else if (rc == ERR_NOT_FOUND) {
		rc = ctl_fail("queue '%s' does not exist (have the daemons ever started?)", r.dlq);
	} else {
		rc = ctl_fail("cannot read queue '%s': %s", r.dlq, mq_admin_last_error(r.a));
	}
	mq_admin_free(r.a);
	json_decref(r.out);
	return rc;
}
