/* cache.c: Redis connections (plain or TLS, with AUTH) that reconnect once on failure, and a pool.
 */
#include "cache.h"

#include "err.h"
#include "log.h"
#include "pool.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* A Redis that is down warns at most this often per connection. */
#define CACHE_WARN_EVERY_S 10
/* Connecting, the set-up exchange (TLS, AUTH, SELECT) and each batch. */
#define CACHE_TIMEOUT_MS 1000
/* What one read takes, and what a TLS write gathers small commands into (a record's worth). */
#define CACHE_CHUNK (16 * 1024)
/* As hiredis set them: a peer that vanished without closing is noticed within ~30 s. */
#define CACHE_KEEPALIVE_IDLE_S 15
#define CACHE_KEEPALIVE_INTERVAL_S 5
#define CACHE_KEEPALIVE_COUNT 3

/* How an exchange with Redis ended. */
enum io {
	IO_OK = 0,
	IO_LOST = -1,    /* the connection broke: reconnect and try again */
	IO_TIMEOUT = -2, /* no answer in time: the commands may still run, so no retry */
	IO_REFUSED = -3, /* over CACHE_REPLY_MAX: no retry either */
};

struct cache {
	struct cache_url url; /* holds the password: wiped when freed */
	int fd;               /* -1 while not connected */
	SSL *ssl;             /* for rediss:// while connected */
	redisReader *reader;  /* while connected */
	char *out;            /* rediss://: CACHE_CHUNK bytes that gather small commands */
	char why[160];        /* what went wrong in the last failed exchange */
	time_t last_warn;     /* CLOCK_MONOTONIC seconds of the last warning */
	long suppressed;      /* warnings not written since */
	char in[CACHE_CHUNK];
};

/* The pool mechanism is pool.c's; this only adds the URL to open with. */
struct cache_pool {
	struct pool *pool;
	size_t url_len;
	char url[]; /* the open callback's argument; lives as long as pool */
};

/* ---- TLS settings ---------------------------------------------------------- */

/* The context every rediss:// connection is made from; SSL_new holds a reference. */
static pthread_mutex_t tls_lock = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *tls_ctx; /* guarded by tls_lock; NULL until needed or configured */

/*
 * OpenSSL works out a certificate's extensions when it first checks a chain
 * with it, under the certificate's lock, and later checks read them without
 * the lock once a flag says they are there: threads verifying against one
 * shared CA certificate race on that first time (ThreadSanitizer sees it).
 * Working them out here, before the context is shared, leaves nothing to
 * race on. The system trust store's certificates are loaded on demand and
 * are not covered; the CA file's are.
 */
static void tls_ctx_warm(SSL_CTX *ctx)
{
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));

	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));

		if (x)
			X509_check_purpose(x, -1, 0);
	}
}

/* A client context for ca_file (NULL or "": the system's trust store), or NULL with a reason. */
static SSL_CTX *tls_ctx_new(const char *ca_file, char *reason, size_t size)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	int has_ca = ca_file && *ca_file;

	if (!ctx) {
		snprintf(reason, size, "cannot set up tls: out of memory");
		goto fail;
	}
	/* Redis never renegotiates; a renegotiation would make a read want to write. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		snprintf(reason, size, "cannot set up tls: no TLS 1.2");
		goto fail;
	}
	if (has_ca ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1
	           : SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(reason, size, "cannot load the CA file '%s'",
		         has_ca ? ca_file : "(system trust store)");
		goto fail;
	}
	tls_ctx_warm(ctx);
	ERR_clear_error();
	return ctx;
fail:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

int cache_tls_configure(const char *ca_file, char *reason, size_t size)
{
	SSL_CTX *ctx, *old;
	int rc = tls_check_files(ca_file, NULL, NULL, reason, size);

	if (rc != ERR_OK)
		return rc;
	ctx = tls_ctx_new(ca_file, reason, size);
	if (!ctx)
		return ERR_INVALID;
	pthread_mutex_lock(&tls_lock);
	old = tls_ctx;
	tls_ctx = ctx;
	pthread_mutex_unlock(&tls_lock);
	/* Connections made from it hold references of their own. */
	SSL_CTX_free(old);
	return ERR_OK;
}

