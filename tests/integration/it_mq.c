/* it_mq.c: the RabbitMQ module against a real broker (ORDERS_AMQP_URL). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"
#include "err.h"
#include "mq.h"
#include "mq_internal.h"

#define DEFAULT_URL "amqp://guest:guest@127.0.0.1:5682/"
#define BAD_URL "amqp://guest:guest@127.0.0.1:1/"
#define N_MESSAGES 10000
#define N_THREADS 4
#define BODY_SIZE 700
#define TEST_CHANNEL 1
#define TOPOLOGY_CHANNEL 2

static const char *url;
static char queue[64];              /* test.mq.<pid>: our own queue, bound to "orders" */
static char key[64];                /* its routing key */
static amqp_connection_state_t raw; /* a plain rabbitmq-c connection for setup */

/* Per-message callback bookkeeping for the concurrent publish. */
static atomic_int calls[N_MESSAGES];
static atomic_int results[N_MESSAGES];
static atomic_int done_count;
static int published_ok; /* how many of test 1's messages the broker confirmed */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* message_id and body for message i, so that the consumer can check both. */
static void make_id(char *buf, size_t size, int i)
{
	snprintf(buf, size, "it-mq-%ld-%d", (long)getpid(), i);
}

static void make_body(uint8_t *buf, int i)
{
	for (int k = 0; k < BODY_SIZE; k++)
		buf[k] = (uint8_t)((i * 31 + k * 7) & 0xff);
	memcpy(buf, &i, sizeof(i));
}

static int raw_ok(const char *what)
{
	amqp_rpc_reply_t r = amqp_get_rpc_reply(raw);

	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		fprintf(stderr, "it_mq: %s failed (reply type %d, library error %s)\n", what,
		        (int)r.reply_type, amqp_error_string2(r.library_error));
		return 0;
	}
	return 1;
}

/*
 * Our own queue: a durable quorum queue like the real ones (so that the
 * throughput is the real one), bound to "orders" with a key of its own, so
 * that a consumer daemon running on the same broker never sees our messages.
 * x-expires removes it if this test dies before deleting it.
 */
static int group_setup(void **state)
{
	struct amqp_connection_info ci;
	amqp_table_entry_t args[2];
	amqp_table_t table = {2, args};
	char *buf;
	amqp_socket_t *sock;
	amqp_rpc_reply_t r;

	(void)state;
	url = getenv("ORDERS_AMQP_URL");
	if (!url || !*url)
		url = DEFAULT_URL;
	snprintf(queue, sizeof(queue), "test.mq.%ld", (long)getpid());
	snprintf(key, sizeof(key), "test.mq.%ld", (long)getpid());

	buf = strdup(url);
	if (!buf || amqp_parse_url(buf, &ci) != AMQP_STATUS_OK) {
		fprintf(stderr, "it_mq: cannot parse ORDERS_AMQP_URL\n");
		free(buf);
		return -1;
	}
	if (!ci.vhost[0])
		ci.vhost = "/";
	raw = amqp_new_connection();
	sock = amqp_tcp_socket_new(raw);
	if (!sock || amqp_socket_open(sock, ci.host, ci.port) != AMQP_STATUS_OK) {
		fprintf(stderr, "it_mq: cannot connect to %s:%d (is the broker up?)\n", ci.host,
		        ci.port);
		free(buf);
		return -1;
	}
	r = amqp_login(raw, ci.vhost, 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN,
	               ci.user, ci.password);
	free(buf);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		fprintf(stderr, "it_mq: cannot log in to rabbitmq\n");
		return -1;
	}
	amqp_channel_open(raw, TEST_CHANNEL);
	if (!raw_ok("channel.open"))
		return -1;
	/* The exchange must exist before the binding. */
	if (mq_declare_topology(raw, TOPOLOGY_CHANNEL) != ERR_OK)
		return -1;
	args[0].key = amqp_cstring_bytes("x-queue-type");
	args[0].value.kind = AMQP_FIELD_KIND_UTF8;
	args[0].value.value.bytes = amqp_cstring_bytes("quorum");
	args[1].key = amqp_cstring_bytes("x-expires");
	args[1].value.kind = AMQP_FIELD_KIND_I64;
	args[1].value.value.i64 = 600000;
	amqp_queue_declare(raw, TEST_CHANNEL, amqp_cstring_bytes(queue), 0, 1, 0, 0, table);
	if (!raw_ok("queue.declare"))
		return -1;
	amqp_queue_bind(raw, TEST_CHANNEL, amqp_cstring_bytes(queue),
	                amqp_cstring_bytes(MQ_EXCHANGE_ORDERS), amqp_cstring_bytes(key),
	                amqp_empty_table);
	if (!raw_ok("queue.bind"))
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (!raw)
		return 0;
	amqp_queue_delete(raw, TEST_CHANNEL, amqp_cstring_bytes(queue), 0, 0);
	raw_ok("queue.delete");
	amqp_connection_close(raw, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(raw);
	raw = NULL;
	return 0;
}

/* A quorum queue "<queue>.<suffix>" (name into out) bound to "orders" by its own name. */
static void own_queue(char *out, size_t size, const char *suffix, amqp_table_entry_t *more,
                      int n_more)
{
	amqp_table_entry_t args[4];
	amqp_table_t table = {1 + n_more, args};

	assert_true(n_more >= 0 && n_more < 4);
	snprintf(out, size, "%s.%s", queue, suffix);
	args[0].key = amqp_cstring_bytes("x-queue-type");
	args[0].value.kind = AMQP_FIELD_KIND_UTF8;
	args[0].value.value.bytes = amqp_cstring_bytes("quorum");
	for (int i = 0; i < n_more; i++)
		args[1 + i] = more[i];
	amqp_queue_declare(raw, TEST_CHANNEL, amqp_cstring_bytes(out), 0, 1, 0, 0, table);
	assert_true(raw_ok("queue.declare"));
	amqp_queue_bind(raw, TEST_CHANNEL, amqp_cstring_bytes(out),
	                amqp_cstring_bytes(MQ_EXCHANGE_ORDERS), amqp_cstring_bytes(out),
	                amqp_empty_table);
	assert_true(raw_ok("queue.bind"));
}

static void drop_queue(const char *name)
{
	amqp_queue_delete(raw, TEST_CHANNEL, amqp_cstring_bytes(name), 0, 0);
	assert_true(raw_ok("queue.delete"));
}

