/*
 * db.h: PostgreSQL (libpq) connections with reconnect, and a small pool.
 *
 * A struct db is one connection, used by one thread at a time, with the
 * statements prepared on it (db_exec_stmt). Errors are logged here with the
 * SQLSTATE, so callers only branch on the code.
 */
#ifndef ORDERS_DB_H
#define ORDERS_DB_H

#include <libpq-fe.h>

struct db;

/* db_new - connect to dsn; NULL (reason logged) when it cannot. */
struct db *db_new(const char *dsn);
void db_free(struct db *d);

/* db_conn - the live connection, reconnecting first if it was lost or, while
 * no transaction is open, if the server has ended the session meanwhile (a
 * restart); NULL when reconnecting fails. */
PGconn *db_conn(struct db *d);

/*
 * db_exec - run sql with text parameters (NULL = SQL NULL). On success
 * returns ERR_OK and, when res is not NULL, hands over the result (PQclear
 * it). ERR_CONFLICT for a unique violation (23505), ERR_INVALID for a check
 * violation (23514), ERR_UNAVAILABLE when the connection is down, ERR_DB
 * otherwise. A serialization failure or deadlock (40001, 40P01) is
 * ERR_TIMEOUT: retry the transaction.
 */
int db_exec(struct db *d, const char *sql, int nparams, const char *const *params, PGresult **res);

/*
 * db_sqlstate_err - the error code db_exec gives for a statement that failed
 * with SQLSTATE state on a connection that is still up (NULL: none given):
 * ERR_CONFLICT 23505, ERR_INVALID 23514, ERR_TIMEOUT 40001 and 40P01,
 * ERR_UNAVAILABLE for connection exceptions (class 08, but not 08P01, a
 * protocol violation such as a wrong parameter count: a bug, ERR_DB) and the
 * server shutting down or starting (57P01-57P03), ERR_DB otherwise. Pure;
 * any thread.
 */
int db_sqlstate_err(const char *state);

/*
 * A named prepared statement: PostgreSQL parses and plans sql once per
 * connection instead of on every run. Define each one once, static and
 * const, where it is used:
 *
 *   static const struct db_stmt st = {"inventory.record_order", "INSERT ..."};
 *
 * name (1..DB_STMT_NAME_MAX bytes) must name only this sql in the whole
 * program: the connection remembers a statement by name.
 */
struct db_stmt {
	const char *name;
	const char *sql;
};

#define DB_STMT_NAME_MAX 63
/* Statements a connection keeps prepared; more are still run, unprepared. */
#define DB_STMTS_MAX 64

/*
 * db_exec_stmt - run st like db_exec() runs its sql (same parameters, NULL
 * is SQL NULL; same result handover and errors), as a named prepared
 * statement. The first run on d prepares it, one round trip more (an error
 * in sql is ERR_DB then, and again on every run); later runs only send the
 * parameters. A failed preparation is not remembered, so the next run tries
 * again. A reconnect (db_conn) starts a session that knows no statement:
 * d forgets what it prepared and prepares each again on its next run, so a
 * name is never run on a session that lacks it. Should the session's
 * statements differ from d's record anyway (someone ran DEALLOCATE or
 * PREPARE on it: 26000, 42P05) or a schema change outdate a prepared
 * result type (0A000), that run fails as ERR_DB and d opens a new session
 * before its next statement. ERR_INVALID for bad arguments (NULL st, name
 * or sql, an empty or too long name) and for a name d has prepared with
 * other sql (a programming error, logged). Past DB_STMTS_MAX statements on
 * one connection the rest run unprepared (a warning, once per session).
 * Ownership: st is borrowed, but d keeps its address: st must outlive d (a
 * static const does). Thread-safety: that of struct db, one thread at a
 * time per connection; the statement itself may be shared by any number of
 * connections and threads.
 */
int db_exec_stmt(struct db *d, const struct db_stmt *st, int nparams, const char *const *params,
                 PGresult **res);

/* db_begin / db_commit / db_rollback - transaction verbs, same errors. */
int db_begin(struct db *d);
int db_commit(struct db *d);
int db_rollback(struct db *d);

/* db_ping - ERR_OK when a trivial query succeeds. */
int db_ping(struct db *d);

/* ---- pool, for the API's threads ---------------------------------------- */

struct db_pool;

/* db_pool_new - up to size connections, opened lazily. NULL on ERR_NOMEM. */
struct db_pool *db_pool_new(const char *dsn, int size);
void db_pool_free(struct db_pool *p);
/* db_pool_get - a connection for this thread's exclusive use (waits while
 * all are taken); NULL when none can be opened. Give it back with put. */
struct db *db_pool_get(struct db_pool *p);
void db_pool_put(struct db_pool *p, struct db *d);

#endif