/* A session from the shared context (made with the system's trust store when
 * nothing was configured), or NULL with c->why set. */
static SSL *tls_session_new(struct cache *c)
{
	SSL *ssl = NULL;

	pthread_mutex_lock(&tls_lock);
	if (!tls_ctx)
		tls_ctx = tls_ctx_new(NULL, c->why, sizeof(c->why));
	if (tls_ctx) {
		ssl = SSL_new(tls_ctx);
		if (!ssl)
			snprintf(c->why, sizeof(c->why), "cannot set up tls: out of memory");
	}
	pthread_mutex_unlock(&tls_lock);
	ERR_clear_error();
	return ssl;
}

/* ---- warnings ---------------------------------------------------------- */

static time_t cache_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A warning about this connection, unless one was written in the last
 * CACHE_WARN_EVERY_S seconds: a Redis outage would otherwise write a line
 * per request. */
static void cache_warn(struct cache *c, const char *msg, const char *reason)
{
	time_t now = cache_now();

	if (c->last_warn != 0 && now - c->last_warn < CACHE_WARN_EVERY_S) {
		c->suppressed++;
		return;
	}
	log_warn(msg, LF_STR("reason", reason ? reason : "unknown"), LF_STR("host", c->url.host),
	         LF_INT("port", c->url.port), LF_INT("tls", c->url.tls),
	         LF_INT("warnings_suppressed", c->suppressed));
	c->last_warn = now;
	c->suppressed = 0;
}

/* ---- transport --------------------------------------------------------- */

/* Record why an exchange failed (c->why) and say how. */
static int io_fail(struct cache *c, int how, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int io_fail(struct cache *c, int how, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
	return how;
}

static int io_errno(struct cache *c, const char *what)
{
	char ebuf[96];

	return io_fail(c, IO_LOST, "%s: %s", what, strerror_r(errno, ebuf, sizeof(ebuf)));
}

/* Wait until fd has events or deadline (CLOCK_MONOTONIC ms): IO_OK, IO_TIMEOUT or IO_LOST. */
static int wait_fd(struct cache *c, short events, int64_t deadline)
{
	struct pollfd p = {.fd = c->fd, .events = events};

	for (;;) {
		int64_t left = deadline - now_ms();
		int n;

		if (left <= 0)
			return io_fail(c, IO_TIMEOUT, "no answer within %d ms", CACHE_TIMEOUT_MS);
		n = poll(&p, 1, (int)left);
		/* An error or a hang-up is for the read or write to report. */
		if (n > 0)
			return IO_OK;
		if (n < 0 && errno != EINTR)
			return io_errno(c, "poll");
	}
}

/* After a send or recv failed: IO_OK to try again (interrupted, or the socket is ready
 * now), else why not. */
static int sock_retry(struct cache *c, const char *what, short events, int64_t deadline)
{
	if (errno == EINTR)
		return IO_OK;
	if (errno != EAGAIN && errno != EWOULDBLOCK)
		return io_errno(c, what);
	return wait_fd(c, events, deadline);
}

/* After an SSL call returned r: wait for what it wants, or say why it failed. */
static int tls_wait(struct cache *c, int r, int64_t deadline)
{
	int e = SSL_get_error(c->ssl, r);
	unsigned long code;
	long verify;

	switch (e) {
	case SSL_ERROR_WANT_READ:
		return wait_fd(c, POLLIN, deadline);
	case SSL_ERROR_WANT_WRITE:
		return wait_fd(c, POLLOUT, deadline);
	case SSL_ERROR_ZERO_RETURN:
		return io_fail(c, IO_LOST, "redis closed the tls connection");
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			if (errno == 0)
				return io_fail(c, IO_LOST, "redis closed the connection");
			return io_errno(c, "tls");
		}
		break;
	default:
		break;
	}
	verify = SSL_get_verify_result(c->ssl);
	if (verify != X509_V_OK) {
		ERR_clear_error();
		return io_fail(c, IO_LOST, "certificate verification failed: %s",
		               X509_verify_cert_error_string(verify));
	}
	code = ERR_peek_error();
	io_fail(c, IO_LOST, "tls: %s",
	        code && ERR_reason_error_string(code) ? ERR_reason_error_string(code)
	                                              : "the tls session failed");
	ERR_clear_error();
	return IO_LOST;
}

