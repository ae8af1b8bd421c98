/* db.c: PostgreSQL connections that reconnect, prepared statements, errors by SQLSTATE, a pool. */
#include <stddef.h>

#include "db.h"

#include "err.h"
#include "log.h"
#include "pool.h"

#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Unless the DSN says otherwise: a host that does not answer must not hang
 * a daemon's start or a reconnect for the kernel's TCP timeout. */
#define DB_CONNECT_TIMEOUT "5"
#define DB_REASON_MAX 512
/* A connection that stays down warns at most this often. */
#define DB_WARN_EVERY_S 10

struct db {
	PGconn *conn;
	/* The server said FATAL on this session while it was idle (a restart,
	 * pg_terminate_backend): it is closing it, so make a new one. */
	int closing;
	struct log_throttle reconnect_warn; /* "cannot reconnect" while it stays down */
	/* The statements this session has prepared, by the address of their
	 * struct db_stmt; a new session starts without any. */
	const struct db_stmt *stmts[DB_STMTS_MAX];
	int nstmts;
	int warned_full; /* said once that stmts is full */
};

/* The pool mechanism is pool.c's; this only adds what a PostgreSQL
 * connection needs (the DSN to open it, a rollback when it comes back). */
struct db_pool {
	struct pool *pool;
	char dsn[]; /* the open callback's argument; lives as long as pool */
};

/* libpq's messages end with a newline and may span lines; a log field
 * wants one line. */
static const char *db_reason(const char *msg, char *out, size_t outlen)
{
	size_t n, i;

	if (!msg || !msg[0])
		return "unknown";
	n = strlen(msg);
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, msg, n);
	out[n] = '\0';
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
	for (i = 0; i < n; i++) {
		if (out[i] == '\n' || out[i] == '\t')
			out[i] = ' ';
	}
	return out;
}

/*
 * db_new's failures, from every thread: a daemon waiting for PostgreSQL
 * makes a new connection at every retry, which would be a line each.
 */
static pthread_mutex_t db_new_mu = PTHREAD_MUTEX_INITIALIZER;
static struct log_throttle db_new_warn;

/*
 * NOTICEs (e.g. "there is no transaction in progress") would go to stderr;
 * they belong in our log, at debug. libpq also hands over here the error a
 * server sends on an idle session just before it closes it.
 */
static void db_notice(void *arg, const PGresult *res)
{
	char buf[DB_REASON_MAX];
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	struct db *d = arg;

	if (d && severity && (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0))
		d->closing = 1;
	log_debug("postgresql notice",
	          LF_STR("reason", db_reason(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY), buf,
	                                     sizeof(buf))),
	          LF_STR("sqlstate", state ? state : ""));
}

struct db *db_new(const char *dsn)
{
	/* dsn is expanded last, so whatever it says wins over these. */
	static const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname",
	                                   NULL};
	const char *values[] = {DB_CONNECT_TIMEOUT, "orders", dsn, NULL};
	char buf[DB_REASON_MAX];
	struct db *d;
	long held;
	int due;

	if (!dsn)
		return NULL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->conn = PQconnectdbParams(keys, values, 1);
	if (!d->conn || PQstatus(d->conn) != CONNECTION_OK) {
		pthread_mutex_lock(&db_new_mu);
		due = log_throttle_due(&db_new_warn, DB_WARN_EVERY_S, &held);
		pthread_mutex_unlock(&db_new_mu);
		/* PQerrorMessage names host and port, never the password. */
		if (due)
			log_error("cannot connect to postgresql",
			          LF_STR("reason", d->conn ? db_reason(PQerrorMessage(d->conn), buf,
			                                               sizeof(buf))
			                                   : "out of memory"),
			          LF_INT("warnings_suppressed", held));
		PQfinish(d->conn);
		free(d);
		return NULL;
	}
	pthread_mutex_lock(&db_new_mu);
	due = log_throttle_clear(&db_new_warn, &held);
	pthread_mutex_unlock(&db_new_mu);
	if (due)
		log_info("connected to postgresql", LF_INT("warnings_suppressed", held));
	PQsetNoticeReceiver(d->conn, db_notice, d);
	return d;
}

void db_free(struct db *d)
{
	if (!d)
		return;
	PQfinish(d->conn);
	free(d);
}

