/*
 * db.h: PostgreSQL (libpq) connections with reconnect, and a small pool.
 *
 * A struct db is one connection, used by one thread at a time. Errors are
 * logged here with the SQLSTATE, so callers only branch on the code.
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