static void cache_disconnect(struct cache *c)
{
	/* No close_notify: the connection may be broken, and Redis needs none. */
	SSL_free(c->ssl);
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	if (c->reader)
		redisReaderFree(c->reader);
	c->reader = NULL;
}

/* A connected socket to one of host's addresses in c->fd, before deadline. */
static int tcp_connect(struct cache *c, int64_t deadline)
{
	struct addrinfo hints, *res = NULL, *ai;
	const int one = 1, idle = CACHE_KEEPALIVE_IDLE_S, intvl = CACHE_KEEPALIVE_INTERVAL_S,
	          cnt = CACHE_KEEPALIVE_COUNT;
	char port[8];
	int rc = IO_LOST, err;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%d", c->url.port);
	err = getaddrinfo(c->url.host, port, &hints, &res);
	if (err != 0)
		return io_fail(c, IO_LOST, "cannot resolve the host: %s", gai_strerror(err));
	for (ai = res; ai; ai = ai->ai_next) {
		socklen_t len = sizeof(err);

		c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		               ai->ai_protocol);
		if (c->fd < 0) {
			rc = io_errno(c, "socket");
			continue;
		}
		if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno != EINPROGRESS) {
			rc = io_errno(c, "connect");
		} else if ((rc = wait_fd(c, POLLOUT, deadline)) == IO_OK) {
			if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
				err = errno;
			if (err == 0)
				break;
			errno = err;
			rc = io_errno(c, "connect");
		}
		close(c->fd);
		c->fd = -1;
		if (rc == IO_TIMEOUT)
			break;
	}
	freeaddrinfo(res);
	if (c->fd < 0)
		return rc;
	/* Commands are written whole: no reason to wait for more. The rest notices
	 * a peer that vanished without closing (failover, NAT). */
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	return IO_OK;
}

/* The TLS handshake on c->fd: the chain and the URL's host verified. */
static int tls_connect(struct cache *c, int64_t deadline)
{
	struct in6_addr addr;
	int is_ip = inet_pton(AF_INET, c->url.host, &addr) == 1 ||
	            inet_pton(AF_INET6, c->url.host, &addr) == 1;
	int r, rc;

	if (!c->out) {
		c->out = malloc(CACHE_CHUNK);
		if (!c->out)
			return io_fail(c, IO_LOST, "out of memory");
	}
	c->ssl = tls_session_new(c);
	if (!c->ssl)
		return IO_LOST;
	SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	/* An address is checked against the certificate's IP names; SNI is for names only. */
	if (SSL_set_fd(c->ssl, c->fd) != 1 ||
	    (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->url.host) != 1
	           : SSL_set_tlsext_host_name(c->ssl, c->url.host) != 1 ||
	                 SSL_set1_host(c->ssl, c->url.host) != 1)) {
		ERR_clear_error();
		return io_fail(c, IO_LOST, "cannot set up tls for the host");
	}
	for (;;) {
		ERR_clear_error();
		r = SSL_connect(c->ssl);
		if (r == 1)
			return IO_OK;
		rc = tls_wait(c, r, deadline);
		if (rc != IO_OK)
			return rc;
	}
}

/* Write buf[0..len) through TLS whole, resuming as OpenSSL asks (same arguments). */
static int tls_write(struct cache *c, const char *buf, size_t len, int64_t deadline)
{
	while (len > 0) {
		int n = len > INT32_MAX ? INT32_MAX : (int)len, r, rc;

		ERR_clear_error();
		r = SSL_write(c->ssl, buf, n);
		if (r > 0) {
			buf += r;
			len -= (size_t)r;
			continue;
		}
		rc = tls_wait(c, r, deadline);
		if (rc != IO_OK)
			return rc;
	}
	return IO_OK;
}

