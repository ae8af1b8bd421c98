/* it_db.c: the PostgreSQL module against a real server (ORDERS_PG_DSN). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "err.h"

#define DEFAULT_DSN "postgresql://orders@127.0.0.1:5442/orders"
/* Port 1 on loopback: nothing listens, so the connection is refused at once. */
#define DEAD_DSN "postgresql://orders@127.0.0.1:1/orders?connect_timeout=2"
#define POOL_SIZE 2
#define POOL_THREADS 4
#define POOL_QUERIES 250

static const char *dsn;
static struct db *d; /* the group's connection; its TEMP tables vanish with it */

/*
 * A temporary table lives only in this session: nothing persists and no
 * other test or daemon sees it. The constraints are the ones db_exec maps.
 */
static const char create_sql[] = "CREATE TEMP TABLE it_db_items ("
                                 " id int PRIMARY KEY,"
                                 " name text NOT NULL UNIQUE,"
                                 " qty int NOT NULL CHECK (qty >= 0)) ON COMMIT PRESERVE ROWS";

static int insert(struct db *db, const char *id, const char *name, const char *qty)
{
	const char *params[] = {id, name, qty};

	return db_exec(db, "INSERT INTO it_db_items (id, name, qty) VALUES ($1, $2, $3)", 3, params,
	               NULL);
}

/* The number of rows in it_db_items, or -1. */
static long count_rows(struct db *db)
{
	PGresult *r = NULL;
	long n;

	if (db_exec(db, "SELECT count(*) FROM it_db_items", 0, NULL, &r) != ERR_OK)
		return -1;
	n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return n;
}

