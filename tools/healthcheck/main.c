/* orders-healthcheck: the image's health check, GET /healthz or /readyz over HTTP or HTTPS. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/*
 * orders-healthcheck [healthz|readyz] (default healthz) asks the daemon of
 * this container on 127.0.0.1 and exits 0 only on a 200; 1 otherwise (no
 * answer within HC_TIMEOUT_S included), 2 on bad usage.
 *
 * The port is ORDERS_HEALTH_PORT if set, else the daemon's own, found from
 * PID 1's command line (the container's command): a consumer's
 * ORDERS_METRICS_PORT, or its default ops port (hc_ports, as in
 * consumers/<name>/); else the API's ORDERS_HTTP_PORT (8080).
 *
 * The API speaks HTTPS only when ORDERS_TLS_CERT_FILE is set: so does this
 * then (the consumers' ops ports stay plain HTTP). TLS 1.2 or later, but the
 * server's certificate is not verified: it is this container's own process
 * on loopback, and its name (a load balancer's, a Service's) need not be
 * 127.0.0.1's. What matters is that it answers.
 */

#define HC_TIMEOUT_S 2
#define HC_API_PORT 8080

/* Each consumer's default ops port (consumers/<name>/: default_port). */
static const struct {
	const char *daemon;
	int port;
} hc_ports[] = {
    {"orders-inventory", 9101},
    {"orders-payment", 9102},
    {"orders-order", 9103},
    {"orders-cart", 9104},
};

static void on_alarm(int sig)
{
	static const char msg[] = "orders-healthcheck: no answer within 2 s\n";

	(void)sig;
	/* write(2) and _exit(2) are async-signal-safe. */
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

/* A port number from s, or 0 when it is none. */
static int port_of(const char *s)
{
	char *end;
	long v;

	if (!s || !*s)
		return 0;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 1 || v > 65535)
		return 0;
	return (int)v;
}

/* Which consumer PID 1 is (its index in hc_ports), or -1: the API or unknown. */
static int consumer_index(void)
{
	char cmd[4096];
	size_t n, i;
	FILE *f = fopen("/proc/1/cmdline", "r");

	if (!f)
		return -1;
	n = fread(cmd, 1, sizeof(cmd) - 1, f);
	fclose(f);
	/* The arguments are NUL-separated: one string to search. */
	for (i = 0; i < n; i++)
		if (cmd[i] == '\0')
			cmd[i] = ' ';
	cmd[n] = '\0';
	for (i = 0; i < sizeof(hc_ports) / sizeof(hc_ports[0]); i++)
		if (strstr(cmd, hc_ports[i].daemon))
			return (int)i;
	return -1;
}

/* The port to ask and whether it speaks HTTPS. */
static int target(int *port, int *tls)
{
	int c = consumer_index();
	const char *cert = getenv("ORDERS_TLS_CERT_FILE");

	*tls = c < 0 && cert && *cert;
	*port = port_of(getenv("ORDERS_HEALTH_PORT"));
	if (*port)
		return 0;
	if (c >= 0) {
		*port = port_of(getenv("ORDERS_METRICS_PORT"));
		if (!*port)
			*port = hc_ports[c].port;
		return 0;
	}
	*port = getenv("ORDERS_HTTP_PORT") ? port_of(getenv("ORDERS_HTTP_PORT")) : HC_API_PORT;
	return *port ? 0 : -1;
}

static int connect_loopback(int port)
{
	struct sockaddr_in a = {0};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Send req and read the start of the answer into buf (NUL-terminated); its length or -1. */
static int exchange(int fd, SSL *ssl, const char *req, char *buf, size_t size)
{
	size_t len = strlen(req), got = 0;
	int n;

	n = ssl ? SSL_write(ssl, req, (int)len) : (int)send(fd, req, len, MSG_NOSIGNAL);
	if (n != (int)len)
		return -1;
	/* The status line is all that is needed; it may come in pieces. */
	while (got < size - 1 && !memchr(buf, '\n', got)) {
		n = ssl ? SSL_read(ssl, buf + got, (int)(size - 1 - got))
		        : (int)recv(fd, buf + got, size - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
		buf[got] = '\0';
	}
	buf[got] = '\0';
	return (int)got;
}

static SSL *tls_open(int fd, SSL_CTX **ctx_out)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = NULL;

	if (!ctx)
		return NULL;
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
		goto fail;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	ssl = SSL_new(ctx);
	if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1)
		goto fail;
	*ctx_out = ctx;
	return ssl;
fail:
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "healthz";
	char req[128], buf[256], reason[160] = "";
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	int port, tls, fd, status = 0, rc = 1;

	if (argc > 2 || (strcmp(path, "healthz") != 0 && strcmp(path, "readyz") != 0)) {
		fprintf(stderr, "usage: orders-healthcheck [healthz|readyz]\n");
		return 2;
	}
	if (target(&port, &tls) != 0) {
		fprintf(stderr, "orders-healthcheck: no port to ask (ORDERS_HTTP_PORT?)\n");
		return 2;
	}
	signal(SIGALRM, on_alarm);
	alarm(HC_TIMEOUT_S);
	fd = connect_loopback(port);
	if (fd < 0) {
		snprintf(reason, sizeof(reason), "cannot connect: %s", strerror(errno));
		goto out;
	}
	if (tls) {
		ssl = tls_open(fd, &ctx);
		if (!ssl) {
			const char *why = ERR_reason_error_string(ERR_get_error());

			snprintf(reason, sizeof(reason), "tls handshake failed: %s",
			         why ? why : "unknown");
			goto out;
		}
	}
	snprintf(req, sizeof(req),
	         "GET /%s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
	if (exchange(fd, ssl, req, buf, sizeof(buf)) <= 0) {
		snprintf(reason, sizeof(reason), "no answer");
		goto out;
	}
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
		snprintf(reason, sizeof(reason), "not an HTTP answer");
		goto out;
	}
	if (status == 200)
		rc = 0;
	else
		snprintf(reason, sizeof(reason), "answered %d", status);
out:
	if (rc)
		fprintf(stderr, "orders-healthcheck: /%s on port %d (%s): %s\n", path, port,
		        tls ? "https" : "http", reason);
	if (ssl)
		SSL_shutdown(ssl);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	if (fd >= 0)
		close(fd);
	return rc;
}