static struct mq_publisher *new_publisher(const char *u, int max_in_flight, int stats_ms)
{
	struct mq_publisher_options o = {
	    .url = u,
	    .confirm_timeout_ms = 30000,
	    .max_in_flight = max_in_flight,
	    .declare_topology = 1,
	    .poll_queue_stats_ms = stats_ms,
	};

	return mq_publisher_new(&o);
}

static int wait_connected(struct mq_publisher *p, int ms)
{
	int64_t end = now_ms() + ms;

	while (!mq_publisher_connected(p) && now_ms() < end)
		sleep_ms(10);
	return mq_publisher_connected(p);
}

/* ---- topology ------------------------------------------------------------ */

static void test_topology_idempotent(void **state)
{
	(void)state;
	/* Declared once by the group setup: again and again changes nothing. */
	assert_int_equal(mq_declare_topology(raw, TOPOLOGY_CHANNEL), ERR_OK);
	assert_int_equal(mq_declare_topology(raw, TOPOLOGY_CHANNEL), ERR_OK);
	for (size_t i = 0; i < MQ_WORK_QUEUES; i++) {
		char dlq[80];

		amqp_queue_declare(raw, TEST_CHANNEL, amqp_cstring_bytes(mq_work_queues[i]), 1, 0,
		                   0, 0, amqp_empty_table);
		assert_true(raw_ok(mq_work_queues[i]));
		snprintf(dlq, sizeof(dlq), "%s.dlq", mq_work_queues[i]);
		amqp_queue_declare(raw, TEST_CHANNEL, amqp_cstring_bytes(dlq), 1, 0, 0, 0,
		                   amqp_empty_table);
		assert_true(raw_ok(dlq));
	}
	assert_int_equal(mq_declare_topology(NULL, TOPOLOGY_CHANNEL), ERR_INVALID);
}

/* ---- (1) concurrent publish through one publisher ------------------------ */

static void count_cb(void *arg, int result)
{
	int i = (int)(intptr_t)arg;

	atomic_fetch_add(&calls[i], 1);
	atomic_store(&results[i], result);
	atomic_fetch_add(&done_count, 1);
}

struct pub_job {
	struct mq_publisher *p;
	int first;
	int count;
	int refused; /* non-retryable refusals */
};

static void *publish_thread(void *arg)
{
	struct pub_job *j = arg;
	uint8_t body[BODY_SIZE];
	char id[MQ_ID_MAX];

	for (int i = j->first; i < j->first + j->count; i++) {
		int rc;

		make_id(id, sizeof(id), i);
		make_body(body, i);
		/* ERR_TOO_BIG is back-pressure: wait for confirms and try again. */
		while ((rc = mq_publisher_publish(j->p, MQ_EXCHANGE_ORDERS, key, id, body,
		                                  sizeof(body), 0, count_cb,
		                                  (void *)(intptr_t)i)) == ERR_TOO_BIG)
			sleep_ms(1);
		if (rc != ERR_OK)
			j->refused++;
	}
	return NULL;
}

static void test_publish_concurrent(void **state)
{
	struct mq_publisher *p;
	pthread_t th[N_THREADS];
	struct pub_job jobs[N_THREADS];
	int64_t start, end, deadline;
	double secs;

	(void)state;
	p = new_publisher(url, 0, 0);
	assert_non_null(p);
	assert_true(wait_connected(p, 15000));
	for (int i = 0; i < N_MESSAGES; i++) {
		atomic_store(&calls[i], 0);
		atomic_store(&results[i], 1);
	}
	atomic_store(&done_count, 0);

	start = now_ms();
	for (int t = 0; t < N_THREADS; t++) {
		jobs[t].p = p;
		jobs[t].first = t * (N_MESSAGES / N_THREADS);
		jobs[t].count = N_MESSAGES / N_THREADS;
		jobs[t].refused = 0;
		assert_int_equal(pthread_create(&th[t], NULL, publish_thread, &jobs[t]), 0);
	}
	for (int t = 0; t < N_THREADS; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(jobs[t].refused, 0);
	}
	deadline = now_ms() + 60000;
	while (atomic_load(&done_count) < N_MESSAGES && now_ms() < deadline)
		sleep_ms(1);
	end = now_ms();
	assert_int_equal(atomic_load(&done_count), N_MESSAGES);

	published_ok = 0;
	for (int i = 0; i < N_MESSAGES; i++) {
		assert_int_equal(atomic_load(&calls[i]), 1);
		assert_int_equal(atomic_load(&results[i]), ERR_OK);
		published_ok++;
	}
	secs = (double)(end - start) / 1000.0;
	printf("it_mq: published and confirmed %d persistent %d-byte messages from %d threads "
	       "in %.3f s: %.0f msgs/s\n",
	       N_MESSAGES, BODY_SIZE, N_THREADS, secs, secs > 0 ? N_MESSAGES / secs : 0.0);
	fflush(stdout);

	mq_publisher_free(p);
	/* Every callback came once, and none after free. */
	assert_int_equal(atomic_load(&done_count), N_MESSAGES);
}

/* ---- (2)(3) consume them: message_id and body round-trip ----------------- */

static void test_consume_roundtrip(void **state)
{
	struct mq_consumer *c;
	static uint8_t seen[N_MESSAGES];
	uint8_t body[BODY_SIZE];
	int got = 0;
	int64_t deadline, t0;
	struct mq_delivery d;

	(void)state;
	assert_int_equal(published_ok, N_MESSAGES);
	c = mq_consumer_new(url, queue, 200);
	assert_non_null(c);
	memset(seen, 0, sizeof(seen));
	deadline = now_ms() + 60000;
	while (got < N_MESSAGES && now_ms() < deadline) {
		int rc = mq_consumer_next(c, &d, 2000);
		char id[MQ_ID_MAX];
		int i;

		if (rc == ERR_TIMEOUT)
			continue;
		assert_int_equal(rc, ERR_OK);
		assert_string_equal(d.routing_key, key);
		assert_int_equal(d.len, BODY_SIZE);
		memcpy(&i, d.body, sizeof(i));
		assert_true(i >= 0 && i < N_MESSAGES);
		make_id(id, sizeof(id), i);
		assert_string_equal(d.message_id, id);
		make_body(body, i);
		assert_memory_equal(d.body, body, BODY_SIZE);
		assert_int_equal(seen[i], 0);
		seen[i] = 1;
		got++;
		assert_int_equal(mq_consumer_ack(c, d.tag), ERR_OK);
		mq_delivery_release(&d);
		assert_null(d.body);
	}
	assert_int_equal(got, N_MESSAGES);

	/* The queue is empty now: the wait ends with ERR_TIMEOUT, on time. */
	t0 = now_ms();
	assert_int_equal(mq_consumer_next(c, &d, 300), ERR_TIMEOUT);
	assert_true(now_ms() - t0 >= 250);
	assert_true(now_ms() - t0 < 2000);
	mq_consumer_free(c);
	mq_consumer_free(NULL);
}

