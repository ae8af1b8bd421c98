/* dlq_helper.c: orders-dlq-helper, what orderctl.sh needs to plant messages in queues and
 * dead-letter queues. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"
#include "mq.h"
#include "mq_admin.h"
#include "proto.h"

/* A poison body is small; stdin beyond this is refused. */
#define BODY_MAX 65536
#define CONFIRM_TIMEOUT_MS 10000

static const char usage[] =
    "usage: orders-dlq-helper publish ROUTING_KEY MESSAGE_ID < body\n"
    "         publish stdin to exchange orders (mandatory, confirmed)\n"
    "       orders-dlq-helper park QUEUE ORDER_ID\n"
    "         dead-letter QUEUE's message of that order as a consumer would (reject,\n"
    "         no requeue) and print its message_id\n"
    "       orders-dlq-helper copy QUEUE MESSAGE_ID\n"
    "         put a second copy of that message, parked in QUEUE.dlq, into QUEUE.dlq\n"
    "         (as a replay that crashed between confirm and ack leaves it)\n"
    "ORDERS_AMQP_URL names the broker.\n";

static int publish(const char *url, const char *key, const char *id)
{
	static unsigned char body[BODY_MAX];
	struct mq_publisher_options opt;
	struct mq_publisher *p;
	size_t len = fread(body, 1, sizeof(body), stdin);
	int rc = ERR_UNAVAILABLE;

	if (!feof(stdin)) {
		fprintf(stderr, "orders-dlq-helper: the body is over %d bytes\n", BODY_MAX);
		return 1;
	}
	memset(&opt, 0, sizeof(opt));
	opt.url = url;
	opt.confirm_timeout_ms = CONFIRM_TIMEOUT_MS;
	p = mq_publisher_new(&opt);
	if (!p)
		return 1;
	/* The publisher connects in the background: give it a few seconds. */
	for (int i = 0; i < 100 && rc == ERR_UNAVAILABLE; i++) {
		rc = mq_publish_sync(p, MQ_EXCHANGE_ORDERS, key, id, body, len,
		                     MQ_PUBLISH_MANDATORY);
		if (rc == ERR_UNAVAILABLE)
			nanosleep(&(struct timespec){0, 100000000L}, NULL);
	}
	mq_publisher_free(p);
	if (rc)
		fprintf(stderr, "orders-dlq-helper: cannot publish: %s\n", err_str(rc));
	return rc ? 1 : 0;
}

static int order_is(const struct mq_message *m, const char *order_id)
{
	Orders__Envelope *env = NULL;
	int same;

	if (proto_envelope_peek(m->body, m->len, &env) != ERR_OK)
		return 0;
	same = strcmp(env->order_id, order_id) == 0;
	orders__envelope__free_unpacked(env, NULL);
	return same;
}

/* find - take messages of queue until match says yes; the others stay taken (requeue them). */
static int find(struct mq_admin *a, const char *queue, const char *want,
                int (*match)(const struct mq_message *, const char *), struct mq_message *out)
{
	long ready = 0;

	if (mq_admin_queue_stats(a, queue, &ready, NULL) != ERR_OK)
		return ERR_NOT_FOUND;
	for (long i = 0; i < ready; i++) {
		struct mq_message m;

		if (mq_admin_get(a, queue, &m) != ERR_OK)
			break;
		if (match(&m, want)) {
			*out = m;
			return ERR_OK;
		}
		mq_message_release(&m);
	}
	return ERR_NOT_FOUND;
}

static int id_is(const struct mq_message *m, const char *id)
{
	return strcmp(m->message_id, id) == 0;
}

static int park_or_copy(const char *url, int park, const char *queue, const char *want)
{
	char reason[MQ_ADMIN_REASON_MAX], dlq[MQ_KEY_MAX + 8];
	struct mq_admin *a = mq_admin_new(url, reason, sizeof(reason));
	struct mq_message m = {0};
	int rc;

	if (!a) {
		fprintf(stderr, "orders-dlq-helper: cannot connect: %s\n", reason);
		return 1;
	}
	snprintf(dlq, sizeof(dlq), "%s.dlq", queue);
	rc = park ? find(a, queue, want, order_is, &m) : find(a, dlq, want, id_is, &m);
	if (rc == ERR_OK && park) {
		rc = mq_admin_reject(a, m.tag, 0);
		if (rc == ERR_OK)
			printf("%s\n", m.message_id);
	} else if (rc == ERR_OK) {
		rc = mq_admin_republish(a, MQ_EXCHANGE_DLX, queue, &m, CONFIRM_TIMEOUT_MS);
	}
	if (rc)
		fprintf(stderr, "orders-dlq-helper: %s %s: %s %s\n", park ? "park" : "copy", want,
		        err_str(rc), mq_admin_last_error(a));
	mq_message_release(&m);
	mq_admin_requeue_all(a);
	mq_admin_free(a);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *url = getenv("ORDERS_AMQP_URL");

	log_set_fd(2);
	log_init("orders-dlq-helper", LOG_WARN);
	if (!url || !*url || argc != 4) {
		fputs(usage, stderr);
		return 2;
	}
	if (!strcmp(argv[1], "publish"))
		return publish(url, argv[2], argv[3]);
	if (!strcmp(argv[1], "park") || !strcmp(argv[1], "copy"))
		return park_or_copy(url, !strcmp(argv[1], "park"), argv[2], argv[3]);
	fputs(usage, stderr);
	return 2;
}
