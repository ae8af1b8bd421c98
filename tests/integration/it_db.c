/* it_db.c: the PostgreSQL module against a real server (ORDERS_PG_DSN). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "db.h"
#include "err.h"

#define DEFAULT_DSN "postgresql://orders@127.0.0.1:5442/orders"
/* Port 1 on loopback: nothing listens, so the connection is refused at once. */
#define DEAD_DSN "postgresql://orders@127.0.0.1:1/orders?connect_timeout=2"
#define POOL_SIZE 2
#define POOL_THREADS 4
#define POOL_QUERIES 250
/* Connections the test proxy carries at once. */
#define PROXY_PAIRS 8

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
	/* Too few parameters: the server says 08P01 (protocol_violation) on a
	 * healthy connection. A bug of ours, not an outage. */
	assert_int_equal(db_exec(d, "SELECT $1::int + $2::int", 1, p1, &r), ERR_DB);
	assert_null(r);

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

/* ---- prepared statements ------------------------------------------------- */

static const struct db_stmt st_insert = {
    "it_db.insert", "INSERT INTO it_db_items (id, name, qty) VALUES ($1, $2, $3)"};
static const struct db_stmt st_select = {
    "it_db.select", "SELECT name, qty, $2::text IS NULL FROM it_db_items WHERE id = $1"};
static const struct db_stmt st_add = {"it_db.add", "SELECT $1::int + 1"};

/*
 * How often db's session has run the prepared statement name (plans made,
 * one per run), 0 when it has been prepared but never run, -1 when the
 * session does not have it.
 */
static long stmt_runs(struct db *db, const char *name)
{
	static const char sql[] = "SELECT generic_plans + custom_plans FROM pg_prepared_statements "
	                          "WHERE name = $1";
	const char *p[] = {name};
	PGresult *r = NULL;
	long n = -1;

	assert_int_equal(db_exec(db, sql, 1, p, &r), ERR_OK);
	if (PQntuples(r) == 1)
		n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return n;
}

/* $1 + 1 through st_add on db: ERR_OK when it answered want. */
static int add_one(struct db *db, int a)
{
	char in[16], want[16];
	const char *p[] = {in};
	PGresult *r = NULL;
	int rc;

	snprintf(in, sizeof(in), "%d", a);
	snprintf(want, sizeof(want), "%d", a + 1);
	rc = db_exec_stmt(db, &st_add, 1, p, &r);
	if (rc)
		return rc;
	rc = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), want) == 0 ? ERR_OK : ERR_DB;
	PQclear(r);
	return rc;
}

static void test_stmt_params(void **state)
{
	const char *rows[3][3] = {
	    {"1", "apple", "10"}, {"2", "pear", "0"}, {"3", "O'Brien \\ \"q\"", "7"}};
	const char *sel[2] = {"2", NULL};
	PGresult *r = NULL;
	int i;

	(void)state;
	/* Prepared on the first run, and only run after that. */
	assert_int_equal(stmt_runs(d, st_insert.name), -1);
	for (i = 0; i < 3; i++)
		assert_int_equal(db_exec_stmt(d, &st_insert, 3, rows[i], NULL), ERR_OK);
	assert_int_equal(stmt_runs(d, st_insert.name), 3);
	assert_int_equal(count_rows(d), 3);

	/* The result is handed over; a NULL parameter is SQL NULL. */
	assert_int_equal(db_exec_stmt(d, &st_select, 2, sel, &r), ERR_OK);
	assert_non_null(r);
	assert_int_equal(PQntuples(r), 1);
	assert_string_equal(PQgetvalue(r, 0, 0), "pear");
	assert_string_equal(PQgetvalue(r, 0, 1), "0");
	assert_string_equal(PQgetvalue(r, 0, 2), "t");
	PQclear(r);

	/* Parameters are values, never SQL. */
	sel[0] = "3";
	sel[1] = "";
	r = NULL;
	assert_int_equal(db_exec_stmt(d, &st_select, 2, sel, &r), ERR_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "O'Brien \\ \"q\"");
	assert_string_equal(PQgetvalue(r, 0, 2), "f"); /* "" is not NULL */
	PQclear(r);

	/* No row is a result too. */
	sel[0] = "99";
	r = NULL;
	assert_int_equal(db_exec_stmt(d, &st_select, 2, sel, &r), ERR_OK);
	assert_int_equal(PQntuples(r), 0);
	PQclear(r);
	assert_int_equal(stmt_runs(d, st_select.name), 3);

	/* Inside a transaction, the same as outside. */
	assert_int_equal(db_begin(d), ERR_OK);
	assert_int_equal(add_one(d, 41), ERR_OK);
	assert_int_equal(db_rollback(d), ERR_OK);
	assert_int_equal(add_one(d, 1), ERR_OK);
	assert_int_equal(stmt_runs(d, st_add.name), 2);
}