/*
 * An idle session gets nothing from the server unless the server is ending
 * it: a FATAL error (a restart, pg_terminate_backend) and the end of the
 * stream. Read what is there without waiting, so that a session closed
 * meanwhile is noticed before a statement is sent on it rather than by
 * that statement failing. (A restart would otherwise fail the first
 * statement on every pooled connection.)
 */
static void db_check_idle(struct db *d)
{
	struct pollfd p;
	int i;

	if (PQtransactionStatus(d->conn) != PQTRANS_IDLE)
		return;
	p.fd = PQsocket(d->conn);
	p.events = POLLIN;
	/* The error message and the end of the stream may come apart. */
	for (i = 0; i < 4 && !d->closing && PQstatus(d->conn) == CONNECTION_OK; i++) {
		p.revents = 0;
		if (p.fd < 0 || poll(&p, 1, 0) != 1)
			return;
		/* Fails at the end of the stream, marking the connection bad. */
		if (!PQconsumeInput(d->conn))
			return;
		/* Parses what arrived: an error goes to db_notice. */
		(void)PQisBusy(d->conn);
	}
}

PGconn *db_conn(struct db *d)
{
	char buf[DB_REASON_MAX];
	long held;

	if (!d || !d->conn)
		return NULL;
	if (PQstatus(d->conn) == CONNECTION_OK)
		db_check_idle(d);
	if (PQstatus(d->conn) == CONNECTION_OK && !d->closing)
		return d->conn;
	/* PQreset keeps the PGconn (and its notice receiver) and opens a new
	 * session: whatever transaction was open is gone, and so is every
	 * statement the old one had prepared, whether the reset works or not. */
	d->closing = 0;
	d->nstmts = 0;
	d->warned_full = 0;
	PQreset(d->conn);
	if (PQstatus(d->conn) == CONNECTION_OK) {
		log_throttle_clear(&d->reconnect_warn, &held);
		log_info("reconnected to postgresql", LF_INT("warnings_suppressed", held));
		return d->conn;
	}
	if (log_throttle_due(&d->reconnect_warn, DB_WARN_EVERY_S, &held))
		log_warn("cannot reconnect to postgresql",
		         LF_STR("reason", db_reason(PQerrorMessage(d->conn), buf, sizeof(buf))),
		         LF_INT("warnings_suppressed", held));
	return NULL;
}

int db_sqlstate_err(const char *state)
{
	if (!state)
		return ERR_DB;
	if (strcmp(state, "23505") == 0)
		return ERR_CONFLICT;
	if (strcmp(state, "23514") == 0)
		return ERR_INVALID;
	if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
		return ERR_TIMEOUT;
	/*
	 * 08P01 (protocol_violation) is what the server answers to a statement
	 * sent with the wrong number of parameters: our bug, sent on a healthy
	 * connection. As ERR_UNAVAILABLE a consumer would hold and retry the
	 * message as if PostgreSQL were down; as ERR_DB it is retried up to the
	 * delivery limit and dead-lettered. The rest of class 08 is connection
	 * exceptions; 57P01-57P03 are the server shutting down or not yet up.
	 */
	if (strcmp(state, "08P01") == 0)
		return ERR_DB;
	if (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
	    strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0)
		return ERR_UNAVAILABLE;
	return ERR_DB;
}

/*
 * The error code for a failed result. The connection's state is checked
 * first: a lost connection often has no SQLSTATE at all.
 */
static int db_classify(PGconn *conn, const char *state)
{
	if (PQstatus(conn) != CONNECTION_OK)
		return ERR_UNAVAILABLE;
	return db_sqlstate_err(state);
}

/*
 * Only the primary message, the constraint and the table are logged:
 * PostgreSQL's DETAIL repeats the row's values ("Failing row contains"),
 * and values are never ours to log.
 */