/*
 * The publisher encodes its frames itself: bodies of no bytes, of exactly
 * one frame's worth, of one byte more, and of many frames arrive whole,
 * with their message ids.
 */
static void test_publish_sizes(void **state)
{
	static const size_t sizes[] = {0, 1, 131064, 131065, 300000, 1024 * 1024};
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	struct mq_publisher *p;
	struct mq_consumer *c;
	struct mq_delivery d;
	uint8_t *body = malloc(1024 * 1024);
	char id[MQ_ID_MAX];
	int got = 0;

	(void)state;
	assert_non_null(body);
	for (size_t k = 0; k < 1024 * 1024; k++)
		body[k] = (uint8_t)(k * 131 + 7);
	p = new_publisher(url, 100, 0);
	assert_non_null(p);
	assert_true(wait_connected(p, 10000));
	for (size_t i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "it-mq-size-%ld-%zu", (long)getpid(), i);
		assert_int_equal(mq_publish_sync(p, MQ_EXCHANGE_ORDERS, key, id, body, sizes[i],
		                                 MQ_PUBLISH_MANDATORY),
		                 ERR_OK);
	}
	mq_publisher_free(p);

	c = mq_consumer_new(url, queue, 10);
	assert_non_null(c);
	while (got < N) {
		size_t i;

		assert_int_equal(mq_consumer_next(c, &d, 10000), ERR_OK);
		assert_int_equal(sscanf(d.message_id + strlen("it-mq-size-"), "%*d-%zu", &i), 1);
		assert_true(i < N);
		assert_int_equal(d.len, sizes[i]);
		if (sizes[i])
			assert_memory_equal(d.body, body, sizes[i]);
		assert_int_equal(mq_consumer_ack(c, d.tag), ERR_OK);
		mq_delivery_release(&d);
		got++;
	}
	mq_consumer_free(c);
	free(body);
}

/* Quorum queues count deliveries in the x-delivery-count header. */
static void test_redelivery_count(void **state)
{
	struct mq_publisher *p;
	struct mq_consumer *c;
	struct mq_delivery d;
	const char body[] = "redeliver me";

	(void)state;
	p = new_publisher(url, 0, 0);
	assert_non_null(p);
	assert_true(wait_connected(p, 15000));
	assert_int_equal(
	    mq_publish_sync(p, MQ_EXCHANGE_ORDERS, key, "it-mq-redeliver", body, sizeof(body), 0),
	    ERR_OK);
	mq_publisher_free(p);

	c = mq_consumer_new(url, queue, 10);
	assert_non_null(c);
	assert_int_equal(mq_consumer_next(c, &d, 10000), ERR_OK);
	assert_string_equal(d.message_id, "it-mq-redeliver");
	assert_int_equal(d.redelivered, 0);
	assert_int_equal(d.delivery_count, 0);
	assert_int_equal(mq_consumer_reject(c, d.tag, 1), ERR_OK);
	mq_delivery_release(&d);

	assert_int_equal(mq_consumer_next(c, &d, 10000), ERR_OK);
	assert_string_equal(d.message_id, "it-mq-redeliver");
	assert_int_equal(d.redelivered, 1);
	assert_int_equal(d.delivery_count, 1);
	assert_int_equal(d.len, sizeof(body));
	assert_memory_equal(d.body, body, sizeof(body));
	assert_int_equal(mq_consumer_ack(c, d.tag), ERR_OK);
	mq_delivery_release(&d);
	mq_consumer_free(c);
}

/*
 * mq_consumer_ack_upto acks every unsettled delivery up to a tag, and only
 * those: of five, the second is rejected first (the test queue has no
 * dead-letter exchange: it is gone), then one ack up to the fourth; the
 * fifth, unacked, comes back once the consumer is closed, alone.
 */
static void test_ack_upto(void **state)
{
	struct mq_publisher *p;
	struct mq_consumer *c;
	struct mq_delivery d[5];
	char id[MQ_ID_MAX];
	int i;

	(void)state;
	p = new_publisher(url, 0, 0);
	assert_non_null(p);
	assert_true(wait_connected(p, 15000));
	for (i = 0; i < 5; i++) {
		snprintf(id, sizeof(id), "it-mq-upto-%d", i);
		assert_int_equal(mq_publish_sync(p, MQ_EXCHANGE_ORDERS, key, id, "x", 1, 0),
		                 ERR_OK);
	}
	mq_publisher_free(p);

	c = mq_consumer_new(url, queue, 10);
	assert_non_null(c);
	for (i = 0; i < 5; i++) {
		memset(&d[i], 0, sizeof(d[i]));
		assert_int_equal(mq_consumer_next(c, &d[i], 10000), ERR_OK);
		snprintf(id, sizeof(id), "it-mq-upto-%d", i);
		assert_string_equal(d[i].message_id, id);
		if (i > 0)
			assert_true(d[i].tag > d[i - 1].tag);
	}
	assert_int_equal(mq_consumer_reject(c, d[1].tag, 0), ERR_OK);
	assert_int_equal(mq_consumer_ack_upto(c, d[3].tag), ERR_OK);
	for (i = 0; i < 5; i++)
		mq_delivery_release(&d[i]);
	mq_consumer_free(c);

	c = mq_consumer_new(url, queue, 10);
	assert_non_null(c);
	memset(&d[0], 0, sizeof(d[0]));
	assert_int_equal(mq_consumer_next(c, &d[0], 10000), ERR_OK);
	assert_string_equal(d[0].message_id, "it-mq-upto-4");
	assert_int_equal(d[0].redelivered, 1);
	assert_int_equal(mq_consumer_ack_upto(c, d[0].tag), ERR_OK);
	mq_delivery_release(&d[0]);
	assert_int_equal(mq_consumer_next(c, &d[1], 500), ERR_TIMEOUT);
	mq_consumer_free(c);
	assert_int_equal(mq_consumer_ack_upto(NULL, 1), ERR_INVALID);
}