static void test_stmt_errors(void **state)
{
	static const struct db_stmt bad = {"it_db.bad", "SELEC 1"};
	static const struct db_stmt clash = {"it_db.insert", "SELECT 1"};
	static const struct db_stmt twin = {
	    "it_db.insert", "INSERT INTO it_db_items (id, name, qty) VALUES ($1, $2, $3)"};
	static const struct db_stmt no_name = {"", "SELECT 1"};
	static const struct db_stmt no_sql = {"it_db.no_sql", NULL};
	static const struct db_stmt long_name = {
	    "it_db.0123456789012345678901234567890123456789012345678901234567", "SELECT 1"};
	const char *dup[3] = {"1", "other", "1"};
	const char *neg[3] = {"2", "plum", "-1"};
	const char *nul[3] = {"3", NULL, "1"};
	const char *ok[3] = {"1", "apple", "10"};
	const char *twin_row[3] = {"4", "fig", "2"};
	PGresult *r = NULL;

	(void)state;
	assert_int_equal(db_exec_stmt(d, &st_insert, 3, ok, NULL), ERR_OK);
	/* The codes db_exec gives; out-params only on success. */
	assert_int_equal(db_exec_stmt(d, &st_insert, 3, dup, &r), ERR_CONFLICT);
	assert_null(r);
	assert_int_equal(db_exec_stmt(d, &st_insert, 3, neg, &r), ERR_INVALID);
	assert_int_equal(db_exec_stmt(d, &st_insert, 3, nul, &r), ERR_DB);
	assert_null(r);

	/* sql PostgreSQL cannot prepare: an error each time, never remembered. */
	assert_int_equal(db_exec_stmt(d, &bad, 0, NULL, &r), ERR_DB);
	assert_int_equal(db_exec_stmt(d, &bad, 0, NULL, &r), ERR_DB);
	assert_null(r);
	assert_int_equal(stmt_runs(d, bad.name), -1);

	/* One name, other sql: refused before anything is sent. */
	assert_int_equal(db_exec_stmt(d, &clash, 0, NULL, &r), ERR_INVALID);
	assert_null(r);
	/* One name, the same sql (a second definition): the prepared one. */
	assert_int_equal(db_exec_stmt(d, &twin, 3, twin_row, NULL), ERR_OK);

	/* Bad arguments. */
	assert_int_equal(db_exec_stmt(NULL, &st_add, 0, NULL, &r), ERR_INVALID);
	assert_int_equal(db_exec_stmt(d, NULL, 0, NULL, &r), ERR_INVALID);
	assert_int_equal(db_exec_stmt(d, &no_name, 0, NULL, &r), ERR_INVALID);
	assert_int_equal(db_exec_stmt(d, &no_sql, 0, NULL, &r), ERR_INVALID);
	assert_int_equal(db_exec_stmt(d, &long_name, 0, NULL, &r), ERR_INVALID);
	assert_int_equal(db_exec_stmt(d, &st_add, 1, NULL, &r), ERR_INVALID);
	assert_int_equal(db_exec_stmt(d, &st_add, -1, NULL, &r), ERR_INVALID);
	assert_null(r);

	/* Nothing of the failures was written, and the session is fine. */
	assert_int_equal(count_rows(d), 2);
	assert_int_equal(stmt_runs(d, st_insert.name) > 0, 1);
	assert_int_equal(add_one(d, 7), ERR_OK);
}

/*
 * A statement first run in a transaction that has failed cannot be
 * prepared: that is its error, and the run after the rollback prepares it.
 */
