/* publisher.c: orders-bench-publisher, the bare pipelined-confirm publisher the API's accept rate
 * is held against. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/time.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <jansson.h>
#include <sodium.h>

#include "err.h"
#include "log.h"
#include "mq.h"
#include "mq_admin.h"
#include "util.h"

#define MAX_COUNT 100000000L
#define MAX_SIZE (256 * 1024)
#define MAX_WINDOW 100000
#define CONFIRM_TIMEOUT_MS 30000
#define CONNECT_WAIT_S 15.0
/* Messages --size-from looks at: enough for a mean, few enough to be quick. */
#define SIZE_SAMPLES 32

struct options {
	long count;
	long size;
	int window;
	const char *queue;       /* scratch queue to declare, bind and delete */
	const char *routing_key; /* publish with this key; declare nothing */
	const char *size_from;   /* take the size from this queue's messages */
	int samples;             /* how many it looked at */
	int keep;
	const char *json_path;
};

/* What the confirm callbacks (the publisher's thread) and the main thread share. */
struct flight {
	pthread_mutex_t lock;
	pthread_cond_t room;
	long in_flight;
	long confirmed;
	long failed;
	int first_error;
	double last_confirm;
};

static void on_confirm(void *arg, int result)
{
	struct flight *f = arg;

	pthread_mutex_lock(&f->lock);
	f->in_flight--;
	if (result == ERR_OK) {
		f->confirmed++;
	} else {
		if (!f->failed)
			f->first_error = result;
		f->failed++;
	}
	f->last_confirm = util_now();
	pthread_cond_signal(&f->room);
	pthread_mutex_unlock(&f->lock);
}

/* ---- the scratch queue ------------------------------------------------------ */

static int reply_ok(amqp_connection_state_t conn, const char *what)
{
	amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);

	if (r.reply_type == AMQP_RESPONSE_NORMAL)
		return 1;
	fprintf(stderr, "orders-bench-publisher: %s failed (reply type %d)\n", what,
	        (int)r.reply_type);
	return 0;
}

static amqp_table_entry_t str_entry(const char *key, const char *value)
{
	amqp_table_entry_t e;

	e.key = amqp_cstring_bytes(key);
	e.value.kind = AMQP_FIELD_KIND_UTF8;
	e.value.value.bytes = amqp_cstring_bytes(value);
	return e;
}

/*
 * Declare the scratch queue with the work queues' arguments (lib/mq.c's
 * declare_steps: quorum, delivery limit, dead-lettering at least once,
 * reject-publish on overflow) and bind it to the orders exchange under its own
 * name; or delete it (and whatever it holds).
 */
static int scratch_queue(const char *url, const char *queue, int delete)
{
	char buf[512];
	struct amqp_connection_info info;
	amqp_connection_state_t conn = amqp_new_connection();
	amqp_socket_t *sock = conn ? amqp_tcp_socket_new(conn) : NULL;
	amqp_table_entry_t args[6];
	amqp_table_t table = {6, args};
	struct timeval rpc_tv = {30, 0};
	int ok = 0;

	snprintf(buf, sizeof(buf), "%s", url);
	amqp_default_connection_info(&info);
	if (!sock || amqp_parse_url(buf, &info) != AMQP_STATUS_OK ||
	    amqp_socket_open(sock, info.host, info.port) != AMQP_STATUS_OK) {
		fprintf(stderr, "orders-bench-publisher: cannot connect to the broker\n");
		goto out;
	}
	/* As lib/mq reads it: "amqp://host:port/" means the default vhost. */
	if (!info.vhost || !info.vhost[0])
		info.vhost = "/";
	amqp_set_rpc_timeout(conn, &rpc_tv);
	if (amqp_login(conn, info.vhost, 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN,
	               info.user, info.password)
	        .reply_type != AMQP_RESPONSE_NORMAL) {
		fprintf(stderr, "orders-bench-publisher: the broker refused the login\n");
		goto out;
	}
	amqp_channel_open(conn, 1);
	if (!reply_ok(conn, "channel.open"))
		goto out;
	if (delete) {
		amqp_queue_delete(conn, 1, amqp_cstring_bytes(queue), 0, 0);
		ok = reply_ok(conn, "queue.delete");
		goto out;
	}
	args[0] = str_entry("x-queue-type", "quorum");
	args[1].key = amqp_cstring_bytes("x-delivery-limit");
	args[1].value.kind = AMQP_FIELD_KIND_I64;
	args[1].value.value.i64 = MQ_DELIVERY_LIMIT;
	args[2] = str_entry("x-dead-letter-exchange", MQ_EXCHANGE_DLX);
	args[3] = str_entry("x-dead-letter-routing-key", queue);
	args[4] = str_entry("x-dead-letter-strategy", "at-least-once");
	args[5] = str_entry("x-overflow", "reject-publish");
	amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, table);
	if (!reply_ok(conn, "queue.declare"))
		goto out;
	amqp_queue_bind(conn, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(MQ_EXCHANGE_ORDERS),
	                amqp_cstring_bytes(queue), amqp_empty_table);
	ok = reply_ok(conn, "queue.bind");
