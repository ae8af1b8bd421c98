/* it_expiry.c: end to end: unpaid orders expire, release their stock and are never charged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "e2e.h"
#include "err.h"

#define DEFAULT_DSN "postgresql://orders@127.0.0.1:5442/orders"
/* The test stack (deploy/local/test.sh) runs with a 10 s TTL; longer ones are skipped. */
#define TTL_MAX_S 20
/* From checkout to 'expired': TTL, one sweeper tick, and a busy machine. */
#define EXPIRE_TIMEOUT_MS 45000
#define WAIT_TIMEOUT_MS 15000

enum daemon { PAYMENT, ORDER, DAEMONS };

static const char *const daemon_names[DAEMONS] = {"orders-payment", "orders-order"};

static char run_id[32];
static char root[1024];
static struct db *db;
/* Daemons this test has stopped: teardown continues them whatever happened. */
static pid_t stopped[DAEMONS];

/* ---- the daemons ----------------------------------------------------------- */

/* The pid in .local/run/<name>.pid, checked to be that daemon; 0 if not. */
static pid_t daemon_pid(enum daemon which)
{
	const char *name = daemon_names[which];
	char path[1200], comm[64] = "";
	pid_t pid;
	FILE *f;

	snprintf(path, sizeof(path), "%s/.local/run/%s.pid", root, name);
	pid = e2e_read_pid(path);
	if (pid <= 0)
		return 0;
	/* A pid file can outlive its process; never signal a stranger. */
	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (!fgets(comm, sizeof(comm), f))
		comm[0] = '\0';
	fclose(f);
	comm[strcspn(comm, "\n")] = '\0';
	return strcmp(comm, name) == 0 ? pid : 0;
}

static void stop_daemon(enum daemon which)
{
	pid_t pid = daemon_pid(which);

	if (!pid)
		fprintf(stderr, "it_expiry: no running %s in %s/.local/run\n", daemon_names[which],
		        root);
	assert_true(pid > 0);
	assert_int_equal(kill(pid, SIGSTOP), 0);
	stopped[which] = pid;
}

static void continue_daemon(enum daemon which)
{
	if (stopped[which] > 0)
		kill(stopped[which], SIGCONT);
	stopped[which] = 0;
}

static void continue_all(void)
{
	int i;

	for (i = 0; i < DAEMONS; i++)
		continue_daemon((enum daemon)i);
}

/* ---- HTTP ---------------------------------------------------------------- */

/* Checkout qty of sku and return the order id (caller frees). */
static char *checkout(const char *sku, int qty)
{
	char body[1024], idem[96];
	static int seq;

	snprintf(idem, sizeof(idem), "exp-%s-%d", run_id, ++seq);
	e2e_checkout_body(body, sizeof(body), sku, qty, "4242424242424242");
	return e2e_checkout_ok(idem, body);
}

/* GET the order's status and failure_reason (either may be NULL). */
static void order_status(const char *id, char *status, size_t slen, char *reason, size_t rlen)
{
	json_t *j = e2e_get_order(id);
	const char *v;

	v = json_string_value(json_object_get(j, "status"));
	assert_non_null(v);
	snprintf(status, slen, "%s", v);
	if (reason) {
		v = json_string_value(json_object_get(j, "failure_reason"));
		snprintf(reason, rlen, "%s", v ? v : "");
	}
	json_decref(j);
}

/* Wait until the order is final; it must be want. */
static void wait_status(const char *id, const char *want, int timeout_ms)
{
	double start = e2e_now_ms();

	e2e_expect_final(id, want, timeout_ms);
	fprintf(stderr, "order %s %s after %.0f ms\n", id, want, e2e_now_ms() - start);
}

/* ---- the database -------------------------------------------------------- */

/* The first column of the first row of sql with $1 = id, as a number; -1 if no row. */
static long query_long(const char *sql, const char *id)
{
	PGresult *r = NULL;
	long v = -1;

	assert_int_equal(db_exec(db, sql, 1, &id, &r), ERR_OK);
	if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
		v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return v;
}

