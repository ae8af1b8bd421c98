/* http.c: the libmicrohttpd side of orders-api: requests, routing, auth, responses. */
#include "api.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>

#include "err.h"
#include "ids.h"
#include "log.h"
#include "parse.h"

int64_t api_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int valid_sku(const char *s)
{
	size_t n = 0;

	for (; s[n]; n++) {
		unsigned char c = (unsigned char)s[n];

		if (!isalnum(c) && c != '.' && c != '_' && c != '-')
			return 0;
	}
	return n >= 1 && n <= 64;
}

int valid_currency(const char *s)
{
	return strlen(s) == 3 && isupper((unsigned char)s[0]) && isupper((unsigned char)s[1]) &&
	       isupper((unsigned char)s[2]);
}

int json_only_fields(json_t *obj, const char *const *allowed, const char **bad)
{
	const char *key;
	json_t *v;

	json_object_foreach(obj, key, v)
	{
		size_t i = 0;

		while (allowed[i] && strcmp(allowed[i], key) != 0)
			i++;
		if (!allowed[i]) {
			*bad = key;
			return ERR_INVALID;
		}
	}
	return ERR_OK;
}

int require_only_fields(struct request *r, json_t *obj, const char *path,
                        const char *const *allowed, enum MHD_Result *result)
{
	struct api_error e;

	if (fields_only(obj, path, allowed, &e) == ERR_OK)
		return ERR_OK;
	*result = respond_api_error(r, &e);
	return ERR_INVALID;
}

struct query_check {
	const char *const *allowed;
	const char *bad;
};

static enum MHD_Result query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
	struct query_check *q = cls;
	size_t i = 0;
	(void)kind;
	(void)value;

	while (q->allowed[i] && strcmp(q->allowed[i], key) != 0)
		i++;
	if (q->allowed[i])
		return MHD_YES;
	q->bad = key;
	return MHD_NO;
}

int require_query_args(struct request *r, const char *const *allowed, enum MHD_Result *result)
{
	static const char *const none[] = {NULL};
	struct query_check q = {allowed ? allowed : none, NULL};
	struct api_error e;

	MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, query_arg, &q);
	if (!q.bad)
		return ERR_OK;
	query_arg_error(q.bad, &e);
	*result = respond_api_error(r, &e);
	return ERR_INVALID;
}

/* ---- responses ------------------------------------------------------------ */

/* The one place responses are queued: headers every response has, and metrics. */
static enum MHD_Result respond(struct request *r, unsigned int status, const char *type,
                               const char *body, size_t len, const char *const *headers)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	const char *labels[2];
	char code[8];

	/* The client left while the request waited (see on_completed). */
	if (r->gone)
		return MHD_NO;
	/* MUST_COPY: MHD owns its copy, so body may be freed right after. */
	resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	if (type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(resp, "X-Request-Id", r->request_id);
	for (; headers && headers[0]; headers += 2)
		MHD_add_response_header(resp, headers[0], headers[1]);
	ret = MHD_queue_response(r->conn, status, resp);
	/* The response is reference-counted: the connection holds its own. */
	MHD_destroy_response(resp);

	snprintf(code, sizeof(code), "%u", status);
	labels[0] = r->route ? r->route : "unmatched";
	labels[1] = code;
	metric_add(r->api->m_requests, labels, 1);
	metric_observe(r->api->m_latency, labels, (double)(api_now_ns() - r->started_ns) / 1e9);
	return ret;
}

enum MHD_Result respond_json(struct request *r, unsigned int status, const char *body,
                             const char *const *headers)
{
	return respond(r, status, "application/json", body, strlen(body), headers);
}

enum MHD_Result respond_text(struct request *r, unsigned int status, const char *type,
                             const char *body, size_t len, const char *const *headers)
{
	return respond(r, status, type, body, len, headers);
}

enum MHD_Result respond_empty(struct request *r, unsigned int status)
{
	return respond(r, status, NULL, "", 0, NULL);
}

enum MHD_Result respond_obj(struct request *r, unsigned int status, json_t *obj,
                            const char *const *headers)
{
	char *text = json_dumps(obj, JSON_COMPACT);
	enum MHD_Result ret;

	json_decref(obj);
	if (!text)
		return respond_json(
		    r, 500, "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}",
		    NULL);
	ret = respond_json(r, status, text, headers);
	free(text);
	return ret;
}