/* ---- nack and channel loss ------------------------------------------------- */

/*
 * A quorum queue that holds one message and refuses more (reject-publish, as
 * the work queues are declared) makes the broker nack: ERR_NACKED.
 */
static void test_nacked(void **state)
{
	char full[80];
	amqp_table_entry_t args[2];
	struct mq_publisher *p;
	int first, nacked = 0, other = 0;

	(void)state;
	args[0].key = amqp_cstring_bytes("x-max-length");
	args[0].value.kind = AMQP_FIELD_KIND_I64;
	args[0].value.value.i64 = 1;
	args[1].key = amqp_cstring_bytes("x-overflow");
	args[1].value.kind = AMQP_FIELD_KIND_UTF8;
	args[1].value.value.bytes = amqp_cstring_bytes("reject-publish");
	own_queue(full, sizeof(full), "full", args, 2);

	p = new_publisher(url, 0, 0);
	assert_non_null(p);
	assert_true(wait_connected(p, 15000));
	first = mq_publish_sync(p, MQ_EXCHANGE_ORDERS, full, "it-mq-full-0", "a", 1, 0);
	/* The quorum queue notices it is full a little late: keep going a while. */
	for (int i = 1; i < 20 && nacked == 0; i++) {
		int rc = mq_publish_sync(p, MQ_EXCHANGE_ORDERS, full, "it-mq-full-n", "b", 1, 0);

		if (rc == ERR_NACKED)
			nacked++;
		else if (rc != ERR_OK)
			other++;
	}
	mq_publisher_free(p);
	drop_queue(full);
	assert_int_equal(first, ERR_OK);
	assert_int_equal(nacked, 1);
	assert_int_equal(other, 0);
}

/*
 * Publishing to a missing exchange makes the broker close the channel (404):
 * the publisher treats that as a lost connection, reconnects and goes on.
 * The message was sent whole, and a closed channel does not say which
 * message it was closed over (those published before it may be stored):
 * ERR_IN_DOUBT. Publishes refused while it reconnects are ERR_UNAVAILABLE.
 */
static void test_channel_loss_reconnects(void **state)
{
	struct mq_publisher *p;
	char bad[64];
	int64_t deadline;
	int rc;

	(void)state;
	snprintf(bad, sizeof(bad), "it-mq-missing-%ld", (long)getpid());
	p = new_publisher(url, 0, 0);
	assert_non_null(p);
	assert_true(wait_connected(p, 15000));
	assert_int_equal(mq_publish_sync(p, bad, key, "it-mq-lost", "x", 1, 0), ERR_IN_DOUBT);
	/* Back within the first back-off steps; ERR_UNAVAILABLE meanwhile. */
	deadline = now_ms() + 15000;
	do {
		rc = mq_publish_sync(p, MQ_EXCHANGE_ORDERS, "it-mq-nowhere", "it-mq-after", "x", 1,
		                     0);
		if (rc != ERR_OK)
			sleep_ms(20);
	} while (rc == ERR_UNAVAILABLE && now_ms() < deadline);
	assert_int_equal(rc, ERR_OK);
	mq_publisher_free(p);
}

/* ---- queue stats ----------------------------------------------------------- */

static void test_queue_stats(void **state)
{
	struct mq_publisher *p;
	long messages = -1, consumers = -1;
	int64_t deadline;

	(void)state;
	p = new_publisher(url, 0, 100);
	assert_non_null(p);
	assert_true(wait_connected(p, 15000));
	deadline = now_ms() + 10000;
	/* The queues are read one after the other: wait for the last. */
	while (mq_publisher_queue_stats(p, MQ_STAT_QUEUES - 1, &messages, &consumers) != ERR_OK &&
	       now_ms() < deadline)
		sleep_ms(20);
	/* The work queues, then each one's dead-letter queue. */
	for (size_t i = 0; i < MQ_WORK_QUEUES; i++) {
		char dlq[MQ_KEY_MAX + 8];

		assert_string_equal(mq_stat_queues[i], mq_work_queues[i]);
		snprintf(dlq, sizeof(dlq), "%s.dlq", mq_work_queues[i]);
		assert_string_equal(mq_stat_queues[MQ_WORK_QUEUES + i], dlq);
	}
	for (size_t i = 0; i < MQ_STAT_QUEUES; i++) {
		assert_int_equal(mq_publisher_queue_stats(p, i, &messages, &consumers), ERR_OK);
		assert_true(messages >= 0);
		assert_true(consumers >= 0);
	}
	assert_int_equal(mq_publisher_queue_stats(p, MQ_STAT_QUEUES, &messages, &consumers),
	                 ERR_INVALID);
	mq_publisher_free(p);
}

/* ---- max_in_flight --------------------------------------------------------- */

static atomic_int small_calls;

static void small_cb(void *arg, int result)
{
	(void)arg;
	(void)result;
	atomic_fetch_add(&small_calls, 1);
}

static void test_max_in_flight(void **state)
{
	struct mq_publisher *p;
	int accepted = 0, too_big = 0;
	int64_t deadline;

	(void)state;
	p = new_publisher(url, 5, 0);
	assert_non_null(p);
	assert_true(wait_connected(p, 15000));
	atomic_store(&small_calls, 0);
	for (int i = 0; i < 50; i++) {
		int rc = mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, key, "it-mq-small", "x", 1, 0,
		                              small_cb, NULL);

		if (rc == ERR_OK)
			accepted++;
		else if (rc == ERR_TOO_BIG)
			too_big++;
		else
			fail_msg("unexpected publish result %d", rc);
	}
	assert_true(accepted >= 5);
	assert_true(too_big > 0);
	/* Argument checks come first and never call back. */
	assert_int_equal(
	    mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, key, "id", NULL, 1, 0, small_cb, NULL),
	    ERR_INVALID);
	deadline = now_ms() + 10000;
	while (atomic_load(&small_calls) < accepted && now_ms() < deadline)
		sleep_ms(5);
	mq_publisher_free(p);
	assert_int_equal(atomic_load(&small_calls), accepted);
}