/* The same, as text into out ("" when there is no row). */
static void query_text(const char *sql, const char *id, char *out, size_t len)
{
	PGresult *r = NULL;

	assert_int_equal(db_exec(db, sql, 1, &id, &r), ERR_OK);
	snprintf(out, len, "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
}

/* Wait until sql with $1 = id returns want. */
static void wait_query(const char *sql, const char *id, long want)
{
	double start = e2e_now_ms();

	while (query_long(sql, id) != want) {
		if (e2e_now_ms() - start >= WAIT_TIMEOUT_MS) {
			fprintf(stderr, "waited in vain for %ld from: %s\n", want, sql);
			fail();
		}
		usleep(100000);
	}
}

/* Wait for payment-consumer's recorded outcome for the order; it must be want. */
static void wait_payment_outcome(const char *id, const char *want)
{
	static const char sql[] = "SELECT outcome FROM inbox WHERE consumer = 'payment' "
	                          "AND order_id = $1::uuid AND outcome <> ''";
	double start = e2e_now_ms();
	char outcome[256] = "";

	for (;;) {
		query_text(sql, id, outcome, sizeof(outcome));
		if (outcome[0])
			break;
		if (e2e_now_ms() - start >= WAIT_TIMEOUT_MS) {
			fprintf(stderr, "payment-consumer did not handle order %s\n", id);
			fail();
		}
		usleep(100000);
	}
	assert_string_equal(outcome, want);
}

static const char status_sql[] = "SELECT CASE status WHEN 'reserved' THEN 1 ELSE 0 END "
                                 "FROM orders WHERE order_id = $1::uuid";
static const char expired_events_sql[] = "SELECT count(*) FROM order_events "
                                         "WHERE order_id = $1::uuid AND type = 'order.expired'";
static const char all_events_sql[] = "SELECT count(*) FROM order_events WHERE order_id = $1::uuid";
static const char live_auth_sql[] =
    "SELECT count(*) FROM gateway_charges WHERE idempotency_key = $1 "
    "AND approved AND voided_at IS NULL";
static const char any_charge_sql[] =
    "SELECT count(*) FROM gateway_charges WHERE idempotency_key = $1";
static const char authorized_sql[] =
    "SELECT count(*) FROM payments WHERE order_id = $1::uuid AND authorized";
static const char held_sql[] =
    "SELECT count(*) FROM reservations WHERE order_id = $1::uuid AND state = 'held'";
static const char ran_out_sql[] =
    "SELECT count(*) FROM reservations WHERE order_id = $1::uuid AND state = 'held' "
    "AND expires_at <= now()";

/* What every expired order must look like once payment-consumer has seen it. */
static void check_expired_for_good(const char *id)
{
	char status[32], reason[64];

	order_status(id, status, sizeof(status), reason, sizeof(reason));
	assert_string_equal(status, "expired");
	assert_string_equal(reason, "reservation_expired");
	assert_int_equal(query_long(expired_events_sql, id), 1);
	assert_int_equal(query_long(all_events_sql, id), 1);
	assert_int_equal(query_long(held_sql, id), 0);
	assert_int_equal(query_long(live_auth_sql, id), 0);
	assert_int_equal(query_long(authorized_sql, id), 0);
}

/* ---- tests ---------------------------------------------------------------- */

static void need_short_ttl(void)
{
	const char *ttl = getenv("ORDERS_RESERVATION_TTL_S");

	if (!ttl || atoi(ttl) < 1 || atoi(ttl) > TTL_MAX_S) {
		fprintf(stderr,
		        "it_expiry: skipped, ORDERS_RESERVATION_TTL_S is %s (make test sets 10)\n",
		        ttl ? ttl : "unset");
		skip();
	}
}

/* The scenario: payment-consumer is away, the order expires. */
static void test_unpaid_order_expires(void **state)
{
	char sku[64];
	char *id;
	(void)state;

	need_short_ttl();
	snprintf(sku, sizeof(sku), "EXP-%s-A", run_id);
	e2e_put_product(sku, 5, 1200);
	stop_daemon(PAYMENT);
	id = checkout(sku, 2);
	wait_status(id, "expired", EXPIRE_TIMEOUT_MS);
	e2e_wait_available(sku, 5);
	assert_int_equal(query_long(expired_events_sql, id), 1);

	/* Back, payment-consumer finds the order expired and leaves it alone. */
	continue_daemon(PAYMENT);
	wait_payment_outcome(id, "noop:expired");
	sleep(2);
	check_expired_for_good(id);
	assert_int_equal(query_long(any_charge_sql, id), 0);
	e2e_wait_available(sku, 5);
	free(id);
}

/* Past the TTL but not yet swept: payment-consumer refuses on its own. */
static void test_payment_refuses_run_out_reservation(void **state)
{
	char sku[64];
	char *id;
	(void)state;

	need_short_ttl();
	snprintf(sku, sizeof(sku), "EXP-%s-B", run_id);
	e2e_put_product(sku, 5, 800);
	stop_daemon(ORDER);
	stop_daemon(PAYMENT);
	id = checkout(sku, 1);
	wait_query(status_sql, id, 1);
	wait_query(ran_out_sql, id, 1);

	continue_daemon(PAYMENT);
	wait_payment_outcome(id, "noop:expired");
	/* Nobody swept yet: still reserved, and the gateway never asked. */
	assert_int_equal(query_long(status_sql, id), 1);
	assert_int_equal(query_long(any_charge_sql, id), 0);

	continue_daemon(ORDER);
	wait_status(id, "expired", EXPIRE_TIMEOUT_MS);
	check_expired_for_good(id);
	e2e_wait_available(sku, 5);
	free(id);
}

/*
 * payment-consumer died after the gateway approved and before its commit:
 * the gateway holds a live authorization that no payment row records.
 * Expiring the order must void it.
 */
static void test_orphan_authorization_voided(void **state)
{
	static const char orphan_sql[] =
	    "INSERT INTO gateway_charges (idempotency_key, amount_cents, currency, approved, "
	    "authorization_id) VALUES ($1, 1500, 'USD', true, 'auth_it_expiry_orphan')";
	static const char voided_sql[] =
	    "SELECT count(*) FROM gateway_charges WHERE idempotency_key = $1 "
	    "AND voided_at IS NOT NULL";
	char sku[64];
	char *id;
	(void)state;

	need_short_ttl();
	snprintf(sku, sizeof(sku), "EXP-%s-C", run_id);
	e2e_put_product(sku, 5, 1500);
	stop_daemon(PAYMENT);
	id = checkout(sku, 1);
	wait_query(status_sql, id, 1);
	assert_int_equal(db_exec(db, orphan_sql, 1, (const char *const *)&id, NULL), ERR_OK);
	assert_int_equal(query_long(live_auth_sql, id), 1);

	wait_status(id, "expired", EXPIRE_TIMEOUT_MS);
	assert_int_equal(query_long(voided_sql, id), 1);
	continue_daemon(PAYMENT);
	wait_payment_outcome(id, "noop:expired");
	sleep(1);
	check_expired_for_good(id);
	e2e_wait_available(sku, 5);
	free(id);
}

/* With everything running, an order is still paid within its TTL. */
static void test_paid_order_confirmed(void **state)
{
	char sku[64];
	char *id;
	(void)state;

	snprintf(sku, sizeof(sku), "EXP-%s-D", run_id);
	e2e_put_product(sku, 5, 900);
	id = checkout(sku, 2);
	wait_status(id, "confirmed", WAIT_TIMEOUT_MS);
	assert_int_equal(query_long(live_auth_sql, id), 1);
	assert_int_equal(query_long(authorized_sql, id), 1);
	assert_int_equal(query_long(expired_events_sql, id), 0);
	e2e_wait_available(sku, 3);
	free(id);
}

static int test_teardown(void **state)
{
	(void)state;
	continue_all();
	return 0;
}

static int group_setup(void **state)
{
	const char *dsn = getenv("ORDERS_PG_DSN");

	(void)state;
	e2e_find_root(root, sizeof(root));
	db = db_new(dsn && *dsn ? dsn : DEFAULT_DSN);
	if (!db) {
		fprintf(stderr, "it_expiry: cannot connect to ORDERS_PG_DSN (is the stack up?)\n");
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	continue_all();
	db_free(db);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_unpaid_order_expires, test_teardown),
	    cmocka_unit_test_teardown(test_payment_refuses_run_out_reservation, test_teardown),
	    cmocka_unit_test_teardown(test_orphan_authorization_voided, test_teardown),
	    cmocka_unit_test(test_paid_order_confirmed),
	};

	snprintf(run_id, sizeof(run_id), "%ld-%d", (long)time(NULL), (int)getpid());
	/* Whatever ends this process, a stopped daemon must not stay stopped. */
	atexit(continue_all);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
