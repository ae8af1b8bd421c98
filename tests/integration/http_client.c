/* http_client.c: a minimal blocking HTTP/1.1 client for the end-to-end tests. */
#include "http_client.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

static int timeout_ms;

void http_set_timeout_ms(int ms)
{
	timeout_ms = ms > 0 ? ms : 0;
}

static int port(void)
{
	const char *p = getenv("ORDERS_HTTP_PORT");

	return p && *p ? atoi(p) : 8080;
}

/* The response's headers as an object of lower-case names; a repeated
 * header's values are joined with ", ". */
static json_t *header_object(const char *headers)
{
	json_t *obj = json_object();
	const char *line = headers;

	while (obj && line && (line = strstr(line, "\r\n"))) {
		const char *colon, *v;
		char name[128];
		size_t n, vl;
		json_t *old;

		line += 2;
		colon = strchr(line, ':');
		n = colon ? (size_t)(colon - line) : 0;
		if (!n || n >= sizeof(name) || memchr(line, '\r', n))
			continue;
		for (size_t i = 0; i < n; i++)
			name[i] = (char)tolower((unsigned char)line[i]);
		name[n] = '\0';
		v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		vl = strcspn(v, "\r\n");
		old = json_object_get(obj, name);
		if (old) {
			char *joined = NULL;

			if (asprintf(&joined, "%s, %.*s", json_string_value(old), (int)vl, v) < 0)
				continue;
			json_object_set_new(obj, name, json_string(joined));
			free(joined);
		} else {
			json_object_set_new(obj, name, json_stringn(v, vl));
		}
	}
	return obj;
}