/* ---- (5) free with messages pending ---------------------------------------- */

static atomic_int free_ok, free_closed, free_doubt, free_other;
static atomic_int free_calls[2000];

static void free_cb(void *arg, int result)
{
	int i = (int)(intptr_t)arg;

	atomic_fetch_add(&free_calls[i], 1);
	if (result == ERR_OK)
		atomic_fetch_add(&free_ok, 1);
	else if (result == ERR_CLOSED)
		atomic_fetch_add(&free_closed, 1);
	else if (result == ERR_IN_DOUBT)
		atomic_fetch_add(&free_doubt, 1);
	else
		atomic_fetch_add(&free_other, 1);
}

/* A connected publisher that polls queue stats every stats_ms (0: never), the
 * free_* counts at 0. */
static struct mq_publisher *counted_publisher(int stats_ms)
{
	struct mq_publisher *p = new_publisher(url, 0, stats_ms);

	assert_non_null(p);
	assert_true(wait_connected(p, 15000));
	atomic_store(&free_ok, 0);
	atomic_store(&free_closed, 0);
	atomic_store(&free_doubt, 0);
	atomic_store(&free_other, 0);
	return p;
}

static void test_free_with_pending(void **state)
{
	struct mq_publisher *p;
	uint8_t body[BODY_SIZE];
	int accepted = 0;

	(void)state;
	p = counted_publisher(0);
	memset(body, 'f', sizeof(body));
	for (int i = 0; i < 2000; i++) {
		atomic_store(&free_calls[i], 0);
		if (mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, key, "it-mq-free", body,
		                         sizeof(body), 0, free_cb, (void *)(intptr_t)i) == ERR_OK)
			accepted++;
	}
	assert_int_equal(accepted, 2000);
	mq_publisher_free(p);
	/* Every callback has run by the time free returns, exactly once: those
	 * sent whole but not confirmed may be stored, in doubt. */
	for (int i = 0; i < 2000; i++)
		assert_int_equal(atomic_load(&free_calls[i]), 1);
	assert_int_equal(
	    atomic_load(&free_ok) + atomic_load(&free_closed) + atomic_load(&free_doubt), 2000);
	assert_int_equal(atomic_load(&free_other), 0);
	printf("it_mq: free with 2000 pending: %d confirmed, %d closed, %d in doubt\n",
	       atomic_load(&free_ok), atomic_load(&free_closed), atomic_load(&free_doubt));
	fflush(stdout);
}

/*
 * Stopped but not freed, as the API stops it while its HTTP threads still
 * hold it: every pending message is called back by then, and afterwards
 * the publisher refuses, from any thread, until it is freed.
 */
static void test_stop_then_free(void **state)
{
	struct mq_publisher *p;
	uint8_t body[BODY_SIZE];
	long messages, consumers;

	(void)state;
	p = counted_publisher(200);
	for (int64_t end = now_ms() + 10000;
	     mq_publisher_queue_stats(p, 0, &messages, &consumers) != ERR_OK && now_ms() < end;)
		sleep_ms(10);
	assert_int_equal(mq_publisher_queue_stats(p, 0, &messages, &consumers), ERR_OK);
	memset(body, 's', sizeof(body));
	for (int i = 0; i < 500; i++) {
		atomic_store(&free_calls[i], 0);
		assert_int_equal(mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, key, "it-mq-stop",
		                                      body, sizeof(body), 0, free_cb,
		                                      (void *)(intptr_t)i),
		                 ERR_OK);
	}
	mq_publisher_stop(p);
	for (int i = 0; i < 500; i++)
		assert_int_equal(atomic_load(&free_calls[i]), 1);
	assert_int_equal(
	    atomic_load(&free_ok) + atomic_load(&free_closed) + atomic_load(&free_doubt), 500);
	assert_int_equal(atomic_load(&free_other), 0);
	assert_int_equal(mq_publisher_connected(p), 0);
	assert_int_equal(mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, key, "it-mq-stop", body,
	                                      sizeof(body), 0, free_cb, (void *)(intptr_t)0),
	                 ERR_CLOSED);
	assert_int_equal(mq_publisher_queue_stats(p, 0, &messages, &consumers), ERR_NOT_FOUND);
	/* Again: nothing more happens. */
	mq_publisher_stop(p);
	mq_publisher_free(p);
	/* The refused message was never called back. */
	assert_int_equal(atomic_load(&free_calls[0]), 1);
}

/* ---- mandatory publishing ------------------------------------------------ */

#define N_MIX 4000
#define N_DUP 5

/*
 * Message i of the mixed publish, by i % 4: 0 and 3 go mandatory to our
 * bound key, 1 mandatory to a key nothing binds, 2 to that key without the
 * flag. Pairs (2k, 2k+1) share a message id, so that the returns must be
 * paired by route as well as by id.
 */
static char unroutable[64];

static int mix_flags(int i)
{
	return i % 4 == 2 ? 0 : MQ_PUBLISH_MANDATORY;
}

static const char *mix_key(int i)
{
	return i % 4 == 1 || i % 4 == 2 ? unroutable : key;
}

static int mix_expected(int i)
{
	return i % 4 == 1 ? ERR_UNROUTABLE : ERR_OK;
}

static void *mix_thread(void *arg)
{
	struct pub_job *j = arg;
	char id[MQ_ID_MAX];

	for (int i = j->first; i < j->first + j->count; i++) {
		int rc;

		snprintf(id, sizeof(id), "it-mq-mix-%ld-%d", (long)getpid(), i / 2);
		while ((rc = mq_publisher_publish(j->p, MQ_EXCHANGE_ORDERS, mix_key(i), id, "m", 1,
		                                  (unsigned)mix_flags(i), count_cb,
		                                  (void *)(intptr_t)i)) == ERR_TOO_BIG)
			sleep_ms(1);
		if (rc != ERR_OK)
			j->refused++;
	}
	return NULL;
}