enum MHD_Result respond_error(struct request *r, unsigned int status, const char *code,
                              const char *message, const char *field)
{
	json_t *err = json_pack("{s:s, s:s}", "code", code, "message", message);

	if (err && field)
		json_object_set_new(err, "field", json_string(field));
	if (status >= 500)
		log_warn("request failed", LF_STR("request_id", r->request_id),
		         LF_STR("route", r->route ? r->route : ""), LF_INT("status", status),
		         LF_STR("code", code), LF_STR("reason", message));
	return respond_obj(r, status, json_pack("{s:o}", "error", err), NULL);
}

enum MHD_Result respond_api_error(struct request *r, const struct api_error *e)
{
	return respond_error(r, e->status, e->code, e->message, e->field[0] ? e->field : NULL);
}

enum MHD_Result respond_unavailable(struct request *r, const char *what)
{
	static const char *const retry[] = {"Retry-After", "1", NULL};
	char msg[160];
	json_t *err;

	snprintf(msg, sizeof(msg), "%s is unavailable, retry shortly", what);
	log_warn("dependency unavailable", LF_STR("request_id", r->request_id),
	         LF_STR("route", r->route ? r->route : ""), LF_STR("dependency", what));
	err = json_pack("{s:{s:s, s:s}}", "error", "code", "unavailable", "message", msg);
	return respond_obj(r, 503, err, retry);
}

/* ---- JSON helpers --------------------------------------------------------- */

const char *json_text(json_t *v, size_t max)
{
	size_t n;

	if (!json_is_string(v))
		return NULL;
	n = json_string_length(v);
	/* An embedded NUL would cut the text short everywhere it goes. */
	if (n < 1 || n > max || strlen(json_string_value(v)) != n)
		return NULL;
	return json_string_value(v);
}

/* ---- publishing ----------------------------------------------------------- */

/*
 * Runs on the publisher thread: record the outcome and wake the connection,
 * through the settler when Redis must learn of a confirmed message first.
 */
static void on_confirm(void *arg, int result)
{
	struct request *r = arg;
	struct MHD_Connection *conn = r->conn;

	atomic_store(&r->publish_result, result);
	if (result == ERR_OK && r->settle && r->settle->n &&
	    settler_push(r->api->settler, r) == ERR_OK)
		return;
	if (result == ERR_OK && r->settle && r->settle->n)
		r->settle_failed = 1;
	atomic_store(&r->state, REQ_CONFIRMED);
	/* After this the request belongs to MHD's thread again. */
	MHD_resume_connection(conn);
}

static enum MHD_Result published(struct request *r);

enum MHD_Result api_publish(struct request *r, const char *routing_key, const char *message_id,
                            const uint8_t *msg, size_t len,
                            enum MHD_Result (*done)(struct request *r))
{
	int rc;

	/*
	 * Suspend before handing over: the confirm may arrive on the publisher
	 * thread before this function returns, and resuming is only valid on a
	 * suspended connection. From here on the request is the callback's
	 * until the connection is resumed.
	 */
	r->on_published = done;
	r->publish_started_ns = api_now_ns();
	/* Counted before stopping is read, so that teardown, which sets
	 * stopping before it reads the count, waits for this request or
	 * this request sees stopping (both sequentially consistent). */
	atomic_fetch_add(&r->api->suspended, 1);
	if (atomic_load(&r->api->stopping)) {
		atomic_store(&r->publish_result, ERR_CLOSED);
		atomic_store(&r->state, REQ_CONFIRMED);
		return published(r);
	}
	atomic_store(&r->state, REQ_PUBLISHING);
	/* Waiting for the broker is not the client's slowness. */
	watchdog_disarm(r->conn);
	MHD_suspend_connection(r->conn);
	rc = mq_publisher_publish(r->api->publisher, MQ_EXCHANGE_ORDERS, routing_key, message_id,
	                          msg, len, MQ_PUBLISH_MANDATORY, on_confirm, r);
	if (rc != ERR_OK) {
		/* Never handed over: no callback will come, so resume ourselves. */
		atomic_store(&r->publish_result, rc);
		atomic_store(&r->state, REQ_CONFIRMED);
		MHD_resume_connection(r->conn);
	}
	return MHD_YES;
}