static void test_stmt_in_failed_transaction(void **state)
{
	static const struct db_stmt late = {"it_db.late", "SELECT $1::int * 2"};
	const char *p[] = {"21"};
	PGresult *r = NULL;

	(void)state;
	assert_int_equal(db_begin(d), ERR_OK);
	assert_int_equal(db_exec(d, "SELEC 1", 0, NULL, NULL), ERR_DB);
	assert_int_equal(db_exec_stmt(d, &late, 1, p, &r), ERR_DB);
	assert_null(r);
	assert_int_equal(db_rollback(d), ERR_OK);
	assert_int_equal(stmt_runs(d, late.name), -1);
	assert_int_equal(db_exec_stmt(d, &late, 1, p, &r), ERR_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "42");
	PQclear(r);
	assert_int_equal(stmt_runs(d, late.name), 1);
}

/* The server ends the session: the new one prepares each statement again. */
static void test_stmt_after_reconnect(void **state)
{
	char pid[32];

	(void)state;
	assert_int_equal(add_one(d, 1), ERR_OK);
	assert_true(stmt_runs(d, st_add.name) >= 1);
	terminate_session(pid, sizeof(pid));
	assert_int_equal(add_one(d, 2), ERR_OK);
	assert_int_not_equal(PQbackendPID(db_conn(d)), atoi(pid));
	/* Prepared anew on the new session, and run once there. */
	assert_int_equal(stmt_runs(d, st_add.name), 1);
	assert_int_equal(add_one(d, 3), ERR_OK);
	assert_int_equal(stmt_runs(d, st_add.name), 2);
}

/*
 * Inside a transaction the lost session fails the statement; the rollback
 * reconnects, and the statement is prepared on the new session.
 */
static void test_stmt_reconnect_in_transaction(void **state)
{
	char pid[32];

	(void)state;
	assert_int_equal(add_one(d, 1), ERR_OK);
	assert_int_equal(db_begin(d), ERR_OK);
	assert_int_equal(add_one(d, 2), ERR_OK);
	terminate_session(pid, sizeof(pid));
	assert_int_equal(add_one(d, 3), ERR_UNAVAILABLE);
	assert_int_equal(db_rollback(d), ERR_OK);
	assert_int_equal(add_one(d, 4), ERR_OK);
	assert_int_not_equal(PQbackendPID(db_conn(d)), atoi(pid));
	assert_int_equal(stmt_runs(d, st_add.name), 1);
}

/*
 * The session loses a statement behind d's back (DEALLOCATE): that run
 * fails, and d starts a new session that prepares it again.
 */
static void test_stmt_deallocated(void **state)
{
	static const struct db_stmt late2 = {"it_db.late2", "SELECT 2"};
	PGresult *r = NULL;
	int pid;

	(void)state;
	assert_int_equal(add_one(d, 1), ERR_OK);
	pid = PQbackendPID(db_conn(d));
	assert_int_equal(db_exec(d, "DEALLOCATE ALL", 0, NULL, NULL), ERR_OK);
	assert_int_equal(add_one(d, 2), ERR_DB);
	assert_int_equal(add_one(d, 3), ERR_OK);
	assert_int_not_equal(PQbackendPID(db_conn(d)), pid);
	assert_int_equal(stmt_runs(d, st_add.name), 1);

	/* And one PREPAREd behind its back under a name it is about to use. */
	assert_int_equal(db_exec(d, "PREPARE \"it_db.late2\" AS SELECT 1", 0, NULL, NULL), ERR_OK);
	pid = PQbackendPID(db_conn(d));
	assert_int_equal(db_exec_stmt(d, &late2, 0, NULL, &r), ERR_DB);
	assert_null(r);
	assert_int_equal(db_exec_stmt(d, &late2, 0, NULL, &r), ERR_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "2");
	PQclear(r);
	assert_int_not_equal(PQbackendPID(db_conn(d)), pid);
}

/*
 * Past DB_STMTS_MAX statements on one connection the rest still run, only
 * unprepared; those prepared before stay prepared.
 */
