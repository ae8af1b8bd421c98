/*
 * cache.h: Redis connections with reconnect, and a pool. Plain TCP
 * (redis://) or TLS (rediss://), with AUTH; our own socket and OpenSSL for
 * the transport, hiredis 0.14 only for the wire format (its command
 * formatting and its reply parser: it has no TLS of its own).
 *
 * A struct cache is one synchronous connection used by one thread at a
 * time. Redis is a cache and a fast path, never the only copy of anything.
 *
 * A TLS connection writes through OpenSSL's socket BIO (write(2)): the
 * process must ignore SIGPIPE, as the daemons do.
 */
#ifndef ORDERS_CACHE_H
#define ORDERS_CACHE_H

#include <stddef.h>

#include <hiredis/hiredis.h>

/* Bounds of a URL's parts (bytes; user and password after percent-decoding). */
#define CACHE_HOST_MAX 256
#define CACHE_USER_MAX 128
#define CACHE_PASSWORD_MAX 256

/*
 * ORDERS_REDIS_URL, taken apart:
 *
 *   redis://[[user]:password@]host[:port][/db]     plain TCP
 *   rediss://[[user]:password@]host[:port][/db]    TLS
 *
 * host is a name, an IPv4 address or [an IPv6 one] (default 127.0.0.1),
 * port 1-65535 (default 6379), db 0-65535 (default 0). user and password
 * are written percent-encoded where they hold anything but letters, digits
 * and -._~!$&'()*+,;= (a ':' may also stand in the password); %00 is
 * refused. With a password the connection starts with AUTH (Redis 6 ACL
 * "AUTH user password" when a user is given, else "AUTH password").
 */
struct cache_url {
	char host[CACHE_HOST_MAX]; /* without the brackets of an IPv6 address */
	int port;
	int db;
	int tls;                               /* rediss:// */
	char user[CACHE_USER_MAX + 1];         /* "" when none */
	char password[CACHE_PASSWORD_MAX + 1]; /* "" when none: no AUTH */
};

/*
 * cache_url_parse - take url apart into *out. ERR_OK; ERR_INVALID with *why
 * set to a sentence saying what is wrong (static; it never quotes the URL,
 * which may hold a password). *out is set only on success and may hold a
 * password: explicit_bzero() it after use. Thread-safe.
 */
int cache_url_parse(const char *url, struct cache_url *out, const char **why);

/*
 * cache_tls_configure - the CA file (PEM) rediss:// connections verify
 * Redis's certificate with; NULL or "" for the system's trust store, which
 * is also what is used when this is never called. The file is checked now
 * (tls_check_files), so that a bad one stops start-up: ERR_OK, or
 * ERR_INVALID / ERR_NOMEM with a reason naming the file. Every connection
 * made afterwards uses the new settings; open ones keep theirs. TLS 1.2 or
 * later, the chain and the URL's host (name or address) verified, SNI for
 * a name. Thread-safe: one OpenSSL context shared by every connection of
 * the process, replaced under a lock.
 */
int cache_tls_configure(const char *ca_file, char *reason, size_t size);

struct cache;

/*
 * cache_new - parse url (struct cache_url) and connect: TCP within 1 s, then
 * the TLS handshake, AUTH and SELECT within another second. NULL when the URL
 * is bad (logged with the reason, never the URL) or on ERR_NOMEM; a
 * connection that fails (unreachable, refused password or certificate) is
 * logged and retried on first use, and counts as unavailable until then.
 */
struct cache *cache_new(const char *url);
void cache_free(struct cache *c);

/*
 * cache_command - like redisCommand (same format): a batch of one, so the
 * same rules as cache_batch_run. Returns the reply (freeReplyObject it) or
 * NULL when Redis cannot be reached or did not answer within 1 s; a
 * REDIS_REPLY_ERROR reply is returned as is.
 */
redisReply *cache_command(struct cache *c, const char *fmt, ...);

/*
 * A batch of commands written to Redis together and answered in one round
 * trip (pipelining): a handful of commands cost about what one does. At
 * most CACHE_BATCH_MAX commands; the arrays grow with the batch, so a small
 * one is small. Caller-owned; init, add, run (any number of times), release.
 */
#define CACHE_BATCH_MAX 128

struct cache_batch {
	size_t n, cap;
	char **cmd;   /* n commands formatted for the wire, each malloc'd */
	size_t *len;  /* their lengths */
	int broken;   /* an add failed: run refuses the batch */
	int borrowed; /* the commands are other batches' (cache_batch_borrow) */
};

void cache_batch_init(struct cache_batch *b);
void cache_batch_release(struct cache_batch *b);

/* cache_batch_add - append a command (redisCommand's format). ERR_OK;
 * ERR_TOO_BIG when the batch is full, ERR_NOMEM; either way run fails. */
int cache_batch_add(struct cache_batch *b, const char *fmt, ...);

/* cache_batch_add_argv - the same with the command as argc arguments
 * (argvlen[i] bytes of argv[i]; argvlen NULL: NUL-terminated strings):
 * no format to parse, for commands on a hot path. */
int cache_batch_add_argv(struct cache_batch *b, int argc, const char **argv, const size_t *argvlen);

/*
 * cache_batch_borrow - append src's commands to dst without copying them, so
 * that the commands of many batches go in one round trip while each batch
 * keeps its own (to run again should that round trip fail). src must outlive
 * dst's runs; releasing dst frees only its arrays. A batch either borrows or
 * adds commands of its own, never both. ERR_OK; ERR_TOO_BIG when they do not
 * all fit, ERR_NOMEM, ERR_INVALID when dst has commands of its own (nothing
 * is appended in any of these cases).
 */
int cache_batch_borrow(struct cache_batch *dst, const struct cache_batch *src);

/*
 * cache_batch_run - send every command in one write and read one reply each
 * into replies[0..n-1], in order (freeReplyObject each; an error reply is
 * returned as is), within 1 s. A lost connection is reconnected and the
 * whole batch sent once more; a timeout is not retried (the commands may
 * still run) and drops the connection, as do replies of more than
 * CACHE_REPLY_MAX bytes in all. Warnings are written at most once per 10 s
 * per connection. ERR_OK, or ERR_UNAVAILABLE / ERR_INVALID (a failed add)
 * with no reply set.
 */
#define CACHE_REPLY_MAX (64 * 1024 * 1024)

int cache_batch_run(struct cache *c, const struct cache_batch *b, redisReply **replies);

/* cache_ping - ERR_OK when PING answers PONG. */
int cache_ping(struct cache *c);

/* A pool of size connections to url, opened when first needed; NULL on a bad
 * URL (logged, checked here so that a daemon fails at start) or ERR_NOMEM.
 * Thread-safe, as are get and put. */
struct cache_pool;
struct cache_pool *cache_pool_new(const char *url, int size);
void cache_pool_free(struct cache_pool *p);
/* cache_pool_get - a connection for this thread's exclusive use (waits while
 * all are taken); NULL only on a bad URL. Give it back with put. */
struct cache *cache_pool_get(struct cache_pool *p);
void cache_pool_put(struct cache_pool *p, struct cache *c);

#endif