static const char b64_digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* data as base64 (malloc'd), or NULL. */
static char *base64(const char *data, size_t n)
{
	const unsigned char *in = (const unsigned char *)data;
	char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i += 3) {
		unsigned int v = (unsigned int)in[i] << 16;

		if (i + 1 < n)
			v |= (unsigned int)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		*o++ = b64_digits[(v >> 18) & 63];
		*o++ = b64_digits[(v >> 12) & 63];
		*o++ = i + 1 < n ? b64_digits[(v >> 6) & 63] : '=';
		*o++ = i + 2 < n ? b64_digits[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

/*
 * When ORDERS_TEST_RESPONSE_LOG names a file, append the response to it as
 * one JSON line (tools/openapi-check.js holds them against api/openapi.yaml),
 * with the program's name to tell which test received it.
 * The body is a string when it is UTF-8, else base64 in body_b64. One
 * write() to an O_APPEND file: lines of concurrent clients do not mix.
 * Best effort: a failure to record never fails the request.
 */
static void record_response(const char *method, const char *target, const struct http_response *r)
{
	const char *file = getenv("ORDERS_TEST_RESPONSE_LOG");
	const char *query = strchr(target, '?');
	size_t path_len = query ? (size_t)(query - target) : strlen(target);
	json_t *line, *body;
	char *text = NULL;
	int fd;

	if (!file || !*file)
		return;
	line =
	    json_pack("{s:s, s:s, s:s%, s:s, s:i, s:o}", "program", program_invocation_short_name,
	              "method", method, "path", target, path_len, "query", query ? query + 1 : "",
	              "status", r->status, "headers", header_object(r->headers));
	if (!line)
		return;
	body = json_stringn(r->body, r->body_len);
	if (body) {
		json_object_set_new(line, "body", body);
	} else {
		char *b64 = base64(r->body, r->body_len);

		json_object_set_new(line, "body_b64", b64 ? json_string(b64) : json_null());
		free(b64);
	}
	text = json_dumps(line, JSON_COMPACT);
	json_decref(line);
	if (!text)
		return;
	fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd >= 0) {
		size_t n = strlen(text);

		text[n] = '\n'; /* the NUL becomes the line's end */
		if (write(fd, text, n + 1) != (ssize_t)(n + 1))
			fprintf(stderr, "http_client: cannot append to %s\n", file);
		close(fd);
	}
	free(text);
}

static int send_all(int fd, const char *data, size_t n)
{
	while (n) {
		ssize_t w = send(fd, data, n, MSG_NOSIGNAL);

		if (w <= 0)
			return -1;
		data += w;
		n -= (size_t)w;
	}
	return 0;
}

int http_connect_from(const char *src, int to_port)
{
	struct sockaddr_in addr;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	if (timeout_ms > 0) {
		/* On Linux SO_SNDTIMEO bounds connect() too. */
		struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};

		if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
		    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
			goto fail;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	if (src) {
		if (inet_pton(AF_INET, src, &addr.sin_addr) != 1 ||
		    bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
			goto fail;
	}
	addr.sin_port = htons((unsigned short)(to_port > 0 ? to_port : port()));
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
		goto fail;
	return fd;
fail:
	close(fd);
	return -1;
}

/* Read until the server closes, split the answer into out and close fd. */
static int read_response(int fd, struct http_response *out)
{
	size_t len = 0, cap = 65536;
	char *resp = malloc(cap + 1), *split;

	if (!resp)
		goto fail;
	for (;;) {
		ssize_t r;

		if (len == cap) {
			char *bigger = realloc(resp, cap * 2 + 1);

			if (!bigger)
				goto fail;
			resp = bigger;
			cap *= 2;
		}
		r = recv(fd, resp + len, cap - len, 0);
		if (r < 0)
			goto fail;
		if (r == 0)
			break;
		len += (size_t)r;
	}
	resp[len] = '\0';
	close(fd);
	fd = -1;

	split = strstr(resp, "\r\n\r\n");
	if (!split || sscanf(resp, "HTTP/1.%*d %d", &out->status) != 1)
		goto fail;
	*split = '\0';
	out->headers = strdup(resp);
	out->body_len = len - (size_t)(split + 4 - resp);
	out->body = malloc(out->body_len + 1);
	if (!out->headers || !out->body)
		goto fail;
	memcpy(out->body, split + 4, out->body_len);
	out->body[out->body_len] = '\0';
	free(resp);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	free(resp);
	http_response_release(out);
	return -1;
}

int http_request(const char *method, const char *path, const char *const *headers, const char *body,
                 size_t body_len, struct http_response *out)
{
	return http_request_to(0, method, path, headers, body, body_len, out);
}

int http_request_to(int to_port, const char *method, const char *path, const char *const *headers,
                    const char *body, size_t body_len, struct http_response *out)
{
	char head[8192];
	int fd, n;

	memset(out, 0, sizeof(*out));
	fd = http_connect_from(NULL, to_port);
	if (fd < 0)
		return -1;
	n = snprintf(head, sizeof(head),
	             "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n", method, path);
	for (; headers && *headers; headers++)
		n += snprintf(head + n, sizeof(head) - (size_t)n, "%s\r\n", *headers);
	if (body)
		n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %zu\r\n",
		              body_len);
	n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
	if (send_all(fd, head, (size_t)n) != 0 || (body && send_all(fd, body, body_len) != 0)) {
		/* The server may answer (413) and close before taking the whole body. */
	}
	if (read_response(fd, out) != 0)
		return -1;
	record_response(method, path, out);
	return 0;
}

int http_raw(const char *data, size_t len, int half_close, struct http_response *out)
{
	return http_raw_from(NULL, 0, data, len, half_close, out);
}

int http_raw_from(const char *src, int to_port, const char *data, size_t len, int half_close,
                  struct http_response *out)
{
	int fd;

	memset(out, 0, sizeof(*out));
	fd = http_connect_from(src, to_port);
	if (fd < 0)
		return -1;
	if (send_all(fd, data, len) != 0) {
		/* As above: an early answer is still read. */
	}
	if (half_close)
		shutdown(fd, SHUT_WR);
	return read_response(fd, out);
}

int http_header(const struct http_response *r, const char *name, char *out, size_t outlen)
{
	size_t n = strlen(name);
	const char *line = r->headers;

	while (line && (line = strstr(line, "\r\n"))) {
		line += 2;
		if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
			const char *v = line + n + 1;
			size_t vl;

			while (*v == ' ')
				v++;
			vl = strcspn(v, "\r\n");
			if (vl >= outlen)
				vl = outlen - 1;
			memcpy(out, v, vl);
			out[vl] = '\0';
			return 0;
		}
	}
	return -1;
}

json_t *http_json(const struct http_response *r)
{
	return r->body ? json_loads(r->body, 0, NULL) : NULL;
}

void http_response_release(struct http_response *r)
{
	free(r->headers);
	free(r->body);
	memset(r, 0, sizeof(*r));
}