static void test_stmt_table_full(void **state)
{
	static char names[DB_STMTS_MAX + 1][32];
	static struct db_stmt many[DB_STMTS_MAX + 1];
	const char *p[] = {"41"};
	struct db *own;
	PGresult *r;
	int i;

	(void)state;
	own = db_new(dsn);
	assert_non_null(own);
	for (i = 0; i <= DB_STMTS_MAX; i++) {
		snprintf(names[i], sizeof(names[i]), "it_db.many_%d", i);
		many[i].name = names[i];
		many[i].sql = "SELECT $1::int + 1";
		r = NULL;
		assert_int_equal(db_exec_stmt(own, &many[i], 1, p, &r), ERR_OK);
		assert_string_equal(PQgetvalue(r, 0, 0), "42");
		PQclear(r);
	}
	assert_int_equal(stmt_runs(own, names[0]), 1);
	assert_int_equal(stmt_runs(own, names[DB_STMTS_MAX - 1]), 1);
	assert_int_equal(stmt_runs(own, names[DB_STMTS_MAX]), -1);
	r = NULL;
	assert_int_equal(db_exec_stmt(own, &many[DB_STMTS_MAX], 1, p, &r), ERR_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "42");
	PQclear(r);
	assert_int_equal(db_exec_stmt(own, &many[0], 1, p, NULL), ERR_OK);
	assert_int_equal(stmt_runs(own, names[0]), 2);
	db_free(own);
}

/* ---- a TCP proxy, to take the server away and bring it back -------------- */

struct proxy {
	struct addrinfo *upstream;
	int port;
	int listen_fd;
	int fds[PROXY_PAIRS][2]; /* client, upstream; -1 when free */
	atomic_int stop;
	pthread_t tid;
};

static void proxy_close_pair(struct proxy *px, int i)
{
	close(px->fds[i][0]);
	close(px->fds[i][1]);
	px->fds[i][0] = px->fds[i][1] = -1;
}

static void proxy_accept(struct proxy *px)
{
	int c = accept(px->listen_fd, NULL, NULL), u, i;

	if (c < 0)
		return;
	u = socket(px->upstream->ai_family, SOCK_STREAM, 0);
	if (u < 0 || connect(u, px->upstream->ai_addr, px->upstream->ai_addrlen) != 0) {
		close(c);
		if (u >= 0)
			close(u);
		return;
	}
	for (i = 0; i < PROXY_PAIRS; i++) {
		if (px->fds[i][0] < 0) {
			px->fds[i][0] = c;
			px->fds[i][1] = u;
			return;
		}
	}
	close(c);
	close(u);
}

/* Copy what came on from to to; 0 when the pair is done. */
static int proxy_copy(int from, int to)
{
	char buf[16384];
	ssize_t n = read(from, buf, sizeof(buf)), off = 0, w;

	if (n <= 0)
		return 0;
	while (off < n) {
		w = write(to, buf + off, (size_t)(n - off));
		if (w <= 0)
			return 0;
		off += w;
	}
	return 1;
}

static void *proxy_run(void *arg)
{
	struct proxy *px = arg;
	struct pollfd pf[1 + 2 * PROXY_PAIRS];
	int i, k;

	while (!atomic_load(&px->stop)) {
		pf[0].fd = px->listen_fd;
		pf[0].events = POLLIN;
		for (i = 0; i < PROXY_PAIRS; i++) {
			for (k = 0; k < 2; k++) {
				pf[1 + 2 * i + k].fd = px->fds[i][k];
				pf[1 + 2 * i + k].events = POLLIN;
				pf[1 + 2 * i + k].revents = 0;
			}
		}
		if (poll(pf, 1 + 2 * PROXY_PAIRS, 50) <= 0)
			continue;
		for (i = 0; i < PROXY_PAIRS; i++) {
			for (k = 0; k < 2 && px->fds[i][0] >= 0; k++) {
				if (pf[1 + 2 * i + k].revents &&
				    !proxy_copy(px->fds[i][k], px->fds[i][1 - k]))
					proxy_close_pair(px, i);
			}
		}
		if (pf[0].revents & POLLIN)
			proxy_accept(px);
	}
	return NULL;
}