static void db_log_failure(PGconn *conn, const PGresult *r, int rc, const char *stmt)
{
	char buf[DB_REASON_MAX];
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *constraint = r ? PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) : NULL;
	const char *table = r ? PQresultErrorField(r, PG_DIAG_TABLE_NAME) : NULL;

	/* Without a server message, libpq's own (e.g. "server closed the
	 * connection unexpectedly") says what happened. */
	if (!msg && r && PQresultErrorMessage(r)[0])
		msg = PQresultErrorMessage(r);
	if (!msg && PQerrorMessage(conn)[0])
		msg = PQerrorMessage(conn);
	if (!msg && r)
		msg = PQresStatus(PQresultStatus(r));
	msg = db_reason(msg, buf, sizeof(buf));
	if (rc == ERR_CONFLICT)
		log_debug("postgresql statement failed", LF_STR("reason", msg),
		          LF_STR("sqlstate", state ? state : ""),
		          LF_STR("constraint", constraint ? constraint : ""),
		          LF_STR("table", table ? table : ""), LF_STR("statement", stmt));
	else
		log_warn("postgresql statement failed", LF_STR("reason", msg),
		         LF_STR("sqlstate", state ? state : ""),
		         LF_STR("constraint", constraint ? constraint : ""),
		         LF_STR("table", table ? table : ""), LF_STR("statement", stmt),
		         LF_STR("error", err_str(rc)));
}

/*
 * Take r, what libpq answered to a statement sent on d's conn: ERR_OK with
 * r handed to *res (or cleared when res is NULL), else the error, logged,
 * with r cleared. stmt names the prepared statement, "" for none.
 */
static int db_result(struct db *d, PGconn *conn, PGresult *r, const char *stmt, PGresult **res)
{
	const char *state;
	int rc;

	if (!r) {
		/* libpq gives no result when it could not send the statement
		 * or ran out of memory: nothing ran either way. */
		rc = ERR_UNAVAILABLE;
		db_log_failure(conn, NULL, rc, stmt);
		return rc;
	}
	switch (PQresultStatus(r)) {
	case PGRES_COMMAND_OK:
	case PGRES_TUPLES_OK:
		if (res)
			*res = r;
		else
			PQclear(r);
		return ERR_OK;
	case PGRES_FATAL_ERROR:
		state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		rc = db_classify(conn, state);
		/*
		 * The session's prepared statements are not what d thinks: it
		 * lacks one d prepared (26000, someone ran DEALLOCATE), has one
		 * d did not prepare (42P05, someone ran PREPARE), or a schema
		 * change made a plan's result type wrong (0A000, "cached plan
		 * must not change result type"). A new session mends all three:
		 * start one before the next statement, which prepares afresh.
		 */
		if (stmt[0] && state &&
		    (strcmp(state, "26000") == 0 || strcmp(state, "42P05") == 0 ||
		     strcmp(state, "0A000") == 0))
			d->closing = 1;
		break;
	default:
		/* An empty query or COPY: not what this API runs. */
		rc = PQstatus(conn) != CONNECTION_OK ? ERR_UNAVAILABLE : ERR_DB;
		break;
	}
	db_log_failure(conn, r, rc, stmt);
	PQclear(r);
	return rc;
}

int db_exec(struct db *d, const char *sql, int nparams, const char *const *params, PGresult **res)
{
	PGconn *conn;
	PGresult *r;

	if (!d || !sql || nparams < 0 || (nparams > 0 && !params))
		return ERR_INVALID;
	conn = db_conn(d);
	if (!conn)
		return ERR_UNAVAILABLE;
	/*
	 * No retry here even when the connection was lost: inside a
	 * transaction the earlier statements are gone with it, and outside
	 * one the statement may have run before the connection broke. The
	 * next call reconnects; the caller retries whole transactions.
	 */
	r = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	return db_result(d, conn, r, "", res);
}

/*
 * Whether d's session has prepared st: *known = 1 when it has (st itself,
 * or a twin with the same name and text). ERR_INVALID when it has prepared
 * other sql under st's name.
 */
static int db_stmt_known(const struct db *d, const struct db_stmt *st, int *known)
{
	int i;

	for (i = 0; i < d->nstmts; i++) {
		if (d->stmts[i] == st) {
			*known = 1;
			return ERR_OK;
		}
	}
	for (i = 0; i < d->nstmts; i++) {
		if (strcmp(d->stmts[i]->name, st->name) != 0)
			continue;
		if (strcmp(d->stmts[i]->sql, st->sql) != 0) {
			log_error("cannot prepare statement: its name is taken by another",
			          LF_STR("statement", st->name));
			return ERR_INVALID;
		}
		*known = 1;
		return ERR_OK;
	}
	*known = 0;
	return ERR_OK;
}

