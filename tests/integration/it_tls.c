/*
 * it_tls.c: lib/mq over amqps:// (alone and in URL lists) and lib/db with sslmode=verify-full
 * against the local stack's TLS listeners (deploy/local/services.sh: its own CA in
 * ORDERS_LOCAL_TLS_DIR, RabbitMQ's TLS port in ORDERS_LOCAL_AMQPS_URL, PostgreSQL with ssl = on).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "e2e.h"
#include "err.h"
#include "mq.h"
#include "mq_admin.h"

#define N_BURST 3000
#define BURST_BODY 4096

static const char *tls_dir;
static const char *amqps_url; /* amqps://guest:guest@127.0.0.1:<port>/ */
static char ca[512];          /* the stack's CA */
static char work[64];         /* mkdtemp: the other CA, client certificates */
static char queue[64];        /* test.tls.<pid>, bound to "orders" with its own key */
static amqp_connection_state_t raw;

/* A certificate "<name>.pem"/"<name>.key" in work, signed by the CA <ca_pem>/<ca_key>. */
static int make_cert(const char *name, const char *ca_pem, const char *ca_key, const char *ext)
{
	return e2e_sh("cd %s && printf '%%s\\n' '%s' >%s.ext && "
	              "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	              "-keyout %s.key -out %s.csr -subj /CN=%s 2>/dev/null && "
	              "openssl x509 -req -in %s.csr -CA %s -CAkey %s -CAcreateserial -days 2 "
	              "-extfile %s.ext -out %s.pem 2>/dev/null",
	              work, ext, name, name, name, name, name, ca_pem, ca_key, name, name);
}

static int group_setup(void **state)
{
	amqp_table_entry_t args[1];
	amqp_table_t table = {1, args};
	char ca_key[600];

	(void)state;
	tls_dir = getenv("ORDERS_LOCAL_TLS_DIR");
	amqps_url = getenv("ORDERS_LOCAL_AMQPS_URL");
	if (!tls_dir || !*tls_dir || !amqps_url || !*amqps_url) {
		fprintf(stderr, "it_tls: ORDERS_LOCAL_TLS_DIR and ORDERS_LOCAL_AMQPS_URL are not "
		                "set (. .local/env after make up)\n");
		return -1;
	}
	snprintf(ca, sizeof(ca), "%s/ca.pem", tls_dir);
	snprintf(ca_key, sizeof(ca_key), "%s/ca.key", tls_dir);
	if (!e2e_mkdtemp("it_tls", work, sizeof(work)))
		return -1;
	/* Another CA, a client certificate from each CA. */
	if (!e2e_sh("cd %s && openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	            "-nodes -keyout other-ca.key -out other-ca.pem -days 2 -subj '/CN=other CA' "
	            "2>/dev/null",
	            work) ||
	    !make_cert("client", ca, ca_key, "extendedKeyUsage=clientAuth") ||
	    !make_cert("stranger", "other-ca.pem", "other-ca.key", "extendedKeyUsage=clientAuth")) {
		fprintf(stderr, "it_tls: openssl cannot make the test certificates\n");
		return -1;
	}
	/* The queue is set up over the plain listener: only what is tested speaks TLS. */
	raw = e2e_amqp_connect();
	if (!raw || mq_declare_topology(raw, 2) != ERR_OK)
		return -1;
	snprintf(queue, sizeof(queue), "test.tls.%ld", (long)getpid());
	args[0].key = amqp_cstring_bytes("x-expires");
	args[0].value.kind = AMQP_FIELD_KIND_I64;
	args[0].value.value.i64 = 600000;
	amqp_queue_declare(raw, E2E_AMQP_CHANNEL, amqp_cstring_bytes(queue), 0, 1, 0, 0, table);
	if (!e2e_amqp_ok(raw, "queue.declare"))
		return -1;
	amqp_queue_bind(raw, E2E_AMQP_CHANNEL, amqp_cstring_bytes(queue),
	                amqp_cstring_bytes(MQ_EXCHANGE_ORDERS), amqp_cstring_bytes(queue),
	                amqp_empty_table);
	return e2e_amqp_ok(raw, "queue.bind") ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	if (raw) {
		amqp_queue_delete(raw, E2E_AMQP_CHANNEL, amqp_cstring_bytes(queue), 0, 0);
		e2e_amqp_close(raw);
	}
	if (work[0])
		e2e_sh("rm -rf %s", work);
	return 0;
}

