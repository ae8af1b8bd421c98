/* mq_tls.c: amqps:// for lib/mq: the TLS settings, the socket of one connection, the publisher's
 * writes. */
#include "mq.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "err.h"
#include "mq_internal.h"
#include "tls.h"

#define MQ_TLS_PATH_MAX 512

/* Written by mq_tls_configure() before any connection, read-only afterwards. */
static struct {
	char ca_file[MQ_TLS_PATH_MAX];
	char cert_file[MQ_TLS_PATH_MAX];
	char key_file[MQ_TLS_PATH_MAX];
} settings;

/* The ex_data slot of an SSL_CTX that points at its struct handshake. */
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;
static int slot = -1;

static void slot_init(void)
{
	slot = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

int mq_tls_configure(const struct mq_tls_options *o, char *reason, size_t size)
{
	const char *ca = o && o->ca_file ? o->ca_file : "";
	const char *cert = o && o->cert_file ? o->cert_file : "";
	const char *key = o && o->key_file ? o->key_file : "";
	int rc;

	if (strlen(ca) >= MQ_TLS_PATH_MAX || strlen(cert) >= MQ_TLS_PATH_MAX ||
	    strlen(key) >= MQ_TLS_PATH_MAX) {
		snprintf(reason, size, "a path is longer than %d characters", MQ_TLS_PATH_MAX - 1);
		return ERR_INVALID;
	}
	rc = tls_check_files(ca, cert, key, reason, size);
	if (rc)
		return rc;
	snprintf(settings.ca_file, sizeof(settings.ca_file), "%s", ca);
	snprintf(settings.cert_file, sizeof(settings.cert_file), "%s", cert);
	snprintf(settings.key_file, sizeof(settings.key_file), "%s", key);
	return ERR_OK;
}

/*
 * struct handshake - what the verify callback learns during one handshake:
 * the session, which the publisher writes through (rabbitmq-c exports no
 * send function and no accessor for it), and the first verification error,
 * which says more than rabbitmq-c's "SSL connection failed".
 */
struct handshake {
	SSL *ssl;
	long error;
};

/* Called for every certificate of the server's chain, during the handshake only. */
static int on_verify(int ok, X509_STORE_CTX *x)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct handshake *h = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), slot) : NULL;

	if (h) {
		h->ssl = ssl;
		if (!ok && h->error == X509_V_OK)
			h->error = X509_STORE_CTX_get_error(x);
	}
	return ok;
}

/*
 * tls_socket - an SSL socket for host: TLS 1.2 or later, the server's chain
 * verified during the handshake against the configured CA file (else the
 * system's trust store) and its certificate checked for host, a DNS name or
 * an IP address, by OpenSSL (rabbitmq-c's own check knows no IP addresses);
 * the configured client certificate, if any.
 */
static int tls_socket(amqp_connection_state_t conn, const char *host, struct handshake *h,
                      amqp_socket_t **out, char *reason, size_t size)
{
	amqp_socket_t *sock;
	X509_VERIFY_PARAM *vp;
	SSL_CTX *ctx;

	pthread_once(&slot_once, slot_init);
	if (slot < 0) {
		snprintf(reason, size, "cannot set up tls");
		return ERR_NOMEM;
	}
	sock = amqp_ssl_socket_new(conn);
	if (!sock) {
		snprintf(reason, size, "cannot set up tls");
		return ERR_NOMEM;
	}
	ctx = amqp_ssl_socket_get_context(sock);
	amqp_ssl_socket_set_verify_peer(sock, 1);
	amqp_ssl_socket_set_verify_hostname(sock, 0);
	vp = SSL_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	/*
	 * A TLS 1.2 renegotiation could make the publisher's SSL_write want to
	 * read (see mq__tls_write); brokers do not need one.
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_ex_data(ctx, slot, h) != 1 ||
	    (X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1 &&
	     X509_VERIFY_PARAM_set1_host(vp, host, 0) != 1)) {
		snprintf(reason, size, "cannot set up tls for host '%s'", host);
		ERR_clear_error();
		return ERR_INVALID;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, on_verify);
	if (settings.ca_file[0]
	        ? amqp_ssl_socket_set_cacert(sock, settings.ca_file) != AMQP_STATUS_OK
	        : SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(reason, size, "cannot load the CA file '%s'",
		         settings.ca_file[0] ? settings.ca_file : "(system trust store)");
		ERR_clear_error();
		return ERR_INVALID;
	}
	if (settings.cert_file[0] && amqp_ssl_socket_set_key(sock, settings.cert_file,
	                                                     settings.key_file) != AMQP_STATUS_OK) {
		snprintf(reason, size, "cannot load the client certificate '%s'",
		         settings.cert_file);
		ERR_clear_error();
		return ERR_INVALID;
	}
	*out = sock;
	return ERR_OK;
}

/* Why a TLS connection failed: the verification error, else OpenSSL's last words. */
static void tls_failure(const struct handshake *h, int st, char *reason, size_t size)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	if (h->error != X509_V_OK)
		snprintf(reason, size, "tls: certificate verification failed: %s",
		         X509_verify_cert_error_string(h->error));
	else if (r)
		snprintf(reason, size, "tls: %s (%s)", amqp_error_string2(st), r);
	else
		snprintf(reason, size, "tls: %s", amqp_error_string2(st));
	ERR_clear_error();
}