static void test_mandatory(void **state)
{
	struct mq_publisher *p;
	pthread_t th[N_THREADS];
	struct pub_job jobs[N_THREADS];
	char id[MQ_ID_MAX];
	int64_t deadline;
	int base = N_MIX, wrong = 0;

	(void)state;
	snprintf(unroutable, sizeof(unroutable), "test.unroutable.%ld", (long)getpid());
	p = new_publisher(url, 0, 0);
	assert_non_null(p);
	assert_true(wait_connected(p, 15000));

	/* One at a time: returned, dropped silently, routed. */
	snprintf(id, sizeof(id), "it-mq-unroutable-%ld", (long)getpid());
	assert_int_equal(
	    mq_publish_sync(p, MQ_EXCHANGE_ORDERS, unroutable, id, "u", 1, MQ_PUBLISH_MANDATORY),
	    ERR_UNROUTABLE);
	assert_int_equal(mq_publish_sync(p, MQ_EXCHANGE_ORDERS, unroutable, id, "u", 1, 0), ERR_OK);
	assert_int_equal(
	    mq_publish_sync(p, MQ_EXCHANGE_ORDERS, key, id, "r", 1, MQ_PUBLISH_MANDATORY), ERR_OK);
	/* The publisher goes on normally after a return. */
	assert_int_equal(
	    mq_publish_sync(p, MQ_EXCHANGE_ORDERS, unroutable, id, "u", 1, MQ_PUBLISH_MANDATORY),
	    ERR_UNROUTABLE);
	/* A mandatory message needs an id; unknown flags are refused. */
	assert_int_equal(
	    mq_publish_sync(p, MQ_EXCHANGE_ORDERS, key, "", "r", 1, MQ_PUBLISH_MANDATORY),
	    ERR_INVALID);
	assert_int_equal(
	    mq_publish_sync(p, MQ_EXCHANGE_ORDERS, key, NULL, "r", 1, MQ_PUBLISH_MANDATORY),
	    ERR_INVALID);
	assert_int_equal(mq_publish_sync(p, MQ_EXCHANGE_ORDERS, key, id, "r", 1, 2), ERR_INVALID);

	/* Many in flight at once, returns and acks interleaved. */
	for (int i = 0; i < N_MIX + 2 * N_DUP; i++) {
		atomic_store(&calls[i], 0);
		atomic_store(&results[i], 1);
	}
	atomic_store(&done_count, 0);
	for (int t = 0; t < N_THREADS; t++) {
		jobs[t].p = p;
		jobs[t].first = t * (N_MIX / N_THREADS);
		jobs[t].count = N_MIX / N_THREADS;
		jobs[t].refused = 0;
		assert_int_equal(pthread_create(&th[t], NULL, mix_thread, &jobs[t]), 0);
	}
	/*
	 * Meanwhile the same id several times over, on both routes (callers
	 * must not, but it must not confuse the pairing): each unroutable one
	 * gets its own return.
	 */
	snprintf(id, sizeof(id), "it-mq-dup-%ld", (long)getpid());
	for (int k = 0; k < 2 * N_DUP; k++) {
		int i = base + k;
		int rc;

		while ((rc = mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, k % 2 ? unroutable : key,
		                                  id, "d", 1, MQ_PUBLISH_MANDATORY, count_cb,
		                                  (void *)(intptr_t)i)) == ERR_TOO_BIG)
			sleep_ms(1);
		assert_int_equal(rc, ERR_OK);
	}
	for (int t = 0; t < N_THREADS; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(jobs[t].refused, 0);
	}
	deadline = now_ms() + 60000;
	while (atomic_load(&done_count) < N_MIX + 2 * N_DUP && now_ms() < deadline)
		sleep_ms(1);
	mq_publisher_free(p);
	assert_int_equal(atomic_load(&done_count), N_MIX + 2 * N_DUP);
	for (int i = 0; i < N_MIX + 2 * N_DUP; i++) {
		int expected = i < base         ? mix_expected(i)
		               : (i - base) % 2 ? ERR_UNROUTABLE
		                                : ERR_OK;

		assert_int_equal(atomic_load(&calls[i]), 1);
		if (atomic_load(&results[i]) != expected) {
			fprintf(stderr, "it_mq: message %d: result %d, expected %d\n", i,
			        atomic_load(&results[i]), expected);
			wrong++;
		}
	}
	assert_int_equal(wrong, 0);
	printf("it_mq: %d mandatory/plain publishes mixed, %d returned as unroutable\n",
	       N_MIX + 2 * N_DUP, N_MIX / 4 + N_DUP);
	fflush(stdout);
}

/* ---- expiry before sending, encode failures ------------------------------- */

#define N_EXPIRY 24576
#define EXPIRY_BODY 1024
#define NO_CALL 1 /* no callback yet (results are 0 or negative) */

static atomic_int exp_calls[N_EXPIRY + 1];
static atomic_int exp_results[N_EXPIRY + 1];
static atomic_int exp_done;
static char watermark[64]; /* the broker's memory high watermark before the test */

static void exp_cb(void *arg, int result)
{
	int i = (int)(intptr_t)arg;

	atomic_store(&exp_results[i], result);
	atomic_fetch_add(&exp_calls[i], 1);
	atomic_fetch_add(&exp_done, 1);
}

static int restore_watermark(void **state)
{
	(void)state;
	return e2e_unblock_publishers(watermark) ? 0 : -1;
}

/* Wait up to ms for callback n of this test's messages; 1 when it came. */
static int wait_done(int n, int ms)
{
	int64_t end = now_ms() + ms;

	while (atomic_load(&exp_done) < n && now_ms() < end)
		sleep_ms(10);
	return atomic_load(&exp_done) >= n;
}

/*
 * take_ids - consume q until the message with id last has come (acking
 * all), then check that nothing follows it. delivered[i] counts message
 * "<prefix><i>" (i < n); a delivery of another id fails the test.
 */
static void take_ids(const char *q, const char *prefix, const char *last, int *delivered, int n)
{
	struct mq_consumer *c = mq_consumer_new(url, q, 500);
	struct mq_delivery d;
	int got_last = 0;

	assert_non_null(c);
	while (!got_last) {
		int i;

		assert_int_equal(mq_consumer_next(c, &d, 30000), ERR_OK);
		if (strcmp(d.message_id, last) == 0) {
			got_last = 1;
		} else {
			assert_true(strncmp(d.message_id, prefix, strlen(prefix)) == 0);
			i = atoi(d.message_id + strlen(prefix));
			assert_true(i >= 0 && i < n);
			delivered[i]++;
		}
		assert_int_equal(mq_consumer_ack(c, d.tag), ERR_OK);
		mq_delivery_release(&d);
	}
	/* The queue keeps publish order: whatever was sent before last came before it. */
	assert_int_equal(mq_consumer_next(c, &d, 500), ERR_TIMEOUT);
	mq_consumer_free(c);
}