/* The broker has answered: the route's done() queues the response. */
static enum MHD_Result published(struct request *r)
{
	r->done_ran = 1;
	atomic_fetch_sub(&r->api->suspended, 1);
	watchdog_arm(r->api->watchdog, r->conn);
	metric_observe(r->api->m_confirm_latency, NULL,
	               (double)(api_now_ns() - r->publish_started_ns) / 1e9);
	return r->on_published(r);
}

/* ---- auth ----------------------------------------------------------------- */

const char *bearer_token(const char *header)
{
	static const char scheme[] = "Bearer";

	/* The scheme is case-insensitive (RFC 7235); one or more spaces follow it. */
	if (!header || strncasecmp(header, scheme, sizeof(scheme) - 1) != 0 ||
	    header[sizeof(scheme) - 1] != ' ')
		return NULL;
	header += sizeof(scheme) - 1;
	while (*header == ' ')
		header++;
	return header;
}

static const struct apikey *find_key(const struct api *a, const char *header)
{
	const char *token = bearer_token(header);

	return token ? apikey_find(a->keys, a->nkeys, token, strlen(token)) : NULL;
}

/* 429 rate_limited when the key is over its limit; ERR_OK otherwise. */
static int check_rate(struct request *r, enum MHD_Result *result)
{
	const char *labels[1] = {r->key->client_id};
	const char *headers[] = {"Retry-After", NULL, NULL};
	char retry[16];
	int retry_s = 1;

	/* Once per request, however many checks a handler makes. */
	if (r->rate_counted)
		return ERR_OK;
	r->rate_counted = 1;
	switch (ratelimit_take(r->api->ratelimit, (size_t)(r->key - r->api->keys), &retry_s)) {
	case RATELIMIT_ALLOW:
		return ERR_OK;
	case RATELIMIT_UNCHECKED:
		metric_add(r->api->m_rate_unchecked, labels, 1);
		return ERR_OK;
	case RATELIMIT_DENY:
		break;
	}
	metric_add(r->api->m_rate_limited, labels, 1);
	snprintf(retry, sizeof(retry), "%d", retry_s);
	headers[1] = retry;
	*result =
	    respond_obj(r, 429,
	                json_pack("{s:{s:s, s:s}}", "error", "code", "rate_limited", "message",
	                          "too many requests for this API key; retry after the "
	                          "number of seconds in Retry-After"),
	                headers);
	return ERR_INVALID;
}

int require_role(struct request *r, enum role role, enum MHD_Result *result)
{
	if (!r->key) {
		*result = auth_failed(r);
		return ERR_INVALID;
	}
	/* Every request of a known key counts, also one its role may not make. */
	if (check_rate(r, result) != ERR_OK)
		return ERR_INVALID;
	/* admin may do anything; other roles only their own routes. */
	if (r->key->role != role && r->key->role != ROLE_ADMIN) {
		*result =
		    respond_error(r, 403, "forbidden", "this API key may not use this route", NULL);
		return ERR_INVALID;
	}
	return ERR_OK;
}

/* "application/json", optionally with parameters ("; charset=utf-8"); not "application/jsonx". */
int is_json_type(const char *ct)
{
	static const char type[] = "application/json";
	size_t n = sizeof(type) - 1;

	if (!ct || strncasecmp(ct, type, n) != 0)
		return 0;
	ct += n + strspn(ct + n, " \t");
	return *ct == '\0' || *ct == ';';
}

json_t *body_json(struct request *r, enum MHD_Result *result)
{
	const char *ct =
	    MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	struct api_error e;
	json_t *root;

	if (!is_json_type(ct)) {
		*result = respond_error(r, 415, "unsupported_media_type",
		                        "request bodies must be application/json", NULL);
		return NULL;
	}
	root = body_parse(r->body.data, r->body.len, &e);
	if (!root)
		*result = respond_api_error(r, &e);
	return root;
}

/* ---- routing -------------------------------------------------------------- */

/* The one path segment after prefix, or NULL if there is none or more. Any
 * length matches, so that the handler judges an overlong parameter. */
const char *path_param(const char *url, const char *prefix)
{
	size_t n = strlen(prefix);

	if (strncmp(url, prefix, n) != 0 || !url[n] || strchr(url + n, '/'))
		return NULL;
	return url + n;
}

static enum MHD_Result method_not_allowed(struct request *r, const char *allow)
{
	const char *const headers[] = {"Allow", allow, NULL};
	json_t *err = json_pack("{s:{s:s, s:s}}", "error", "code", "method_not_allowed", "message",
	                        "this route does not take that method");