out:
	if (conn) {
		if (sock)
			amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
		amqp_destroy_connection(conn);
	}
	return ok ? 0 : -1;
}

/*
 * The mean body size of the first ready messages of queue (the API's own
 * checkout.requested messages, say, while orders-inventory is stopped). They
 * are taken without an ack and put back, so nothing is lost; a quorum queue
 * counts that as one delivery of each.
 */
static int measure_size(const char *url, struct options *o)
{
	struct mq_message m[SIZE_SAMPLES];
	char reason[MQ_ADMIN_REASON_MAX];
	struct mq_admin *a = mq_admin_new(url, reason, sizeof(reason));
	long total = 0;
	int n = 0;

	if (!a) {
		fprintf(stderr, "orders-bench-publisher: cannot connect to the broker: %s\n",
		        reason);
		return -1;
	}
	memset(m, 0, sizeof(m));
	while (n < SIZE_SAMPLES && mq_admin_get(a, o->size_from, &m[n]) == ERR_OK) {
		total += (long)m[n].len;
		n++;
	}
	mq_admin_requeue_all(a);
	for (int k = 0; k < n; k++)
		mq_message_release(&m[k]);
	mq_admin_free(a);
	if (n == 0) {
		fprintf(stderr, "orders-bench-publisher: queue '%s' has no message to measure\n",
		        o->size_from);
		return -1;
	}
	o->size = (total + n / 2) / n;
	o->samples = n;
	fprintf(stderr, "orders-bench-publisher: %d messages of %s: %ld bytes on average\n", n,
	        o->size_from, o->size);
	return 0;
}

/* ---- the run ------------------------------------------------------------------ */

/* Publish count messages, at most window unconfirmed; 0, or -1 when it could not run. */
static int publish_all(const struct options *o, struct mq_publisher *p, const char *key,
                       struct flight *f, double *elapsed)
{
	uint8_t *body = malloc((size_t)o->size);
	char id[64];
	double t0, last;
	long sent = 0, last_confirmed = 0, refused = 0;