/*
 * A message whose confirm timeout passes before any byte of it reached the
 * socket is never sent. A memory alarm makes the broker stop reading: of
 * N_EXPIRY messages (24 MiB, more than the loopback socket buffers take)
 * the first go to the socket, the rest wait in the publisher, in its
 * encoded batch or behind it. At the timeout those not sent get
 * ERR_TIMEOUT, while those sent wait on for their confirm. Once the broker
 * reads again, the sent ones are confirmed, a message published afterwards
 * is confirmed too (the expired ones took no delivery tag), and the queue
 * holds exactly the confirmed messages: not one that timed out.
 */
static void test_expired_never_sent(void **state)
{
	struct mq_publisher_options o = {
	    .url = url,
	    .confirm_timeout_ms = 3000,
	    .max_in_flight = N_EXPIRY + 10,
	    .declare_topology = 1,
	    .written_timeout_ms = 120000,
	};
	static int delivered[N_EXPIRY];
	static uint8_t body[EXPIRY_BODY];
	char q[80], id[MQ_ID_MAX], prefix[32], last[MQ_ID_MAX];
	int timed_out = 0, waiting = 0, confirmed = 0, other = 0, leaked = 0, lost = 0;
	int was_waiting[N_EXPIRY];
	struct mq_publisher *p;

	(void)state;
	memset(body, 'e', EXPIRY_BODY);
	own_queue(q, sizeof(q), "expiry", NULL, 0);
	snprintf(prefix, sizeof(prefix), "it-mq-exp-%ld-", (long)getpid());
	snprintf(last, sizeof(last), "%safter", prefix);
	for (int i = 0; i <= N_EXPIRY; i++) {
		atomic_store(&exp_calls[i], 0);
		atomic_store(&exp_results[i], NO_CALL);
	}
	atomic_store(&exp_done, 0);
	p = mq_publisher_new(&o);
	assert_non_null(p);
	assert_true(wait_connected(p, 15000));

	assert_true(e2e_block_publishers(watermark, sizeof(watermark)));
	for (int i = 0; i < N_EXPIRY; i++) {
		snprintf(id, sizeof(id), "%s%d", prefix, i);
		assert_int_equal(mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, q, id, body,
		                                      EXPIRY_BODY, MQ_PUBLISH_MANDATORY, exp_cb,
		                                      (void *)(intptr_t)i),
		                 ERR_OK);
	}
	/* The last one was never sent; once it has timed out, every one not
	 * sent has (they time out in hand-over order). */
	while (atomic_load(&exp_calls[N_EXPIRY - 1]) == 0)
		sleep_ms(20);
	assert_int_equal(atomic_load(&exp_results[N_EXPIRY - 1]), ERR_TIMEOUT);
	for (int i = 0; i < N_EXPIRY; i++) {
		int r = atomic_load(&exp_results[i]);

		was_waiting[i] = r == NO_CALL;
		timed_out += r == ERR_TIMEOUT;
		waiting += r == NO_CALL;
		other += r != ERR_TIMEOUT && r != NO_CALL && r != ERR_OK;
	}
	printf("it_mq: broker blocked: %d of %d messages timed out unsent, %d sent and waiting "
	       "past their timeout\n",
	       timed_out, N_EXPIRY, waiting);
	fflush(stdout);
	assert_int_equal(other, 0);
	assert_true(waiting > 0);
	assert_true(timed_out > 0);

	assert_true(e2e_unblock_publishers(watermark));
	assert_true(wait_done(N_EXPIRY, 120000));
	for (int i = 0; i < N_EXPIRY; i++) {
		int r = atomic_load(&exp_results[i]);

		assert_int_equal(atomic_load(&exp_calls[i]), 1);
		/* Those sent were confirmed; those that timed out stay so. */
		if (was_waiting[i])
			assert_int_equal(r, ERR_OK);
		else
			assert_true(r == ERR_OK || r == ERR_TIMEOUT);
		confirmed += r == ERR_OK;
	}
	assert_int_equal(confirmed + timed_out, N_EXPIRY);
	/* The channel's delivery tags still match the broker's. */
	assert_int_equal(mq_publish_sync(p, MQ_EXCHANGE_ORDERS, q, last, body, EXPIRY_BODY,
	                                 MQ_PUBLISH_MANDATORY),
	                 ERR_OK);
	mq_publisher_free(p);

	memset(delivered, 0, sizeof(delivered));
	take_ids(q, prefix, last, delivered, N_EXPIRY);
	for (int i = 0; i < N_EXPIRY; i++) {
		int r = atomic_load(&exp_results[i]);

		if (r == ERR_TIMEOUT && delivered[i])
			leaked++;
		if (r == ERR_OK && delivered[i] != 1)
			lost++;
	}
	printf("it_mq: after the block: %d confirmed and delivered once, %d timed out and "
	       "delivered, %d confirmed and not delivered once\n",
	       confirmed - lost, leaked, lost);
	fflush(stdout);
	drop_queue(q);
	assert_int_equal(leaked, 0);
	assert_int_equal(lost, 0);
}

/*
 * A message that cannot be encoded fails alone (ERR_INVALID; ERR_NOMEM when
 * memory ran out): the messages around it in the same batch are confirmed,
 * and arrive, on the same connection.
 */