static int group_setup(void **state)
{
	(void)state;
	dsn = getenv("ORDERS_PG_DSN");
	if (!dsn || !*dsn)
		dsn = DEFAULT_DSN;
	d = db_new(dsn);
	if (!d) {
		fprintf(stderr, "it_db: cannot connect to ORDERS_PG_DSN (is postgresql up?)\n");
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	db_free(d);
	return 0;
}

/* Each test starts from an empty table of its own. */
static int setup_table(void **state)
{
	(void)state;
	if (db_exec(d, "DROP TABLE IF EXISTS it_db_items", 0, NULL, NULL) != ERR_OK)
		return -1;
	return db_exec(d, create_sql, 0, NULL, NULL) == ERR_OK ? 0 : -1;
}

static void test_ping_and_conn(void **state)
{
	(void)state;
	assert_int_equal(db_ping(d), ERR_OK);
	assert_non_null(db_conn(d));
	assert_int_equal(PQstatus(db_conn(d)), CONNECTION_OK);
}

static void test_exec_params(void **state)
{
	const char *params[] = {"2"};
	const char *nul[] = {NULL};
	const char *odd[] = {"O'Brien; DROP TABLE it_db_items; --"};
	PGresult *r = NULL;

	(void)state;
	assert_int_equal(insert(d, "1", "apple", "10"), ERR_OK);
	assert_int_equal(insert(d, "2", "pear", "0"), ERR_OK);

	assert_int_equal(
	    db_exec(d, "SELECT name, qty FROM it_db_items WHERE id = $1", 1, params, &r), ERR_OK);
	assert_non_null(r);
	assert_int_equal(PQntuples(r), 1);
	assert_string_equal(PQgetvalue(r, 0, 0), "pear");
	assert_string_equal(PQgetvalue(r, 0, 1), "0");
	PQclear(r);

	/* NULL is SQL NULL, not the text "NULL" or an empty string. */
	r = NULL;
	assert_int_equal(db_exec(d, "SELECT $1::text IS NULL", 1, nul, &r), ERR_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "t");
	PQclear(r);

	/* Parameters are values, never SQL. */
	assert_int_equal(insert(d, "3", odd[0], "1"), ERR_OK);
	r = NULL;
	assert_int_equal(db_exec(d, "SELECT id FROM it_db_items WHERE name = $1", 1, odd, &r),
	                 ERR_OK);
	assert_int_equal(PQntuples(r), 1);
	assert_string_equal(PQgetvalue(r, 0, 0), "3");
	PQclear(r);
	assert_int_equal(count_rows(d), 3);

	/* res NULL: the result is dropped, the statement still ran. */
	assert_int_equal(db_exec(d, "DELETE FROM it_db_items WHERE id = 3", 0, NULL, NULL), ERR_OK);
	assert_int_equal(count_rows(d), 2);
}

static void test_exec_errors(void **state)
{
	const char *p1[] = {"1"};
	PGresult *r = NULL;

	(void)state;
	assert_int_equal(insert(d, "1", "apple", "10"), ERR_OK);

	/* Unique violations, on the primary key and on the UNIQUE column. */
	r = NULL;
	assert_int_equal(db_exec(d, "INSERT INTO it_db_items VALUES ($1, 'other', 1)", 1, p1, &r),
	                 ERR_CONFLICT);
	assert_null(r); /* out-params only on success */
	assert_int_equal(insert(d, "2", "apple", "1"), ERR_CONFLICT);

	/* A check violation. */
	assert_int_equal(insert(d, "3", "plum", "-1"), ERR_INVALID);

	/* Anything else PostgreSQL refuses. */
	assert_int_equal(db_exec(d, "SELEC 1", 0, NULL, &r), ERR_DB);
	assert_null(r);
	assert_int_equal(db_exec(d, "SELECT * FROM it_db_no_such_table", 0, NULL, NULL), ERR_DB);
	assert_int_equal(insert(d, "x", "plum", "1"), ERR_DB); /* not an int */
	assert_int_equal(insert(d, "4", NULL, "1"), ERR_DB);   /* NOT NULL */

	/* Nothing of the failures was written. */
	assert_int_equal(count_rows(d), 1);
	/* And the connection is fine after them. */
	assert_int_equal(db_ping(d), ERR_OK);
}

static void test_exec_bad_arguments(void **state)
{
	PGresult *r = NULL;

	(void)state;
	assert_int_equal(db_exec(NULL, "SELECT 1", 0, NULL, &r), ERR_INVALID);
	assert_int_equal(db_exec(d, NULL, 0, NULL, &r), ERR_INVALID);
	assert_int_equal(db_exec(d, "SELECT $1", 1, NULL, &r), ERR_INVALID);
	assert_int_equal(db_exec(d, "SELECT 1", -1, NULL, &r), ERR_INVALID);
	assert_null(r);
	assert_null(db_conn(NULL));
	assert_int_not_equal(db_ping(NULL), ERR_OK);
}

static void test_transactions(void **state)
{
	(void)state;
	/* Rolled back: gone. */
	assert_int_equal(db_begin(d), ERR_OK);
	assert_int_equal(insert(d, "1", "apple", "10"), ERR_OK);
	assert_int_equal(count_rows(d), 1); /* visible inside */
	assert_int_equal(PQtransactionStatus(db_conn(d)), PQTRANS_INTRANS);
	assert_int_equal(db_rollback(d), ERR_OK);
	assert_int_equal(PQtransactionStatus(db_conn(d)), PQTRANS_IDLE);
	assert_int_equal(count_rows(d), 0);

	/* Committed: kept. */
	assert_int_equal(db_begin(d), ERR_OK);
	assert_int_equal(insert(d, "1", "apple", "10"), ERR_OK);
	assert_int_equal(insert(d, "2", "pear", "5"), ERR_OK);
	assert_int_equal(db_commit(d), ERR_OK);
	assert_int_equal(count_rows(d), 2);

	/* A statement fails inside: COMMIT must not report success. */
	assert_int_equal(db_begin(d), ERR_OK);
	assert_int_equal(insert(d, "3", "plum", "1"), ERR_OK);
	assert_int_equal(insert(d, "1", "dup", "1"), ERR_CONFLICT);
	assert_int_equal(PQtransactionStatus(db_conn(d)), PQTRANS_INERROR);
	assert_int_not_equal(db_commit(d), ERR_OK);
	assert_int_equal(PQtransactionStatus(db_conn(d)), PQTRANS_IDLE);
	assert_int_equal(count_rows(d), 2); /* plum went with it */

	/* A rollback with no transaction is harmless. */
	assert_int_equal(db_rollback(d), ERR_OK);
}

/* Make the server end d's session, as a restart would; its old backend pid into pid. */
static void terminate_session(char *pid, size_t len)
{
	struct db *other;
	PGresult *r = NULL;
	const char *params[] = {pid};
	long left = 1;
	int i;

	snprintf(pid, len, "%d", PQbackendPID(db_conn(d)));
	other = db_new(dsn);
	assert_non_null(other);
	assert_int_equal(db_exec(other, "SELECT pg_terminate_backend($1::int)", 1, params, &r),
	                 ERR_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "t");
	PQclear(r);
	/* pg_terminate_backend only signals: wait until the backend is gone. */
	for (i = 0; i < 100 && left != 0; i++) {
		r = NULL;
		assert_int_equal(
		    db_exec(other, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", 1,
		            params, &r),
		    ERR_OK);
		left = strtol(PQgetvalue(r, 0, 0), NULL, 10);
		PQclear(r);
		if (left != 0)
			usleep(50 * 1000);
	}
	assert_int_equal(left, 0);
	db_free(other);
}

/*
 * The server ends our idle session (as a restart does): that is noticed
 * before the next statement is sent, which runs on a new session.
 */
static void test_reconnect(void **state)
{
	char pid[32];

	(void)state;
	terminate_session(pid, sizeof(pid));
	assert_int_equal(db_exec(d, "SELECT 1", 0, NULL, NULL), ERR_OK);
	assert_int_not_equal(PQbackendPID(db_conn(d)), atoi(pid));
	/* A new session: the old TEMP table went with the old one. */
	assert_int_equal(db_exec(d, "SELECT 1 FROM it_db_items", 0, NULL, NULL), ERR_DB);
}

/*
 * Inside a transaction the session cannot be replaced: the statement that
 * finds it dead fails as unavailable and is not retried; the next
 * reconnects.
 */
static void test_reconnect_in_transaction(void **state)
{
	char pid[32];

	(void)state;
	assert_int_equal(db_begin(d), ERR_OK);
	terminate_session(pid, sizeof(pid));
	assert_int_equal(db_exec(d, "SELECT 1", 0, NULL, NULL), ERR_UNAVAILABLE);
	assert_int_equal(db_ping(d), ERR_OK);
	assert_int_not_equal(PQbackendPID(db_conn(d)), atoi(pid));
}

static void test_dead_server(void **state)
{
	struct db_pool *p;

	(void)state;
	assert_null(db_new(DEAD_DSN));
	assert_null(db_new(NULL));
	assert_null(db_new("this is not a dsn ==="));

	p = db_pool_new(DEAD_DSN, 2);
	assert_non_null(p); /* opened lazily */
	assert_null(db_pool_get(p));
	/* The failed attempt gave its slot back: another may try (and fail) again. */
	assert_null(db_pool_get(p));
	assert_null(db_pool_get(p));
	db_pool_free(p);

	assert_null(db_pool_new(dsn, 0));
	assert_null(db_pool_new(NULL, 2));
	db_pool_free(NULL);
	db_free(NULL);
	assert_null(db_pool_get(NULL));
	db_pool_put(NULL, NULL);
}

/* ---- pool ---------------------------------------------------------------- */

struct pool_run {
	struct db_pool *pool;
	int thread;
	atomic_int *in_use;
	atomic_int *max_in_use;
	atomic_int *ok;
	pthread_mutex_t *seen_lock;
	struct db **seen; /* distinct connections handed out, POOL_THREADS * 2 slots */
	int *nseen;
};

static void note_seen(struct pool_run *run, struct db *db)
{
	int i;

	pthread_mutex_lock(run->seen_lock);
	for (i = 0; i < *run->nseen; i++) {
		if (run->seen[i] == db)
			break;
	}
	if (i == *run->nseen && *run->nseen < POOL_THREADS * 2)
		run->seen[(*run->nseen)++] = db;
	pthread_mutex_unlock(run->seen_lock);
}

/* No cmocka asserts off the main thread: failures are counted instead. */
static void *pool_worker(void *arg)
{
	struct pool_run *run = arg;
	char a[32], want[32];
	const char *params[] = {a};
	PGresult *r;
	struct db *db;
	int i, now, max;

	for (i = 0; i < POOL_QUERIES; i++) {
		db = db_pool_get(run->pool);
		if (!db)
			continue;
		now = atomic_fetch_add(run->in_use, 1) + 1;
		max = atomic_load(run->max_in_use);
		while (now > max && !atomic_compare_exchange_weak(run->max_in_use, &max, now))
			;
		note_seen(run, db);
		snprintf(a, sizeof(a), "%d", run->thread * 100000 + i);
		snprintf(want, sizeof(want), "%d", run->thread * 100000 + i + 1);
		r = NULL;
		if (db_exec(db, "SELECT $1::int + 1", 1, params, &r) == ERR_OK) {
			if (PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), want) == 0)
				atomic_fetch_add(run->ok, 1);
			PQclear(r);
		}
		atomic_fetch_sub(run->in_use, 1);
		db_pool_put(run->pool, db);
	}
	return NULL;
}