/*
 * Write the n buffers of iov whole before deadline. Plain: one sendmsg of all
 * of them (continued where the socket took less). TLS: small ones gathered
 * into records of up to CACHE_CHUNK bytes, a large one written as it is.
 */
static int conn_writev(struct cache *c, struct iovec *iov, int n, int64_t deadline)
{
	size_t used = 0;
	int i, rc;

	if (c->ssl) {
		for (i = 0; i < n; i++) {
			if (used + iov[i].iov_len > CACHE_CHUNK && used > 0) {
				rc = tls_write(c, c->out, used, deadline);
				if (rc != IO_OK)
					return rc;
				used = 0;
			}
			if (iov[i].iov_len >= CACHE_CHUNK) {
				rc = tls_write(c, iov[i].iov_base, iov[i].iov_len, deadline);
				if (rc != IO_OK)
					return rc;
				continue;
			}
			memcpy(c->out + used, iov[i].iov_base, iov[i].iov_len);
			used += iov[i].iov_len;
		}
		return used > 0 ? tls_write(c, c->out, used, deadline) : IO_OK;
	}
	while (n > 0) {
		struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		/* A closed peer is an error to report, not a SIGPIPE. */
		ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);

		if (w < 0) {
			rc = sock_retry(c, "write", POLLOUT, deadline);
			if (rc != IO_OK)
				return rc;
			continue;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return IO_OK;
}

/*
 * Read what has arrived into c->in: the byte count, or an enum io. When
 * wait_first, waits for data before trying (just after a write, the answer
 * is never there yet: this saves a read that would find nothing).
 */
static ssize_t conn_read(struct cache *c, int wait_first, int64_t deadline)
{
	ssize_t r;
	int rc;

	if (c->ssl) {
		if (wait_first && !SSL_has_pending(c->ssl)) {
			rc = wait_fd(c, POLLIN, deadline);
			if (rc != IO_OK)
				return rc;
		}
		for (;;) {
			ERR_clear_error();
			r = SSL_read(c->ssl, c->in, sizeof(c->in));
			if (r > 0)
				return r;
			rc = tls_wait(c, (int)r, deadline);
			if (rc != IO_OK)
				return rc;
		}
	}
	if (wait_first) {
		rc = wait_fd(c, POLLIN, deadline);
		if (rc != IO_OK)
			return rc;
	}
	for (;;) {
		r = recv(c->fd, c->in, sizeof(c->in), 0);
		if (r > 0)
			return r;
		if (r == 0)
			return io_fail(c, IO_LOST, "redis closed the connection");
		rc = sock_retry(c, "read", POLLIN, deadline);
		if (rc != IO_OK)
			return rc;
	}
}

/*
 * One exchange on the connection: write the n commands in one go, then read
 * n replies into replies (all or none are set).
 */
static int exchange(struct cache *c, char *const *cmd, const size_t *len, size_t n,
                    redisReply **replies, int64_t deadline)
{
	struct iovec iov[CACHE_BATCH_MAX];
	size_t i, got = 0, total = 0;
	int wait_first = 1, rc;

	for (i = 0; i < n; i++) {
		iov[i].iov_base = cmd[i];
		iov[i].iov_len = len[i];
	}
	rc = conn_writev(c, iov, (int)n, deadline);
	if (rc != IO_OK)
		return rc;
	while (got < n) {
		void *rep = NULL;
		ssize_t r;

		if (redisReaderGetReply(c->reader, &rep) != REDIS_OK) {
			rc = io_fail(c, IO_LOST, "cannot parse the reply: %s", c->reader->errstr);
			goto fail;
		}
		if (rep) {
			replies[got++] = rep;
			continue;
		}
		r = conn_read(c, wait_first, deadline);
		if (r < 0) {
			rc = (int)r;
			goto fail;
		}
		wait_first = 0;
		total += (size_t)r;
		if (total > CACHE_REPLY_MAX) {
			rc = io_fail(c, IO_REFUSED, "the replies are larger than %d bytes",
			             CACHE_REPLY_MAX);
			goto fail;
		}
		if (redisReaderFeed(c->reader, c->in, (size_t)r) != REDIS_OK) {
			rc = io_fail(c, IO_LOST, "cannot parse the reply: %s", c->reader->errstr);
			goto fail;
		}
	}
	return IO_OK;
fail:
	while (got > 0)
		freeReplyObject(replies[--got]);
	return rc;
}

/*
 * AUTH (when the URL has a password) and SELECT (db other than 0), written
 * together. ERR_OK, or ERR_UNAVAILABLE after a warning: an AUTH refused is
 * named with Redis's words, which never include the password.
 */
static int cache_setup(struct cache *c, int64_t deadline)
{
	const char *argv[3];
	char *cmd[2] = {NULL, NULL};
	size_t len[2], n = 0, i;
	redisReply *rep[2] = {NULL, NULL};
	char db[16];
	int auth = c->url.password[0] != '\0', rc = ERR_UNAVAILABLE, l;

	if (auth) {
		int argc = 0;

		argv[argc++] = "AUTH";
		if (c->url.user[0])
			argv[argc++] = c->url.user;
		argv[argc++] = c->url.password;
		l = redisFormatCommandArgv(&cmd[n], argc, argv, NULL);
		if (l < 0)
			goto nomem;
		len[n++] = (size_t)l;
	}
	if (c->url.db != 0) {
		snprintf(db, sizeof(db), "%d", c->url.db);
		argv[0] = "SELECT";
		argv[1] = db;
		l = redisFormatCommandArgv(&cmd[n], 2, argv, NULL);
		if (l < 0)
			goto nomem;
		len[n++] = (size_t)l;
	}
	if (n == 0)
		return ERR_OK;
	if (exchange(c, cmd, len, n, rep, deadline) != IO_OK) {
		cache_warn(c, "cannot connect to redis", c->why);
		goto out;
	}
	if (auth && rep[0]->type == REDIS_REPLY_ERROR) {
		cache_warn(c, "redis refused the password", rep[0]->str);
		goto out;
	}
	if (c->url.db != 0 && rep[n - 1]->type == REDIS_REPLY_ERROR) {
		cache_warn(c, "cannot select redis database", rep[n - 1]->str);
		goto out;
	}
	rc = ERR_OK;
	goto out;
nomem:
	cache_warn(c, "cannot connect to redis", "out of memory");
out:
	for (i = 0; i < 2; i++) {
		freeReplyObject(rep[i]);
		/* The AUTH command holds the password. */
		if (cmd[i])
			explicit_bzero(cmd[i], len[i]);
		redisFreeCommand(cmd[i]);
	}
	return rc;
}

static int cache_connect(struct cache *c)
{
	int64_t deadline = now_ms() + CACHE_TIMEOUT_MS;

	cache_disconnect(c);
	c->reader = redisReaderCreate();
	if (!c->reader) {
		cache_warn(c, "cannot connect to redis", "out of memory");
		return ERR_UNAVAILABLE;
	}
	if (tcp_connect(c, deadline) != IO_OK) {
		cache_warn(c, "cannot connect to redis", c->why);
		goto fail;
	}
	/* The handshake, AUTH and SELECT get a second of their own. */
	deadline = now_ms() + CACHE_TIMEOUT_MS;
	if (c->url.tls && tls_connect(c, deadline) != IO_OK) {
		cache_warn(c, "cannot connect to redis over tls", c->why);
		goto fail;
	}
	if (cache_setup(c, deadline) != ERR_OK)
		goto fail;
	if (c->last_warn != 0) {
		log_info("reconnected to redis", LF_STR("host", c->url.host),
		         LF_INT("port", c->url.port), LF_INT("tls", c->url.tls),
		         LF_INT("warnings_suppressed", c->suppressed));
		c->last_warn = 0;
		c->suppressed = 0;
	}
	return ERR_OK;
fail:
	cache_disconnect(c);
	return ERR_UNAVAILABLE;
}

struct cache *cache_new(const char *url)
{
	const char *why = NULL;
	struct cache *c;

	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->fd = -1;
	if (cache_url_parse(url, &c->url, &why) != ERR_OK) {
		/* The URL is not logged: it may hold a password. */
		log_error("cannot use redis url", LF_STR("reason", why));
		free(c);
		return NULL;
	}
	/* A failure here is logged and retried by the first command. */
	cache_connect(c);
	return c;
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	cache_disconnect(c);
	free(c->out);
	explicit_bzero(c, sizeof(*c));
	free(c);
}

void cache_batch_init(struct cache_batch *b)
{
	b->n = 0;
	b->cap = 0;
	b->cmd = NULL;
	b->len = NULL;
	b->broken = 0;
	b->borrowed = 0;
}

void cache_batch_release(struct cache_batch *b)
{
	for (size_t i = 0; !b->borrowed && i < b->n; i++)
		redisFreeCommand(b->cmd[i]);
	free(b->cmd);
	free(b->len);
	cache_batch_init(b);
}

/* Room for n commands in all. */
static int batch_reserve(struct cache_batch *b, size_t n)
{
	size_t cap = b->cap ? b->cap : 4;
	char **cmd;
	size_t *len;

	if (n > CACHE_BATCH_MAX)
		return ERR_TOO_BIG;
	if (n <= b->cap)
		return ERR_OK;
	while (cap < n)
		cap *= 2;
	if (cap > CACHE_BATCH_MAX)
		cap = CACHE_BATCH_MAX;
	cmd = realloc(b->cmd, cap * sizeof(*cmd));
	if (!cmd)
		return ERR_NOMEM;
	b->cmd = cmd;
	len = realloc(b->len, cap * sizeof(*len));
	if (!len)
		return ERR_NOMEM;
	b->len = len;
	b->cap = cap;
	return ERR_OK;
}

/* Append cmd (len bytes, formatted, malloc'd; NULL: formatting failed). */
static int batch_push(struct cache_batch *b, char *cmd, int len)
{
	int rc = b->borrowed ? ERR_INVALID : batch_reserve(b, b->n + 1);

	if (rc == ERR_OK && (len < 0 || !cmd))
		rc = ERR_NOMEM;
	if (rc != ERR_OK) {
		if (cmd)
			redisFreeCommand(cmd);
		b->broken = 1;
		return rc;
	}
	b->cmd[b->n] = cmd;
	b->len[b->n] = (size_t)len;
	b->n++;
	return ERR_OK;
}

static int batch_vadd(struct cache_batch *b, const char *fmt, va_list ap)
{
	char *cmd = NULL;
	int len = redisvFormatCommand(&cmd, fmt, ap);

	return batch_push(b, cmd, len);
}

int cache_batch_add_argv(struct cache_batch *b, int argc, const char **argv, const size_t *argvlen)
{
	char *cmd = NULL;
	int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);

	return batch_push(b, cmd, len);
}