/* mq_tls_configure with the stack's CA and, when name is given, work/<name>.pem as client. */
static int configure(const char *ca_file, const char *client)
{
	char cert[128] = "", key[128] = "", reason[256] = "";
	int rc;

	if (client) {
		snprintf(cert, sizeof(cert), "%s/%s.pem", work, client);
		snprintf(key, sizeof(key), "%s/%s.key", work, client);
	}
	rc = mq_tls_configure(&(struct mq_tls_options){ca_file, cert, key}, reason, sizeof(reason));
	if (rc)
		fprintf(stderr, "it_tls: mq_tls_configure: %s\n", reason);
	return rc;
}

/* The URL with another host (same port and credentials). */
static void with_host(char *out, size_t size, const char *host)
{
	const char *at = strrchr(amqps_url, '@'), *colon = at ? strchr(at, ':') : NULL;

	assert_non_null(colon);
	snprintf(out, size, "%.*s@%s%s", (int)(at - amqps_url), amqps_url, host, colon);
}

static void body_of(uint8_t *b, size_t len, size_t seed)
{
	for (size_t k = 0; k < len; k++)
		b[k] = (uint8_t)((seed * 131 + k * 7 + (k >> 9)) & 0xff);
}

static atomic_int burst_ok, burst_done;

static void burst_cb(void *arg, int result)
{
	(void)arg;
	if (result == ERR_OK)
		atomic_fetch_add(&burst_ok, 1);
	atomic_fetch_add(&burst_done, 1);
}

/* Consume want messages from the queue over url; each body must be body_of(len, seed). */
static void consume_all(const char *url, int want)
{
	struct mq_consumer *c = mq_consumer_new(url, queue, 200);
	uint8_t *expect = malloc(1024 * 1024);
	int got = 0;

	assert_non_null(c);
	assert_non_null(expect);
	while (got < want) {
		struct mq_delivery d;
		size_t seed, len;

		assert_int_equal(mq_consumer_next(c, &d, 15000), ERR_OK);
		assert_int_equal(sscanf(d.message_id, "tls-%zu-%zu", &seed, &len), 2);
		assert_int_equal(d.len, len);
		body_of(expect, len, seed);
		if (len)
			assert_memory_equal(d.body, expect, len);
		assert_int_equal(mq_consumer_ack(c, d.tag), ERR_OK);
		mq_delivery_release(&d);
		got++;
	}
	mq_consumer_free(c);
	free(expect);
}

/* A publisher over amqps trusting the stack's CA, with the burst counters at 0. */
static struct mq_publisher *burst_publisher(void)
{
	struct mq_publisher *p;

	assert_int_equal(configure(ca, NULL), ERR_OK);
	p = e2e_publisher_connect(amqps_url, "it_tls");
	assert_non_null(p);
	atomic_store(&burst_ok, 0);
	atomic_store(&burst_done, 0);
	return p;
}

/*
 * The publisher writes the frames it encodes itself through the TLS session:
 * a burst of many messages in flight (batches of 128 KiB, more than the
 * socket takes at once, so that SSL_write is resumed), then bodies of no
 * bytes, of one frame, of one frame and a byte, and of many frames. The
 * consumer reads them back over TLS, every byte as sent.
 */
static void test_publish_consume(void **state)
{
	static const size_t sizes[] = {0, 1, 131064, 131065, 300000, 1024 * 1024};
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	uint8_t *body = malloc(1024 * 1024);
	struct mq_publisher *p;
	char id[MQ_ID_MAX];

	(void)state;
	assert_non_null(body);
	p = burst_publisher();
	for (size_t i = 0; i < N_BURST; i++) {
		snprintf(id, sizeof(id), "tls-%zu-%d", i, BURST_BODY);
		body_of(body, BURST_BODY, i);
		assert_int_equal(mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, queue, id, body,
		                                      BURST_BODY, MQ_PUBLISH_MANDATORY, burst_cb,
		                                      NULL),
		                 ERR_OK);
	}
	for (int w = 0; w < 600 && atomic_load(&burst_done) < N_BURST; w++)
		usleep(50000);
	assert_int_equal(atomic_load(&burst_ok), N_BURST);
	for (size_t i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "tls-%zu-%zu", N_BURST + i, sizes[i]);
		body_of(body, sizes[i], N_BURST + i);
		assert_int_equal(mq_publish_sync(p, MQ_EXCHANGE_ORDERS, queue, id, body, sizes[i],
		                                 MQ_PUBLISH_MANDATORY),
		                 ERR_OK);
	}
	mq_publisher_free(p);
	free(body);
	consume_all(amqps_url, N_BURST + N);
}

static char watermark[64]; /* the broker's memory high watermark before the test */

static int restore_watermark(void **state)
{
	(void)state;
	return e2e_unblock_publishers(watermark) ? 0 : -1;
}

/*
 * A broker that stops reading (a memory alarm: a watermark of 0 blocks every
 * publisher) fills the socket: SSL_write cannot finish and is resumed with
 * the same bytes once the broker reads again. Every message is confirmed and
 * arrives whole; meanwhile the publisher's thread is not stuck in a write.
 */