int db_exec_stmt(struct db *d, const struct db_stmt *st, int nparams, const char *const *params,
                 PGresult **res)
{
	PGconn *conn;
	PGresult *r;
	int rc, known = 0;

	if (!d || !st || !st->name || !st->sql || !st->name[0] ||
	    strlen(st->name) > DB_STMT_NAME_MAX || nparams < 0 || (nparams > 0 && !params))
		return ERR_INVALID;
	conn = db_conn(d);
	if (!conn)
		return ERR_UNAVAILABLE;
	rc = db_stmt_known(d, st, &known);
	if (rc)
		return rc;
	if (!known && d->nstmts == DB_STMTS_MAX) {
		/* Slower, not wrong: PostgreSQL parses it every time. */
		if (!d->warned_full) {
			d->warned_full = 1;
			log_warn("cannot prepare more statements on this connection, running "
			         "them unprepared",
			         LF_INT("prepared", d->nstmts), LF_STR("statement", st->name));
		}
		r = PQexecParams(conn, st->sql, nparams, NULL, params, NULL, NULL, 0);
		return db_result(d, conn, r, st->name, res);
	}
	if (!known) {
		/* The server infers the parameters' types, as for db_exec. */
		rc =
		    db_result(d, conn, PQprepare(conn, st->name, st->sql, 0, NULL), st->name, NULL);
		if (rc)
			return rc;
		d->stmts[d->nstmts++] = st;
	}
	r = PQexecPrepared(conn, st->name, nparams, params, NULL, NULL, 0);
	return db_result(d, conn, r, st->name, res);
}

int db_begin(struct db *d)
{
	return db_exec(d, "BEGIN", 0, NULL, NULL);
}

int db_commit(struct db *d)
{
	PGresult *r = NULL;
	int rc;

	rc = db_exec(d, "COMMIT", 0, NULL, &r);
	if (rc != ERR_OK)
		return rc;
	/*
	 * COMMIT of a transaction that already failed "succeeds" with the tag
	 * ROLLBACK: nothing was written, and the caller must hear about it.
	 */
	if (strcmp(PQcmdStatus(r), "ROLLBACK") == 0) {
		log_warn("postgresql transaction rolled back at commit",
		         LF_STR("reason", "an earlier statement in it failed"));
		rc = ERR_DB;
	}
	PQclear(r);
	return rc;
}

int db_rollback(struct db *d)
{
	return db_exec(d, "ROLLBACK", 0, NULL, NULL);
}

int db_ping(struct db *d)
{
	int rc = db_exec(d, "SELECT 1", 0, NULL, NULL);

	/* A server restart is only noticed by the first statement after it;
	 * SELECT 1 is safe to run again on the new connection. */
	if (rc == ERR_UNAVAILABLE)
		rc = db_exec(d, "SELECT 1", 0, NULL, NULL);
	return rc;
}

/* ---- pool -------------------------------------------------------------- */

static void *db_pool_open(void *arg)
{
	return db_new(arg);
}

static void db_pool_close(void *conn, void *arg)
{
	(void)arg;
	db_free(conn);
}

/* A transaction left open must not leak into the next user's work. */
static void db_pool_reset(void *conn, void *arg)
{
	struct db *d = conn;
	PGTransactionStatusType ts = PQtransactionStatus(d->conn);

	(void)arg;
	if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
		log_warn("postgresql connection returned inside a transaction",
		         LF_STR("reason", "rolled back"));
		db_rollback(d);
	}
}

static const struct pool_ops db_pool_ops = {
    .open = db_pool_open,
    .close = db_pool_close,
    .reset = db_pool_reset,
};

struct db_pool *db_pool_new(const char *dsn, int size)
{
	struct db_pool *p;
	size_t n;

	if (!dsn || size < 1)
		return NULL;
	n = strlen(dsn) + 1;
	p = malloc(sizeof(*p) + n);
	if (!p)
		return NULL;
	memcpy(p->dsn, dsn, n);
	p->pool = pool_new(size, &db_pool_ops, p->dsn);
	if (!p->pool) {
		free(p);
		return NULL;
	}
	return p;
}

/* Every connection must have been put back first. */
void db_pool_free(struct db_pool *p)
{
	if (!p)
		return;
	pool_free(p->pool);
	free(p);
}

struct db *db_pool_get(struct db_pool *p)
{
	return p ? pool_get(p->pool) : NULL;
}

void db_pool_put(struct db_pool *p, struct db *d)
{
	if (p)
		pool_put(p->pool, d);
}
