/*
 * tls_idle.c: orders-tls-idle, the idle HTTPS clients of tls_api.sh. It opens N keep-alive
 * connections to 127.0.0.1:PORT, each with a verified TLS handshake and one GET /healthz,
 * prints "open N" once all are up, keeps them up for HOLD seconds (a GET on every one each
 * 10 s, within the API's 30 s idle timeout), then prints "alive N" when every one still
 * answers. Exit status 0 only then.
 *
 *   orders-tls-idle PORT N CA_FILE HOLD_SECONDS
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define REFRESH_S 10
#define REQUEST "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

static time_t now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* One GET /healthz on ssl and its whole answer; 1 when it is a 200. */
static int ping(SSL *ssl)
{
	char buf[1024];
	size_t have = 0;
	char *end, *cl;
	long body;

	if (SSL_write(ssl, REQUEST, (int)strlen(REQUEST)) <= 0)
		return 0;
	for (;;) {
		int n = SSL_read(ssl, buf + have, (int)(sizeof(buf) - 1 - have));

		if (n <= 0)
			return 0;
		have += (size_t)n;
		buf[have] = '\0';
		end = strstr(buf, "\r\n\r\n");
		cl = strstr(buf, "Content-Length: ");
		if (end && cl && cl < end) {
			body = strtol(cl + 16, NULL, 10);
			if ((long)(have - (size_t)(end + 4 - buf)) >= body)
				break;
		}
		if (have >= sizeof(buf) - 1)
			return 0;
	}
	return strncmp(buf, "HTTP/1.1 200", 12) == 0;
}

static SSL *open_one(SSL_CTX *ctx, int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct timeval tv = {10, 0};
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	SSL *ssl;

	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (fd < 0)
		return NULL;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return NULL;
	}
	ssl = SSL_new(ctx);
	if (!ssl || !SSL_set_fd(ssl, fd) || !SSL_set1_host(ssl, "127.0.0.1") ||
	    SSL_connect(ssl) != 1 || !ping(ssl)) {
		SSL_free(ssl);
		close(fd);
		return NULL;
	}
	return ssl;
}

/* A GET on each of the first n; the number that answered. */
static int refresh(SSL **c, int n)
{
	int ok = 0;

	for (int i = 0; i < n; i++)
		ok += ping(c[i]);
	return ok;
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	SSL_CTX *ctx;
	SSL **c;
	int port, n, hold, ok;
	time_t last, end;

	if (argc != 5) {
		fprintf(stderr, "usage: orders-tls-idle PORT N CA_FILE HOLD_SECONDS\n");
		return 2;
	}
	port = atoi(argv[1]);
	n = atoi(argv[2]);
	hold = atoi(argv[4]);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	ctx = SSL_CTX_new(TLS_client_method());
	c = calloc((size_t)(n > 0 ? n : 1), sizeof(*c));
	if (!ctx || !c || n < 1 || SSL_CTX_load_verify_locations(ctx, argv[3], NULL) != 1) {
		fprintf(stderr, "orders-tls-idle: bad arguments or CA file\n");
		return 2;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	last = now_s();
	for (int i = 0; i < n; i++) {
		c[i] = open_one(ctx, port);
		if (!c[i]) {
			fprintf(stderr, "orders-tls-idle: connection %d failed\n", i + 1);
			return 1;
		}
		if (now_s() - last >= REFRESH_S) {
			if (refresh(c, i + 1) != i + 1) {
				fprintf(stderr,
				        "orders-tls-idle: connections closed while opening\n");
				return 1;
			}
			last = now_s();
		}
	}
	printf("open %d\n", n);
	fflush(stdout);
	end = now_s() + hold;
	while (now_s() < end) {
		sleep(1);
		if (now_s() - last >= REFRESH_S) {
			if (refresh(c, n) != n) {
				fprintf(stderr, "orders-tls-idle: connections closed while idle\n");
				return 1;
			}
			last = now_s();
		}
	}
	ok = refresh(c, n);
	printf("alive %d\n", ok);
	for (int i = 0; i < n; i++)
		SSL_free(c[i]); /* the sockets close at exit */
	free(c);
	SSL_CTX_free(ctx);
	return ok == n ? 0 : 1;
}