int cache_batch_add(struct cache_batch *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = batch_vadd(b, fmt, ap);
	va_end(ap);
	return rc;
}

int cache_batch_borrow(struct cache_batch *dst, const struct cache_batch *src)
{
	int rc;

	if (dst->n > 0 && !dst->borrowed)
		return ERR_INVALID;
	rc = batch_reserve(dst, dst->n + src->n);
	if (rc != ERR_OK)
		return rc;
	dst->borrowed = 1;
	dst->broken |= src->broken;
	memcpy(dst->cmd + dst->n, src->cmd, src->n * sizeof(src->cmd[0]));
	memcpy(dst->len + dst->n, src->len, src->n * sizeof(src->len[0]));
	dst->n += src->n;
	return ERR_OK;
}

int cache_batch_run(struct cache *c, const struct cache_batch *b, redisReply **replies)
{
	int rc;

	if (!c || !b || b->broken)
		return ERR_INVALID;
	if (b->n == 0)
		return ERR_OK;
	if (c->fd >= 0) {
		rc = exchange(c, b->cmd, b->len, b->n, replies, now_ms() + CACHE_TIMEOUT_MS);
		if (rc == IO_OK)
			return ERR_OK;
		/*
		 * A timeout means Redis is slow, not gone, and the commands may
		 * still run: sending them again could apply them twice and would
		 * double the wait, so they are not retried. Either way the
		 * connection is out of step with its replies now.
		 */
		if (rc != IO_LOST) {
			cache_warn(
			    c, rc == IO_TIMEOUT ? "redis command timed out" : "redis reply refused",
			    c->why);
			cache_disconnect(c);
			return ERR_UNAVAILABLE;
		}
		cache_warn(c, "lost connection to redis", c->why);
	}
	/* Not connected, or the connection just broke: one new one, one try. */
	if (cache_connect(c) != ERR_OK)
		return ERR_UNAVAILABLE;
	if (exchange(c, b->cmd, b->len, b->n, replies, now_ms() + CACHE_TIMEOUT_MS) == IO_OK)
		return ERR_OK;
	cache_warn(c, "redis command failed", c->why);
	cache_disconnect(c);
	return ERR_UNAVAILABLE;
}