	return respond_obj(r, 405, err, headers);
}

#define HEALTHZ_BODY "{\"status\":\"ok\"}"

void http_collect(struct api *a)
{
	static const char *const labels[] = {"/healthz", "200"};
	long n = atomic_exchange(&a->healthz_ok, 0);

	if (n)
		metric_add(a->m_requests, labels, (double)n);
}

static enum MHD_Result serve_metrics(struct request *r)
{
	struct buf out;
	enum MHD_Result ret;

	buf_init(&out, 4 * 1024 * 1024);
	if (metrics_render(r->api->metrics, &out) != ERR_OK) {
		buf_release(&out);
		return respond_error(r, 500, "internal", "cannot render metrics", NULL);
	}
	ret = respond(r, 200, "text/plain; version=0.0.4", out.data ? out.data : "", out.len, NULL);
	buf_release(&out);
	return ret;
}

static enum MHD_Result serve_readyz(struct request *r)
{
	struct cache *c;
	int cache_ok;

	if (!mq_publisher_connected(r->api->publisher))
		return respond_json(r, 503, "{\"status\":\"not_ready\",\"failing\":\"rabbitmq\"}",
		                    NULL);
	c = cache_pool_get(r->api->cache);
	cache_ok = c && cache_ping(c) == ERR_OK;
	if (c)
		cache_pool_put(r->api->cache, c);
	if (!cache_ok)
		return respond_json(r, 503, "{\"status\":\"not_ready\",\"failing\":\"redis\"}",
		                    NULL);
	return respond_json(r, 200, "{\"status\":\"ready\"}", NULL);
}

static enum MHD_Result dispatch(struct request *r, const char *url)
{
	const char *m = r->method;
	int get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
	const char *param;

	if (strcmp(url, "/healthz") == 0) {
		r->route = "/healthz";
		return get ? respond(r, 200, "application/json", HEALTHZ_BODY,
		                     sizeof(HEALTHZ_BODY) - 1, NULL)
		           : method_not_allowed(r, "GET, HEAD");
	}
	if (strcmp(url, "/readyz") == 0) {
		r->route = "/readyz";
		return get ? serve_readyz(r) : method_not_allowed(r, "GET, HEAD");
	}
	if (strcmp(url, "/metrics") == 0) {
		r->route = "/metrics";
		return get ? serve_metrics(r) : method_not_allowed(r, "GET, HEAD");
	}
	if (strcmp(url, "/v1/checkouts") == 0) {
		r->route = "/v1/checkouts";
		return strcmp(m, "POST") == 0 ? checkout_post(r) : method_not_allowed(r, "POST");
	}
	if (strcmp(url, "/v1/carts") == 0) {
		r->route = "/v1/carts";
		return strcmp(m, "POST") == 0 ? carts_post(r) : method_not_allowed(r, "POST");
	}
	if ((param = path_param(url, "/v1/carts/"))) {
		r->route = "/v1/carts/{cart_id}";
		if (get)
			return carts_get(r, param);
		if (strcmp(m, "PUT") == 0)
			return carts_put(r, param);
		if (strcmp(m, "DELETE") == 0)
			return carts_delete(r, param);
		return method_not_allowed(r, "GET, HEAD, PUT, DELETE");
	}
	if (strcmp(url, "/v1/products") == 0) {
		r->route = "/v1/products";
		return get ? catalog_list(r) : method_not_allowed(r, "GET, HEAD");
	}
	if ((param = path_param(url, "/v1/products/"))) {
		r->route = "/v1/products/{sku}";
		if (get)
			return catalog_get(r, param);
		if (strcmp(m, "PUT") == 0)
			return catalog_put(r, param);
		return method_not_allowed(r, "GET, HEAD, PUT");
	}
	if ((param = path_param(url, "/v1/orders/"))) {
		r->route = "/v1/orders/{order_id}";
		return get ? orders_get(r, param) : method_not_allowed(r, "GET, HEAD");
	}
	if (strcmp(url, "/v1/order-events") == 0) {
		r->route = "/v1/order-events";
		return get ? events_list(r) : method_not_allowed(r, "GET, HEAD");
	}
	if (strcmp(url, "/v1/reconciliation") == 0) {
		r->route = "/v1/reconciliation";
		return get ? reconciliation_get(r) : method_not_allowed(r, "GET, HEAD");
	}
	return respond_error(r, 404, "not_found", "no such route", NULL);
}