static void test_pool_threads(void **state)
{
	struct pool_run runs[POOL_THREADS];
	pthread_t tids[POOL_THREADS];
	pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
	struct db *seen[POOL_THREADS * 2];
	atomic_int in_use = 0, max_in_use = 0, ok = 0;
	int nseen = 0, i;
	struct db_pool *p;

	(void)state;
	p = db_pool_new(dsn, POOL_SIZE);
	assert_non_null(p);
	for (i = 0; i < POOL_THREADS; i++) {
		runs[i] = (struct pool_run){.pool = p,
		                            .thread = i,
		                            .in_use = &in_use,
		                            .max_in_use = &max_in_use,
		                            .ok = &ok,
		                            .seen_lock = &seen_lock,
		                            .seen = seen,
		                            .nseen = &nseen};
		assert_int_equal(pthread_create(&tids[i], NULL, pool_worker, &runs[i]), 0);
	}
	for (i = 0; i < POOL_THREADS; i++)
		assert_int_equal(pthread_join(tids[i], NULL), 0);

	assert_int_equal(atomic_load(&ok), POOL_THREADS * POOL_QUERIES);
	/* Never more connections out at once, or made at all, than the size. */
	assert_true(atomic_load(&max_in_use) <= POOL_SIZE);
	assert_true(atomic_load(&max_in_use) >= 1);
	assert_true(nseen >= 1 && nseen <= POOL_SIZE);
	db_pool_free(p);
}