	if (!body)
		return -1;
	/* Random bytes: nothing along the way can compress them. */
	randombytes_buf(body, (size_t)o->size);
	t0 = util_now();
	last = t0;
	while (sent < o->count) {
		int rc;

		pthread_mutex_lock(&f->lock);
		while (f->in_flight >= o->window)
			pthread_cond_wait(&f->room, &f->lock);
		f->in_flight++;
		pthread_mutex_unlock(&f->lock);
		snprintf(id, sizeof(id), "bench-pub-%ld-%ld", (long)getpid(), sent);
		rc = mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, key, id, body, (size_t)o->size,
		                          MQ_PUBLISH_MANDATORY, on_confirm, f);
		if (rc != ERR_OK) {
			pthread_mutex_lock(&f->lock);
			f->in_flight--;
			pthread_mutex_unlock(&f->lock);
			/* Disconnected or full for 30 s in all: the broker is gone. */
			if ((rc != ERR_TOO_BIG && rc != ERR_UNAVAILABLE) || ++refused > 30000) {
				fprintf(stderr, "orders-bench-publisher: cannot publish: %s\n",
				        err_str(rc));
				free(body);
				return -1;
			}
			util_sleep(0.001);
			continue;
		}
		sent++;
		if (util_now() - last >= 1.0) {
			long c;

			last += 1.0;
			pthread_mutex_lock(&f->lock);
			c = f->confirmed;
			pthread_mutex_unlock(&f->lock);
			fprintf(stderr, "orders-bench-publisher: %4.0fs confirmed %ld (%ld/s)\n",
			        last - t0, c, c - last_confirmed);
			last_confirmed = c;
		}
	}
	pthread_mutex_lock(&f->lock);
	while (f->in_flight > 0)
		pthread_cond_wait(&f->room, &f->lock);
	*elapsed = f->last_confirm - t0;
	pthread_mutex_unlock(&f->lock);
	free(body);
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: orders-bench-publisher [options]\n"
	        "Publishes persistent, mandatory messages of random bytes to exchange '%s'\n"
	        "through lib/mq's pipelined-confirm publisher (the API's own), keeping many\n"
	        "unconfirmed at once, and reports confirmed messages per second.\n"
	        "$ORDERS_AMQP_URL names the broker.\n"
	        "\n"
	        "  -n, --count N        messages (default 100000)\n"
	        "  -s, --size BYTES     message body size (default 700)\n"
	        "  -S, --size-from Q    the mean size of the first ready messages of queue Q\n"
	        "                       (taken without an ack and put back)\n"
	        "  -w, --in-flight N    unconfirmed messages at most (default 2000)\n"
	        "  -q, --queue NAME     scratch quorum queue, declared with the work queues'\n"
	        "                       arguments and bound under its own name, deleted at\n"
	        "                       the end (default bench.publisher)\n"
	        "  -K, --keep           do not delete the scratch queue\n"
	        "  -k, --routing-key K  publish with routing key K instead, declaring nothing\n"
	        "                       (e.g. %s with orders-inventory stopped)\n"
	        "  -j, --json FILE      write the summary as JSON\n",
	        MQ_EXCHANGE_ORDERS, MQ_KEY_CHECKOUT_REQUESTED);
}