static void test_publish_while_blocked(void **state)
{
	enum { N = 96, SIZE = 256 * 1024 };
	uint8_t *body = malloc(SIZE);
	struct mq_publisher *p;
	char id[MQ_ID_MAX];

	(void)state;
	assert_non_null(body);
	p = burst_publisher();
	assert_true(e2e_block_publishers(watermark, sizeof(watermark)));
	for (size_t i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "tls-%zu-%d", 10000 + i, SIZE);
		body_of(body, SIZE, 10000 + i);
		assert_int_equal(mq_publisher_publish(p, MQ_EXCHANGE_ORDERS, queue, id, body, SIZE,
		                                      MQ_PUBLISH_MANDATORY, burst_cb, NULL),
		                 ERR_OK);
	}
	/* 24 MiB is more than the loopback socket buffers hold. */
	sleep(2);
	assert_true(atomic_load(&burst_done) < N);
	assert_int_equal(restore_watermark(NULL), 0);
	for (int w = 0; w < 600 && atomic_load(&burst_done) < N; w++)
		usleep(50000);
	assert_int_equal(atomic_load(&burst_ok), N);
	mq_publisher_free(p);
	free(body);
	consume_all(amqps_url, N);
}

/* The certificate names localhost and 127.0.0.1; "127.1" is 127.0.0.1 under another name. */
static void test_host_names(void **state)
{
	char url[256], reason[256] = "";
	struct mq_admin *a;

	(void)state;
	assert_int_equal(configure(ca, NULL), ERR_OK);
	with_host(url, sizeof(url), "localhost");
	a = mq_admin_new(url, reason, sizeof(reason));
	assert_non_null(a);
	mq_admin_free(a);
	with_host(url, sizeof(url), "127.1");
	assert_null(mq_admin_new(url, reason, sizeof(reason)));
	if (!strstr(reason, "certificate verification failed") || !strstr(reason, "mismatch"))
		fail_msg("a wrong host name failed for another reason: %s", reason);
}

/* A broker whose certificate another CA signed is refused: consumer, publisher, tools. */
static void test_wrong_ca(void **state)
{
	char other[128], reason[256] = "";
	struct mq_publisher *p;

	(void)state;
	snprintf(other, sizeof(other), "%s/other-ca.pem", work);
	assert_int_equal(configure(other, NULL), ERR_OK);
	assert_null(mq_admin_new(amqps_url, reason, sizeof(reason)));
	if (!strstr(reason, "certificate verification failed"))
		fail_msg("refused for another reason: %s", reason);
	assert_null(mq_consumer_new(amqps_url, queue, 10));
	p = mq_publisher_new(&(struct mq_publisher_options){.url = amqps_url});
	assert_non_null(p);
	usleep(1500000);
	assert_false(mq_publisher_connected(p));
	mq_publisher_free(p);
	/* Without a CA file the system's trust store is used: it knows no local CA either. */
	assert_int_equal(configure(NULL, NULL), ERR_OK);
	assert_null(mq_admin_new(amqps_url, reason, sizeof(reason)));
	assert_non_null(strstr(reason, "certificate verification failed"));
	assert_int_equal(configure(ca, NULL), ERR_OK);
}

/*
 * The broker verifies client certificates it is shown (verify_peer): one from
 * its CA is taken, one from another CA ends the handshake. So the certificate
 * is really sent.
 */
static void test_client_certificate(void **state)
{
	char reason[256] = "";
	struct mq_admin *a;

	(void)state;
	assert_int_equal(configure(ca, "client"), ERR_OK);
	a = mq_admin_new(amqps_url, reason, sizeof(reason));
	if (!a)
		fail_msg("a client certificate from the broker's CA was refused: %s", reason);
	mq_admin_free(a);
	assert_int_equal(configure(ca, "stranger"), ERR_OK);
	assert_null(mq_admin_new(amqps_url, reason, sizeof(reason)));
	/* A certificate with another certificate's key is refused before any connection. */
	{
		char cert[128], key[128];

		snprintf(cert, sizeof(cert), "%s/client.pem", work);
		snprintf(key, sizeof(key), "%s/stranger.key", work);
		assert_int_equal(mq_tls_configure(&(struct mq_tls_options){ca, cert, key}, reason,
		                                  sizeof(reason)),
		                 ERR_INVALID);
		assert_non_null(strstr(reason, "does not belong"));
	}
	assert_int_equal(configure(ca, NULL), ERR_OK);
}