/* A connection put back inside a transaction is rolled back before reuse. */
static void test_pool_put_rolls_back(void **state)
{
	struct db_pool *p;
	struct db *a, *b;

	(void)state;
	p = db_pool_new(dsn, 1);
	assert_non_null(p);
	a = db_pool_get(p);
	assert_non_null(a);
	assert_int_equal(db_exec(a, create_sql, 0, NULL, NULL), ERR_OK);
	assert_int_equal(db_begin(a), ERR_OK);
	assert_int_equal(insert(a, "1", "apple", "1"), ERR_OK);
	db_pool_put(p, a);

	b = db_pool_get(p);
	assert_ptr_equal(b, a); /* size 1: the same connection */
	assert_int_equal(PQtransactionStatus(db_conn(b)), PQTRANS_IDLE);
	assert_int_equal(count_rows(b), 0);
	db_pool_put(p, b);
	db_pool_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ping_and_conn),
	    cmocka_unit_test_setup(test_exec_params, setup_table),
	    cmocka_unit_test_setup(test_exec_errors, setup_table),
	    cmocka_unit_test(test_exec_bad_arguments),
	    cmocka_unit_test_setup(test_transactions, setup_table),
	    cmocka_unit_test_setup(test_reconnect, setup_table),
	    cmocka_unit_test(test_reconnect_in_transaction),
	    cmocka_unit_test(test_dead_server),
	    cmocka_unit_test(test_pool_threads),
	    cmocka_unit_test(test_pool_put_rolls_back),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