/* A batch of one: the same write, read and retry rules. */
redisReply *cache_command(struct cache *c, const char *fmt, ...)
{
	struct cache_batch b;
	redisReply *r = NULL;
	va_list ap;

	if (!c || !fmt)
		return NULL;
	cache_batch_init(&b);
	va_start(ap, fmt);
	batch_vadd(&b, fmt, ap);
	va_end(ap);
	if (cache_batch_run(c, &b, &r) != ERR_OK)
		r = NULL;
	cache_batch_release(&b);
	return r;
}

int cache_ping(struct cache *c)
{
	redisReply *r = cache_command(c, "PING");
	int rc;

	if (!r)
		return ERR_UNAVAILABLE;
	rc = r->type == REDIS_REPLY_STATUS && r->str && strcmp(r->str, "PONG") == 0 ? ERR_OK
	                                                                            : ERR_CACHE;
	freeReplyObject(r);
	return rc;
}

/* ---- pool -------------------------------------------------------------- */

/* A cache whose connection failed is still handed out and reconnects on
 * use: only a bad URL (checked by cache_pool_new) or ERR_NOMEM is NULL. */
static void *cache_pool_open(void *arg)
{
	return cache_new(arg);
}

static void cache_pool_close(void *conn, void *arg)
{
	(void)arg;
	cache_free(conn);
}