static void test_encode_failure_alone(void **state)
{
	enum { N = 200, BAD = 100 };
	static int delivered[N];
	char q[80], id[MQ_ID_MAX], prefix[32], last[MQ_ID_MAX];
	struct mq_publisher *p;

	(void)state;
	own_queue(q, sizeof(q), "encode", NULL, 0);
	snprintf(prefix, sizeof(prefix), "it-mq-enc-%ld-", (long)getpid());
	snprintf(last, sizeof(last), "%slast", prefix);
	for (int i = 0; i < N; i++) {
		atomic_store(&exp_calls[i], 0);
		atomic_store(&exp_results[i], NO_CALL);
	}
	atomic_store(&exp_done, 0);
	p = new_publisher(url, 0, 0);
	assert_non_null(p);
	assert_true(wait_connected(p, 15000));
	assert_int_equal(mq__publisher_fail_encode(p, "", ERR_INVALID), ERR_INVALID);
	assert_int_equal(mq__publisher_fail_encode(p, "x", ERR_TIMEOUT), ERR_INVALID);
	snprintf(id, sizeof(id), "%s%d", prefix, BAD);
	assert_int_equal(mq__publisher_fail_encode(p, id, ERR_INVALID), ERR_OK);
	/* Handed over together, so that they share batches with the bad one. */
	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "%s%d", prefix, i);
		assert_int_equal(mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, q, id, "enc", 3,
		                                      MQ_PUBLISH_MANDATORY, exp_cb,
		                                      (void *)(intptr_t)i),
		                 ERR_OK);
	}
	assert_true(wait_done(N, 60000));
	for (int i = 0; i < N; i++) {
		assert_int_equal(atomic_load(&exp_calls[i]), 1);
		assert_int_equal(atomic_load(&exp_results[i]), i == BAD ? ERR_INVALID : ERR_OK);
	}
	snprintf(id, sizeof(id), "%snomem", prefix);
	assert_int_equal(mq__publisher_fail_encode(p, id, ERR_NOMEM), ERR_OK);
	assert_int_equal(
	    mq_publish_sync(p, MQ_EXCHANGE_ORDERS, q, id, "enc", 3, MQ_PUBLISH_MANDATORY),
	    ERR_NOMEM);
	/* Once only. */
	assert_int_equal(
	    mq_publish_sync(p, MQ_EXCHANGE_ORDERS, q, last, "enc", 3, MQ_PUBLISH_MANDATORY),
	    ERR_OK);
	mq_publisher_free(p);

	memset(delivered, 0, sizeof(delivered));
	take_ids(q, prefix, last, delivered, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(delivered[i], i == BAD ? 0 : 1);
	drop_queue(q);
}

/* ---- (4) no broker --------------------------------------------------------- */

/* cmocka is not thread-safe: count here, assert on the test's thread. */
static atomic_int never_calls;

static void never_cb(void *arg, int result)
{
	(void)arg;
	(void)result;
	atomic_fetch_add(&never_calls, 1);
}

/*
 * A list of URLs (the nodes of a cluster): the publisher and a consumer
 * connect to the first entry that accepts, here the second one, and work
 * there; a list in which no entry accepts gives no consumer, and one with
 * an entry that does not parse no publisher.
 */
static void test_url_list(void **state)
{
	char list[512], id[MQ_ID_MAX];
	struct mq_publisher *p;
	struct mq_consumer *c;
	struct mq_delivery d;
	int64_t deadline;
	int found = 0;

	(void)state;
	snprintf(list, sizeof(list), "%s,%s", BAD_URL, url);
	snprintf(id, sizeof(id), "it-mq-%ld-list", (long)getpid());
	p = new_publisher(list, 0, 0);
	assert_non_null(p);
	assert_true(wait_connected(p, 10000));
	assert_int_equal(mq_publish_sync(p, MQ_EXCHANGE_ORDERS, key, id, "list", 4, 0), ERR_OK);
	mq_publisher_free(p);

	c = mq_consumer_new(list, queue, 10);
	assert_non_null(c);
	deadline = now_ms() + 10000;
	while (!found && now_ms() < deadline) {
		int rc = mq_consumer_next(c, &d, 500);

		if (rc == ERR_TIMEOUT)
			continue;
		assert_int_equal(rc, ERR_OK);
		found = strcmp(d.message_id, id) == 0;
		assert_int_equal(mq_consumer_ack(c, d.tag), ERR_OK);
		mq_delivery_release(&d);
	}
	assert_true(found);
	mq_consumer_free(c);

	assert_null(mq_consumer_new(BAD_URL "," BAD_URL, queue, 10));
	snprintf(list, sizeof(list), "%s,not a url", url);
	assert_null(mq_publisher_new(&(struct mq_publisher_options){.url = list}));
}

static void test_unavailable(void **state)
{
	struct mq_publisher *p;
	int64_t t0;
	long m, c;

	(void)state;
	p = new_publisher(BAD_URL, 0, 100);
	assert_non_null(p);
	t0 = now_ms();
	assert_int_equal(
	    mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, key, "x", "x", 1, 0, never_cb, NULL),
	    ERR_UNAVAILABLE);
	assert_true(now_ms() - t0 < 50);
	sleep_ms(400); /* a few reconnect attempts */
	assert_int_equal(mq_publisher_connected(p), 0);
	t0 = now_ms();
	for (int i = 0; i < 1000; i++)
		assert_int_equal(mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, key, "x", "x", 1, 0,
		                                      never_cb, NULL),
		                 ERR_UNAVAILABLE);
	assert_true(now_ms() - t0 < 50);
	assert_int_equal(mq_publish_sync(p, MQ_EXCHANGE_ORDERS, key, "x", "x", 1, 0),
	                 ERR_UNAVAILABLE);
	assert_int_equal(mq_publisher_queue_stats(p, 0, &m, &c), ERR_NOT_FOUND);
	t0 = now_ms();
	mq_publisher_free(p);
	assert_true(now_ms() - t0 < 1000);
	mq_publisher_free(NULL);
	assert_int_equal(atomic_load(&never_calls), 0);

	assert_null(mq_consumer_new(BAD_URL, queue, 10));
	assert_null(mq_publisher_new(&(struct mq_publisher_options){.url = "not a url"}));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_topology_idempotent),
	    cmocka_unit_test(test_publish_concurrent),
	    cmocka_unit_test(test_consume_roundtrip),
	    cmocka_unit_test(test_publish_sizes),
	    cmocka_unit_test(test_redelivery_count),
	    cmocka_unit_test(test_ack_upto),
	    cmocka_unit_test(test_nacked),
	    cmocka_unit_test(test_channel_loss_reconnects),
	    cmocka_unit_test(test_queue_stats),
	    cmocka_unit_test(test_max_in_flight),
	    cmocka_unit_test(test_free_with_pending),
	    cmocka_unit_test(test_stop_then_free),
	    cmocka_unit_test(test_mandatory),
	    cmocka_unit_test_teardown(test_expired_never_sent, restore_watermark),
	    cmocka_unit_test(test_encode_failure_alone),
	    cmocka_unit_test(test_url_list),
	    cmocka_unit_test(test_unavailable),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