int mq__socket_open(amqp_connection_state_t conn, const char *host, int port, int tls,
                    struct timeval *timeout, void **session, char *reason, size_t size)
{
	struct handshake h = {NULL, X509_V_OK};
	amqp_socket_t *sock;
	int st, rc, fl;

	if (!tls) {
		sock = amqp_tcp_socket_new(conn);
		if (!sock) {
			snprintf(reason, size, "out of memory");
			return ERR_NOMEM;
		}
		st = amqp_socket_open_noblock(sock, host, port, timeout);
		if (st != AMQP_STATUS_OK) {
			snprintf(reason, size, "%s", amqp_error_string2(st));
			return ERR_UNAVAILABLE;
		}
		if (session)
			*session = NULL;
		return ERR_OK;
	}
	ERR_clear_error();
	rc = tls_socket(conn, host, &h, &sock, reason, size);
	if (rc)
		return rc;
	st = amqp_socket_open_noblock(sock, host, port, timeout);
	/* h lives on this stack: later handshakes (there are none) must not find it. */
	SSL_CTX_set_ex_data(amqp_ssl_socket_get_context(sock), slot, NULL);
	if (st != AMQP_STATUS_OK) {
		tls_failure(&h, st, reason, size);
		return ERR_UNAVAILABLE;
	}
	if (!h.ssl) {
		snprintf(reason, size, "tls: the broker sent no certificate");
		return ERR_UNAVAILABLE;
	}
	/*
	 * The publisher's SSL_write must never block: a broker that stops
	 * reading would freeze its thread. rabbitmq-c waits in poll() itself
	 * whenever OpenSSL wants to read or write, so this changes nothing for it.
	 */
	fl = fcntl(amqp_get_sockfd(conn), F_GETFL);
	if (fl < 0 || fcntl(amqp_get_sockfd(conn), F_SETFL, fl | O_NONBLOCK) < 0) {
		snprintf(reason, size, "tls: cannot make the socket non-blocking");
		return ERR_UNAVAILABLE;
	}
	if (session)
		*session = h.ssl;
	return ERR_OK;
}

ssize_t mq__tls_write(void *session, const void *buf, size_t len, char *reason, size_t size)
{
	SSL *ssl = session;
	int n, e;

	/* The caller's buffers are far smaller; a retry must pass the same length. */
	if (len > INT_MAX)
		len = INT_MAX;
	ERR_clear_error();
	n = SSL_write(ssl, buf, (int)len);
	if (n > 0)
		return n;
	e = SSL_get_error(ssl, n);
	if (e == SSL_ERROR_WANT_WRITE)
		return 0;
	if (e == SSL_ERROR_WANT_READ) {
		/*
		 * Only a renegotiation makes a write read, and tls_socket
		 * refuses those; the caller waits only to write while its
		 * frames are half sent, so it would spin.
		 */
		snprintf(reason, size, "tls: a write would have to read first");
	} else if (e == SSL_ERROR_ZERO_RETURN) {
		snprintf(reason, size, "tls: the broker closed the connection");
	} else if (e == SSL_ERROR_SYSCALL && errno) {
		char ebuf[128];

		snprintf(reason, size, "tls: send: %s", strerror_r(errno, ebuf, sizeof(ebuf)));
	} else {
		unsigned long err = ERR_peek_last_error();
		const char *r = err ? ERR_reason_error_string(err) : NULL;

		snprintf(reason, size, "tls: %s", r ? r : "connection lost");
	}
	ERR_clear_error();
	return -1;
}

int mq__tls_pending(void *session)
{
	/*
	 * Decrypted bytes only: SSL_has_pending() also counts the start of a
	 * record whose rest has not arrived, which SSL_read cannot return yet
	 * (waiting on the socket for it is right, looping would spin).
	 */
	return SSL_pending(session) > 0;
}

const char *mq__tls_version(void *session)
{
	return session ? SSL_get_version(session) : "none";
}