/* PostgreSQL: what pg_stat_ssl says about this session; NULL when db is NULL. */
static char *session_tls(const char *dsn)
{
	struct db *d = db_new(dsn);
	PGresult *res = NULL;
	char *out;

	if (!d)
		return NULL;
	assert_int_equal(db_exec(d,
	                         "SELECT ssl::text || ' ' || coalesce(version, '') FROM pg_stat_ssl"
	                         " WHERE pid = pg_backend_pid()",
	                         0, NULL, &res),
	                 ERR_OK);
	assert_int_equal(PQntuples(res), 1);
	out = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	db_free(d);
	return out;
}

static void expect_tls_session(const char *dsn)
{
	char *s = session_tls(dsn);

	if (!s)
		fail_msg("cannot connect with '%s'", dsn);
	if (strcmp(s, "true TLSv1.3") != 0 && strcmp(s, "true TLSv1.2") != 0)
		fail_msg("'%s' gave a session that is not TLS 1.2+: '%s'", dsn, s);
	free(s);
}

/*
 * A broker URL list (failover between a cluster's nodes) may mix amqp:// and
 * amqps:// entries: each connects as its own scheme says. A node that is down
 * and one whose certificate does not name it are both passed over, and named
 * in the reason when no entry is left; the amqps:// one after them carries a
 * publisher's message and a consumer's delivery.
 */
static void test_url_list(void **state)
{
	char bad_name[256], list[1024], reason[512] = "", id[MQ_ID_MAX];
	uint8_t body[64];
	struct mq_publisher *p;
	struct mq_admin *a;

	(void)state;
	assert_int_equal(configure(ca, NULL), ERR_OK);
	with_host(bad_name, sizeof(bad_name), "127.1");
	snprintf(list, sizeof(list), "amqp://guest:guest@127.0.0.1:1/,%s", bad_name);
	assert_null(mq_admin_new(list, reason, sizeof(reason)));
	if (!strstr(reason, "127.0.0.1:1: ") || !strstr(reason, "127.1:") ||
	    !strstr(reason, "certificate verification failed"))
		fail_msg("the reason does not name each entry's failure: %s", reason);
	snprintf(list + strlen(list), sizeof(list) - strlen(list), ",%s", amqps_url);
	a = mq_admin_new(list, reason, sizeof(reason));
	if (!a)
		fail_msg("the list's amqps:// entry was not taken: %s", reason);
	mq_admin_free(a);
	p = e2e_publisher_connect(list, "it_tls");
	assert_non_null(p);
	snprintf(id, sizeof(id), "tls-%d-%zu", 20000, sizeof(body));
	body_of(body, sizeof(body), 20000);
	assert_int_equal(mq_publish_sync(p, MQ_EXCHANGE_ORDERS, queue, id, body, sizeof(body),
	                                 MQ_PUBLISH_MANDATORY),
	                 ERR_OK);
	mq_publisher_free(p);
	consume_all(list, 1);
}

/*
 * sslmode=verify-full checks the server's chain against sslrootcert and its
 * name; pg_stat_ssl shows the session as TLS. Both DSN forms, both names of
 * the server; another CA is refused.
 */
static void test_postgresql_verify_full(void **state)
{
	const char *env = getenv("ORDERS_PG_DSN"), *p;
	char dsn[1024], *s;
	int port;

	(void)state;
	assert_non_null(env);
	p = strrchr(env, ':');
	assert_non_null(p);
	port = atoi(p + 1);
	snprintf(dsn, sizeof(dsn),
	         "postgresql://orders@127.0.0.1:%d/orders?sslmode=verify-full&sslrootcert=%s", port,
	         ca);
	expect_tls_session(dsn);
	snprintf(dsn, sizeof(dsn),
	         "host=localhost port=%d user=orders dbname=orders sslmode=verify-full "
	         "sslrootcert=%s",
	         port, ca);
	expect_tls_session(dsn);
	snprintf(dsn, sizeof(dsn),
	         "postgresql://orders@127.0.0.1:%d/orders?sslmode=verify-full&sslrootcert=%s/"
	         "other-ca.pem",
	         port, work);
	assert_null(session_tls(dsn));
	/* sslmode=disable still works: the server takes both. */
	snprintf(dsn, sizeof(dsn), "postgresql://orders@127.0.0.1:%d/orders?sslmode=disable", port);
	s = session_tls(dsn);
	assert_non_null(s);
	assert_string_equal(s, "false ");
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_publish_consume),
	    cmocka_unit_test_teardown(test_publish_while_blocked, restore_watermark),
	    cmocka_unit_test(test_host_names),
	    cmocka_unit_test(test_wrong_ca),
	    cmocka_unit_test(test_client_certificate),
	    cmocka_unit_test(test_url_list),
	    cmocka_unit_test(test_postgresql_verify_full),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