static const struct pool_ops cache_pool_ops = {
    .open = cache_pool_open,
    .close = cache_pool_close,
    .reset = NULL,
};

struct cache_pool *cache_pool_new(const char *url, int size)
{
	struct cache_url u;
	struct cache_pool *p;
	const char *why = "the pool size is less than 1";
	size_t n;

	if (size < 1 || cache_url_parse(url, &u, &why) != ERR_OK) {
		log_error("cannot use redis url", LF_STR("reason", why));
		return NULL;
	}
	explicit_bzero(&u, sizeof(u));
	n = strlen(url) + 1;
	p = malloc(sizeof(*p) + n);
	if (!p)
		return NULL;
	p->url_len = n;
	memcpy(p->url, url, n);
	p->pool = pool_new(size, &cache_pool_ops, p->url);
	if (!p->pool) {
		free(p);
		return NULL;
	}
	return p;
}

/* Every connection must have been put back first. */
void cache_pool_free(struct cache_pool *p)
{
	if (!p)
		return;
	pool_free(p->pool);
	/* The URL may hold a password. */
	explicit_bzero(p->url, p->url_len);
	free(p);
}

struct cache *cache_pool_get(struct cache_pool *p)
{
	return p ? pool_get(p->pool) : NULL;
}

/* Every exchange reads all of its replies, so a connection always comes
 * back with none pending. */
void cache_pool_put(struct cache_pool *p, struct cache *c)
{
	if (p)
		pool_put(p->pool, c);
}