static int parse_options(struct options *o, int argc, char **argv)
{
	static const struct option longs[] = {
	    {"count", required_argument, NULL, 'n'},
	    {"size", required_argument, NULL, 's'},
	    {"in-flight", required_argument, NULL, 'w'},
	    {"queue", required_argument, NULL, 'q'},
	    {"keep", no_argument, NULL, 'K'},
	    {"routing-key", required_argument, NULL, 'k'},
	    {"json", required_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char *end;
	long v;
	int opt;

	memset(o, 0, sizeof(*o));
	o->count = 100000;
	o->size = 700;
	o->window = 2000;
	o->queue = "bench.publisher";
	while ((opt = getopt_long(argc, argv, "n:s:S:w:q:Kk:j:h", longs, NULL)) != -1) {
		if (strchr("nsw", opt)) {
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || v < 1 ||
			    v > (opt == 'n'   ? MAX_COUNT
			         : opt == 's' ? MAX_SIZE
			                      : MAX_WINDOW)) {
				fprintf(stderr, "orders-bench-publisher: bad value for -%c: '%s'\n",
				        opt, optarg);
				return -1;
			}
			if (opt == 'n')
				o->count = v;
			else if (opt == 's')
				o->size = v;
			else
				o->window = (int)v;
			continue;
		}
		switch (opt) {
		case 'q':
			o->queue = optarg;
			break;
		case 'K':
			o->keep = 1;
			break;
		case 'S':
			o->size_from = optarg;
			break;
		case 'k':
			o->routing_key = optarg;
			break;
		case 'j':
			o->json_path = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc || strlen(o->queue) >= MQ_KEY_MAX ||
	    (o->routing_key && strlen(o->routing_key) >= MQ_KEY_MAX)) {
		usage(stderr);
		return -1;
	}
	return 0;
}

static int report(const struct options *o, const char *key, const struct flight *f, double elapsed)
{
	double rate = elapsed > 0 ? (double)f->confirmed / elapsed : 0;
	json_t *j;
	int rc = 0;

	printf("orders-bench-publisher: %ld messages of %ld bytes to %s/%s, %d in flight: "
	       "%ld confirmed in %.2f s, %.0f msgs/s; %ld failed%s%s\n",
	       o->count, o->size, MQ_EXCHANGE_ORDERS, key, o->window, f->confirmed, elapsed, rate,
	       f->failed, f->failed ? ", first: " : "", f->failed ? err_str(f->first_error) : "");
	if (!o->json_path)
		return 0;
	j = json_pack("{s:s, s:I, s:I, s:i, s:s, s:s, s:s, s:I, s:I, s:f, s:f}", "tool",
	              "orders-bench-publisher", "count", (json_int_t)o->count, "size",
	              (json_int_t)o->size, "in_flight", o->window, "exchange", MQ_EXCHANGE_ORDERS,
	              "routing_key", key, "queue", o->routing_key ? "(bound to the key)" : o->queue,
	              "confirmed", (json_int_t)f->confirmed, "failed", (json_int_t)f->failed,
	              "duration_s", elapsed, "msgs_per_s", rate);
	if (j && o->size_from) {
		json_object_set_new(j, "size_from", json_string(o->size_from));
		json_object_set_new(j, "size_samples", json_integer(o->samples));
	}
	if (!j || json_dump_file(j, o->json_path, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
		fprintf(stderr, "orders-bench-publisher: cannot write '%s'\n", o->json_path);
		rc = -1;
	}
	json_decref(j);
	return rc;
}

int main(int argc, char **argv)
{
	static struct flight f = {
	    PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0};
	struct mq_publisher_options popt;
	struct mq_publisher *p = NULL;
	struct options o;
	const char *url = getenv("ORDERS_AMQP_URL"), *key;
	double elapsed = 0, start;
	int declared = 0, rc = 1;

	if (parse_options(&o, argc, argv) != 0)
		return 2;
	if (!url || !*url) {
		fprintf(stderr, "orders-bench-publisher: ORDERS_AMQP_URL is not set\n");
		return 2;
	}
	if (sodium_init() < 0)
		return 1;
	/* The publisher's own log lines go to stderr, away from the summary. */
	log_init("orders-bench-publisher", LOG_WARN);
	log_set_fd(2);
	key = o.routing_key ? o.routing_key : o.queue;
	if (o.size_from && measure_size(url, &o) != 0)
		goto out;
	if (!o.routing_key) {
		if (scratch_queue(url, o.queue, 0) != 0)
			goto out;
		declared = 1;
	}
	memset(&popt, 0, sizeof(popt));
	popt.url = url;
	popt.confirm_timeout_ms = CONFIRM_TIMEOUT_MS;
	/* Above the window, so that the window alone holds messages back. */
	popt.max_in_flight = o.window + 1000;
	p = mq_publisher_new(&popt);
	if (!p)
		goto out;
	start = util_now();
	while (!mq_publisher_connected(p) && util_now() - start < CONNECT_WAIT_S)
		util_sleep(0.05);
	if (!mq_publisher_connected(p)) {
		fprintf(stderr, "orders-bench-publisher: not connected after %.0f s\n",
		        CONNECT_WAIT_S);
		goto out;
	}
	if (publish_all(&o, p, key, &f, &elapsed) != 0)
		goto out;
	rc = report(&o, key, &f, elapsed) == 0 && f.failed == 0 ? 0 : 1;
out:
	mq_publisher_free(p);
	if (declared && !o.keep && scratch_queue(url, o.queue, 1) != 0)
		rc = 1;
	return rc;
}