/* ---- the MHD callbacks ---------------------------------------------------- */

int valid_request_id(const char *s)
{
	size_t n = 0;

	/*
	 * Spaces, quotes and backslashes are echoed too (HTTP has already
	 * trimmed the value's ends): the JSON log lines escape them, and the
	 * protobuf envelope and the orders row take any string. Control
	 * characters, DEL and bytes past ASCII get a fresh id.
	 */
	for (; s[n]; n++)
		if (s[n] < ' ' || s[n] > '~')
			return 0;
	return n >= 1 && n <= API_REQUEST_ID_MAX;
}

/* The client's X-Request-Id when it is a good one, else a fresh UUID. */
static void request_id_of(struct MHD_Connection *conn, char out[API_REQUEST_ID_MAX + 1])
{
	const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");

	if (rid && valid_request_id(rid))
		memcpy(out, rid, strlen(rid) + 1);
	else
		ids_uuid4(out);
}

static struct request *request_new(struct api *a, struct MHD_Connection *conn, const char *method)
{
	struct request *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->api = a;
	r->conn = conn;
	r->method = method;
	r->started_ns = api_now_ns();
	buf_init(&r->body, API_BODY_MAX);
	request_id_of(conn, r->request_id);
	/* An address over the failed-authentication limit costs no key lookup. */
	r->auth_blocked = auth_blocked(r);
	if (!r->auth_blocked)
		r->key = find_key(a, MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
		                                                 MHD_HTTP_HEADER_AUTHORIZATION));
	return r;
}

static void request_free(struct request *r)
{
	if (!r)
		return;
	/* The body may hold a card number: wipe it before the memory is reused. */
	if (r->body.data)
		sodium_memzero(r->body.data, r->body.len);
	buf_release(&r->body);
	if (r->ctx_free)
		r->ctx_free(r->ctx);
	if (r->settle)
		cache_batch_release(r->settle);
	free(r->settle);
	free(r->accepted_body);
	free(r);
}

/* One call of on_request for r: its first (headers only), a piece of body, or the last. */
static enum MHD_Result add_value_bytes(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value)
{
	size_t *n = cls;
	(void)kind;

	/* "key: value\r\n", or "key=value&" in the query. */
	*n += strlen(key) + (value ? strlen(value) : 0) + 4;
	return MHD_YES;
}

/* What the request line and headers took of the connection's memory, about. */
static size_t head_bytes(struct MHD_Connection *conn, const char *url, const char *method)
{
	size_t n = strlen(method) + strlen(url) + sizeof(" HTTP/1.1\r\n");

	MHD_get_connection_values(conn, MHD_HEADER_KIND, add_value_bytes, &n);
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, add_value_bytes, &n);
	return n;
}

static enum MHD_Result request_step(struct request *r, int first, const char *url,
                                    const char *upload_data, size_t *upload_data_size)
{
	if (first) {
		const char *cl;

		if (atomic_load(&r->api->stopping)) {
			static const char *const closing[] = {"Retry-After", "1", "Connection",
			                                      "close", NULL};

			return respond_json(r, 503,
			                    "{\"error\":{\"code\":\"unavailable\",\"message\":"
			                    "\"the server is shutting down; retry\"}}",
			                    closing);
		}
		/* Refuse an announced oversized body before reading any of it. */
		cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
		                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > API_BODY_MAX) {
			r->body_too_big = 1;
			return respond_error(r, 413, "payload_too_large",
			                     "request bodies are limited to 64 KiB", NULL);
		}
		/*
		 * The request line and headers share the connection's memory
		 * with the answer's header block. A request that leaves too
		 * little for an answer would be carried out (a checkout
		 * accepted) and then closed without one, also on every retry:
		 * refuse it before anything happens.
		 */
		if (head_bytes(r->conn, url, r->method) > API_HEAD_MAX)
			return respond_error(r, 431, "headers_too_large",
			                     "the request line and headers are limited to 3 KiB",
			                     NULL);
		return MHD_YES;
	}
	if (*upload_data_size) {
		/* Chunked bodies have no Content-Length: stop at the limit. */
		if (!r->body_too_big &&
		    buf_append(&r->body, upload_data, *upload_data_size) != ERR_OK) {
			r->body_too_big = 1;
			if (r->body.data)
				sodium_memzero(r->body.data, r->body.len);
			buf_release(&r->body);
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (atomic_load(&r->state) == REQ_CONFIRMED)
		return published(r);
	if (r->body_too_big)
		return respond_error(r, 413, "payload_too_large",
		                     "request bodies are limited to 64 KiB", NULL);
	return dispatch(r, url);
}

/*
 * healthz_now - 1 for a GET or HEAD /healthz without a body while the server
 * is not stopping: the probe that load balancers and benchmarks send most,
 * answered without a struct request, log context or metrics lock. Its
 * request pointer is &healthz_mark until the answer, which comes on the
 * second call: MHD closes a connection whose answer was queued before the
 * request was complete. Anything else about /healthz (a body, another
 * method, shutting down) takes the general path.
 */
static char healthz_mark; /* never written: only its address counts */

static int healthz_now(struct api *a, struct MHD_Connection *conn, const char *url,
                       const char *method)
{
	return strcmp(url, "/healthz") == 0 &&
	       (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) &&
	       !atomic_load(&a->stopping) &&
	       !MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	                                    MHD_HTTP_HEADER_CONTENT_LENGTH) &&
	       !MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	                                    MHD_HTTP_HEADER_TRANSFER_ENCODING);
}

