/*
 * pool.h: a bounded pool of connections of any kind, shared by threads.
 *
 * The pool knows nothing about what it holds: the owner supplies callbacks
 * that open, close and reset one connection, and an argument passed to
 * each (a DSN, a URL). Connections are opened lazily, at most size of them
 * exist at a time, a get waits while all are handed out, and a put hands a
 * connection back for the next get. db_pool and cache_pool are thin
 * wrappers over this one.
 *
 * All functions are thread-safe, except pool_free, which must be the last
 * call on the pool.
 */
#ifndef ORDERS_POOL_H
#define ORDERS_POOL_H

struct pool;

/*
 * open - a new connection, or NULL when none can be made (the callback
 * logs why). It runs without the pool's lock, possibly in several threads
 * at once, so it may take a network round trip or a timeout.
 * close - free a connection the pool no longer keeps.
 * reset - called by pool_put, without the lock, before the connection is
 * made available again: undo whatever the last user may have left behind
 * (an open transaction). May be NULL.
 */
struct pool_ops {
	void *(*open)(void *arg);
	void (*close)(void *conn, void *arg);
	void (*reset)(void *conn, void *arg);
};

/*
 * pool_new - an empty pool of up to size connections; nothing is opened
 * until the first pool_get. ops is copied; arg is passed to every callback
 * and stays the caller's: it must live until pool_free returns. NULL when
 * size < 1, ops or its open or close is NULL, or on ERR_NOMEM.
 */
struct pool *pool_new(int size, const struct pool_ops *ops, void *arg);

/*
 * pool_free - close every idle connection and free the pool. Every
 * connection handed out must have been put back first: one still out is
 * neither closed nor tracked any more (the caller must close it). NULL is
 * a no-op.
 */
void pool_free(struct pool *p);

/*
 * pool_get - a connection for the calling thread's exclusive use: an idle
 * one when there is one (the most recently put back), else a new one when
 * fewer than size exist, else it waits for a pool_put. NULL when the pool
 * is NULL or the open callback fails; the failed attempt does not use up
 * a slot, and a thread waiting for one is woken to try its own open.
 * Give the connection back with pool_put (or it is lost to the pool).
 */
void *pool_get(struct pool *p);

/*
 * pool_put - give back a connection from pool_get: it is reset, then kept
 * idle for the next get, waking one waiter. A connection put back more
 * often than taken is a caller bug; one that would not fit is closed
 * rather than kept. A NULL pool or connection is a no-op.
 */
void pool_put(struct pool *p, void *conn);

#endif