/* Listen on port (0: any) for connections to carry to the server of dsn. */
static void proxy_start(struct proxy *px, int port)
{
	PQconninfoOption *opts = PQconninfoParse(dsn, NULL), *o;
	const char *host = "127.0.0.1", *pgport = "5432";
	struct addrinfo hints;
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int one = 1, i;

	assert_non_null(opts);
	for (o = opts; o->keyword; o++) {
		if (strcmp(o->keyword, "host") == 0 && o->val && o->val[0])
			host = o->val;
		if (strcmp(o->keyword, "port") == 0 && o->val && o->val[0])
			pgport = o->val;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	px->upstream = NULL;
	assert_int_equal(getaddrinfo(host, pgport, &hints, &px->upstream), 0);
	PQconninfoFree(opts);
	for (i = 0; i < PROXY_PAIRS; i++)
		px->fds[i][0] = px->fds[i][1] = -1;
	px->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(px->listen_fd >= 0);
	setsockopt(px->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)port);
	assert_int_equal(bind(px->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(px->listen_fd, 8), 0);
	assert_int_equal(getsockname(px->listen_fd, (struct sockaddr *)&sa, &len), 0);
	px->port = ntohs(sa.sin_port);
	atomic_init(&px->stop, 0);
	assert_int_equal(pthread_create(&px->tid, NULL, proxy_run, px), 0);
}

/* Stop listening and cut every connection, as a server that went away. */
static void proxy_stop(struct proxy *px)
{
	int i;

	atomic_store(&px->stop, 1);
	assert_int_equal(pthread_join(px->tid, NULL), 0);
	for (i = 0; i < PROXY_PAIRS; i++) {
		if (px->fds[i][0] >= 0)
			proxy_close_pair(px, i);
	}
	close(px->listen_fd);
	freeaddrinfo(px->upstream);
}

/*
 * The server is gone for a while (connection cut, connecting refused):
 * every run fails as unavailable, without a crash, and once it is back the
 * statement runs again, prepared on the new session.
 */
static void test_stmt_server_gone(void **state)
{
	struct proxy px;
	struct db *via;
	char conninfo[512];
	PQconninfoOption *opts, *o;
	size_t n = 0;
	int port;

	(void)state;
	proxy_start(&px, 0);
	port = px.port;
	/* The DSN's settings (user, database, ...), with the proxy as the server. */
	opts = PQconninfoParse(dsn, NULL);
	assert_non_null(opts);
	for (o = opts; o->keyword; o++) {
		if (!o->val || !o->val[0] || strcmp(o->keyword, "host") == 0 ||
		    strcmp(o->keyword, "hostaddr") == 0 || strcmp(o->keyword, "port") == 0 ||
		    strcmp(o->keyword, "connect_timeout") == 0)
			continue;
		assert_null(strpbrk(o->val, " '\\"));
		n += (size_t)snprintf(conninfo + n, sizeof(conninfo) - n, "%s=%s ", o->keyword,
		                      o->val);
		assert_true(n < sizeof(conninfo));
	}
	PQconninfoFree(opts);
	snprintf(conninfo + n, sizeof(conninfo) - n, "host=127.0.0.1 port=%d connect_timeout=2",
	         port);
	via = db_new(conninfo);
	assert_non_null(via);
	assert_int_equal(add_one(via, 1), ERR_OK);
	assert_int_equal(stmt_runs(via, st_add.name), 1);

	proxy_stop(&px);
	assert_int_equal(add_one(via, 2), ERR_UNAVAILABLE);
	assert_int_equal(add_one(via, 3), ERR_UNAVAILABLE);
	assert_int_equal(db_ping(via), ERR_UNAVAILABLE);

	proxy_start(&px, port);
	assert_int_equal(add_one(via, 4), ERR_OK);
	assert_int_equal(stmt_runs(via, st_add.name), 1);
	db_free(via);
	proxy_stop(&px);
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
	    cmocka_unit_test_setup(test_stmt_params, setup_table),
	    cmocka_unit_test_setup(test_stmt_errors, setup_table),
	    cmocka_unit_test(test_stmt_in_failed_transaction),
	    cmocka_unit_test(test_stmt_after_reconnect),
	    cmocka_unit_test(test_stmt_reconnect_in_transaction),
	    cmocka_unit_test(test_stmt_deallocated),
	    cmocka_unit_test(test_stmt_table_full),
	    cmocka_unit_test(test_stmt_server_gone),
	    cmocka_unit_test(test_pool_threads),
	    cmocka_unit_test(test_pool_put_rolls_back),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