/* The answer of healthz_now(): the body is static (PERSISTENT, not copied),
 * the count one atomic add (no latency histogram for the probe). */
static enum MHD_Result healthz_answer(struct api *a, struct MHD_Connection *conn)
{
	char rid[API_REQUEST_ID_MAX + 1];
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(sizeof(HEALTHZ_BODY) - 1, (void *)HEALTHZ_BODY,
	                                       MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	request_id_of(conn, rid);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	MHD_add_response_header(resp, "X-Request-Id", rid);
	ret = MHD_queue_response(conn, 200, resp);
	MHD_destroy_response(resp);
	atomic_fetch_add(&a->healthz_ok, 1);
	return ret;
}

/*
 * MHD calls this for every piece of a request, the resumed checkout's last
 * call included, on one thread at a time per connection. The log context
 * is this thread's for the length of the call only: set on entry, cleared
 * before the thread goes back to other connections.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	struct request *r = *con_cls;
	enum MHD_Result ret;
	int first = 0;
	(void)version;

	if (*con_cls == &healthz_mark)
		return healthz_answer(cls, conn);
	if (!r) {
		if (healthz_now(cls, conn, url, method)) {
			*con_cls = &healthz_mark;
			return MHD_YES;
		}
		r = request_new(cls, conn, method);
		if (!r)
			return MHD_NO;
		*con_cls = r;
		first = 1;
	}
	log_context_set(r->request_id, NULL, r->order_id);
	ret = request_step(r, first, url, upload_data, upload_data_size);
	log_context_clear();
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct api *a = cls;
	struct request *r = *con_cls;

	(void)toe;
	/* The next request's time starts now. */
	watchdog_arm(a->watchdog, conn);
	if (r == (void *)&healthz_mark) {
		*con_cls = NULL;
		return;
	}
	/*
	 * A resumed connection whose client has left is closed by MHD without
	 * another call of the handler: the route's done() still runs (it
	 * releases a key after a failed publish, commits a cart's version, and
	 * api->suspended counts the request until then); only its answer is
	 * not sent.
	 */
	if (r && atomic_load(&r->state) == REQ_CONFIRMED && !r->done_ran) {
		r->gone = 1;
		log_context_set(r->request_id, NULL, r->order_id);
		published(r);
		log_context_clear();
	}
	request_free(r);
	*con_cls = NULL;
}

/*
 * Percent-decoding of the path and query values, as MHD's own but leaving
 * "%00" and "%2F" as they are: a decoded NUL would cut the path short (PUT
 * /v1/products/A%00B would write product "A"), and a decoded slash would
 * turn a parameter's bytes into route segments. Left encoded, both fail the
 * parameter's validation like any other bad character.
 */
size_t unescape_url(void *cls, struct MHD_Connection *conn, char *s)
{
	char *out = s;
	const char *in = s;
	(void)cls;
	(void)conn;

	while (*in) {
		unsigned char c = 0;
		size_t got = 0;

		/* in[1] first: then in[2] is at most the terminating NUL. */
		if (in[0] == '%' && in[1] &&
		    sodium_hex2bin(&c, 1, in + 1, 2, NULL, &got, NULL) == 0 && got == 1 && c != 0 &&
		    c != '/') {
			*out++ = (char)c;
			in += 3;
		} else {
			*out++ = *in++;
		}
	}
	*out = '\0';
	return (size_t)(out - s);
}

