/* http_client.h: a minimal blocking HTTP/1.1 client for the end-to-end tests. */
#ifndef ORDERS_TEST_HTTP_CLIENT_H
#define ORDERS_TEST_HTTP_CLIENT_H

#include <stddef.h>

#include <jansson.h>

struct http_response {
	int status;    /* 0 when the request failed */
	char *headers; /* raw header block, malloc'd */
	char *body;    /* NUL-terminated, malloc'd */
	size_t body_len;
};

/*
 * http_request - send one request to 127.0.0.1:$ORDERS_HTTP_PORT (8080 when
 * unset) with Connection: close. headers is a NULL-terminated list of full
 * header lines ("Authorization: Bearer dev-client"). body may be NULL.
 * Returns 0 and fills out, or -1 on a socket error.
 *
 * When the environment names a file in ORDERS_TEST_RESPONSE_LOG, every
 * response received is also appended to it as one JSON line (method, path,
 * query, status, headers, body), which tools/openapi-check.js holds against
 * api/openapi.yaml. Safe from several threads.
 */
int http_request(const char *method, const char *path, const char *const *headers, const char *body,
                 size_t body_len, struct http_response *out);

/* http_request_to - the same to 127.0.0.1:port (0: as http_request), e.g. a
 * second API instance. Thread-safe. */
int http_request_to(int port, const char *method, const char *path, const char *const *headers,
                    const char *body, size_t body_len, struct http_response *out);

/*
 * http_raw - send len bytes as they are (a request, whole or broken) on a new
 * connection to the API, end the sending side when half_close is set, and
 * read until the server closes. Returns 0 with out filled when an HTTP
 * answer came, -1 when none did (the server closed without one, or a socket
 * error).
 */
int http_raw(const char *data, size_t len, int half_close, struct http_response *out);

/*
 * http_raw_from - http_raw from the local address src (e.g. "127.0.0.2", so
 * that the server sees another client; NULL: any) to 127.0.0.1:to_port (0:
 * the API's). Thread-safe.
 */
int http_raw_from(const char *src, int to_port, const char *data, size_t len, int half_close,
                  struct http_response *out);

/* http_connect_from - a TCP socket from src (NULL: any) connected to
 * 127.0.0.1:to_port (0: the API's), with http_set_timeout_ms's timeouts
 * set; -1 on failure. */
int http_connect_from(const char *src, int to_port);

/*
 * http_set_timeout_ms - from now on every request fails (-1) when connecting,
 * sending or one wait for response bytes takes longer than ms; 0 (the
 * default) waits for ever. Set it before starting threads.
 */
void http_set_timeout_ms(int ms);

/* http_header - the value of a response header (case-insensitive name) into
 * out; 0 when found. */
int http_header(const struct http_response *r, const char *name, char *out, size_t outlen);

/* http_json - the body parsed as JSON (decref it), or NULL. */
json_t *http_json(const struct http_response *r);

void http_response_release(struct http_response *r);

#endif