/* MHD complains once per refused connection or request: a flood of them
 * must not become a flood of log lines. */
#define MHD_LOG_PER_S 10

/* libmicrohttpd's own complaints, as JSON lines like everything else. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	static _Atomic long window, in_window, dropped;
	long now = (long)time(NULL), skipped = 0;
	char msg[256];
	size_t n;
	(void)cls;

	if (atomic_exchange(&window, now) != now) {
		atomic_store(&in_window, 0);
		skipped = atomic_exchange(&dropped, 0);
	}
	if (atomic_fetch_add(&in_window, 1) >= MHD_LOG_PER_S) {
		atomic_fetch_add(&dropped, 1);
		return;
	}
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_warn("http server", LF_STR("reason", msg), LF_INT("suppressed_before", skipped));
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int http_start(struct api *a)
{
	struct sockaddr_in addr;
	unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
	                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
	/* HTTPS when a certificate was given; MHD_OPTION_END ends an empty list. */
	struct MHD_OptionItem tls[] = {
	    {MHD_OPTION_HTTPS_MEM_CERT, 0, a->tls_cert},
	    {MHD_OPTION_HTTPS_MEM_KEY, 0, a->tls_key},
	    {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)API_TLS_PRIORITIES},
	    {MHD_OPTION_END, 0, NULL},
	};

	if (a->tls_cert) {
		if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
			log_error("cannot serve https",
			          LF_STR("reason", "libmicrohttpd was built without TLS"));
			return ERR_INVALID;
		}
		flags |= MHD_USE_TLS;
	}

	raise_fd_limit();
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)a->cfg.http_port);
	/* Loopback by default; 0.0.0.0 where a load balancer calls in. */
	if (inet_pton(AF_INET, a->cfg.http_bind, &addr.sin_addr) != 1)
		return ERR_INVALID;

	a->httpd = MHD_start_daemon(
	    flags, (uint16_t)a->cfg.http_port, NULL, NULL, on_request, a,
	    /* First, so that MHD's own complaints about the rest are JSON too. */
	    MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
	    (struct sockaddr *)&addr, MHD_OPTION_THREAD_POOL_SIZE,
	    (unsigned int)a->cfg.http_threads, MHD_OPTION_CONNECTION_LIMIT,
	    (unsigned int)a->cfg.http_connection_limit,
	    /* MHD zeroes a connection's whole pool after every request, so
	     * each kept-alive client holds all of it: 4 KiB holds 10,000
	     * clients in some 60 MB (8 KiB took 93 MB) and halves that
	     * memset. Headers up to ~3.8 KB fit; larger bodies still arrive,
	     * in pieces, through on_request. */
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)API_CONNECTION_MEMORY,
	    /* Slow clients: a silent connection is closed after the idle
	     * timeout, one per address may hold only so many connections,
	     * and the watchdog closes one that trickles bytes (over HTTPS,
	     * the handshake counts as part of its first request). */
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)a->cfg.http_idle_timeout_s,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)a->cfg.http_per_ip_limit,
	    MHD_OPTION_NOTIFY_CONNECTION, watchdog_notify, a->watchdog,
	    MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)4096, MHD_OPTION_NOTIFY_COMPLETED,
	    on_completed, a, MHD_OPTION_UNESCAPE_CALLBACK, unescape_url, NULL, MHD_OPTION_ARRAY,
	    a->tls_cert ? tls : tls + 3, MHD_OPTION_END);
	if (!a->httpd) {
		log_error("cannot start http server", LF_INT("port", a->cfg.http_port),
		          LF_STR("tls", a->tls_cert ? "on" : "off"));
		return ERR_IO;
	}
	log_info("listening", LF_INT("port", a->cfg.http_port),
	         LF_INT("threads", a->cfg.http_threads),
	         LF_STR("scheme", a->tls_cert ? "https" : "http"));
	return ERR_OK;
}

void http_quiesce(struct api *a)
{
	if (a->httpd)
		MHD_quiesce_daemon(a->httpd);
}

void http_stop(struct api *a)
{
	if (a->httpd)
		MHD_stop_daemon(a->httpd);
	a->httpd = NULL;
}
