/* ops.c: the /healthz, /readyz and /metrics endpoints on a small libmicrohttpd daemon. */
#include "ops.h"

#include "buf.h"
#include "err.h"
#include "log.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/*
 * Who frees what. Every response is made with MHD_create_response_from_buffer:
 * MHD_RESPMEM_MUST_COPY for our constant and stack texts (MHD copies them
 * at once), MHD_RESPMEM_MUST_FREE for the malloc'd metrics text (MHD calls
 * free() on it when the response goes). A response is reference-counted:
 * MHD_queue_response takes a reference, and we drop ours with
 * MHD_destroy_response straight after, so MHD frees it once it is sent.
 */

/* A scrape bigger than this is a bug (unbounded labels), not a reason to
 * eat memory. */
#define OPS_METRICS_MAX (8u * 1024 * 1024)
#define OPS_WHY_MAX 256
/* Ops traffic is a prober and a scraper or two. */
#define OPS_CONNECTION_LIMIT 32
#define OPS_CONNECTION_TIMEOUT_S 10
#define OPS_CONNECTION_MEMORY 16384

#define OPS_JSON "application/json"
#define OPS_PROMETHEUS "text/plain; version=0.0.4; charset=utf-8"

struct ops {
	struct MHD_Daemon *daemon;
	struct metrics *m;
	ops_ready_fn ready;
	void *arg;
	int port;
};

/* MHD's own messages go through our log, not to stderr. */
__attribute__((format(printf, 2, 0))) static void ops_mhd_log(void *cls, const char *fmt,
                                                              va_list ap)
{
	char line[512];
	size_t n;

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	log_warn("libmicrohttpd reported an error", LF_STR("reason", line));
}

static enum MHD_Result ops_send(struct MHD_Connection *conn, unsigned int status, const char *type,
                                void *body, size_t len, enum MHD_ResponseMemoryMode mode,
                                const char *allow)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(len, body, mode);
	if (!resp) {
		/* With MUST_FREE the body is still ours when MHD fails. */
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(body);
		return MHD_NO;
	}
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type) != MHD_YES ||
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
	    (allow && MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES)) {
		MHD_destroy_response(resp);
		return MHD_NO;
	}
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result ops_send_text(struct MHD_Connection *conn, unsigned int status,
                                     const char *type, const char *text, const char *allow)
{
	/* MHD copies the text before it returns, so it may live on our stack. */
	return ops_send(conn, status, type, (void *)text, strlen(text), MHD_RESPMEM_MUST_COPY,
	                allow);
}

/* Append s as the inside of a JSON string (the why text is free-form). */
static int json_escape(struct buf *b, const char *s)
{
	const unsigned char *p;
	int rc = ERR_OK;

	for (p = (const unsigned char *)s; rc == ERR_OK && *p; p++) {
		if (*p == '"' || *p == '\\')
			rc = buf_printf(b, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			rc = buf_printf(b, "\\u%04x", *p);
		else
			rc = buf_append(b, p, 1);
	}
	return rc;
}

static enum MHD_Result ops_readyz(struct ops *o, struct MHD_Connection *conn)
{
	char why[OPS_WHY_MAX] = "";
	struct buf b;
	enum MHD_Result ret;
	int rc;

	if (!o->ready || o->ready(o->arg, why, sizeof(why)) == ERR_OK)
		return ops_send_text(conn, MHD_HTTP_OK, OPS_JSON, "{\"status\":\"ready\"}", NULL);

	/* The callback may have filled why to the brim without a NUL. */
	why[sizeof(why) - 1] = '\0';
	if (!why[0])
		snprintf(why, sizeof(why), "unknown");
	buf_init(&b, 4 * OPS_WHY_MAX);
	rc = buf_append_str(&b, "{\"status\":\"not_ready\",\"failing\":\"");
	if (rc == ERR_OK)
		rc = json_escape(&b, why);
	if (rc == ERR_OK)
		rc = buf_append_str(&b, "\"}");
	if (rc != ERR_OK) {
		buf_release(&b);
		return ops_send_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, OPS_JSON,
		                     "{\"status\":\"not_ready\",\"failing\":\"unknown\"}", NULL);
	}
	ret = ops_send_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, OPS_JSON, b.data, NULL);
	buf_release(&b);
	return ret;
}

static enum MHD_Result ops_metrics(struct ops *o, struct MHD_Connection *conn)
{
	struct buf b;
	size_t len;
	char *text;
	int rc;

	buf_init(&b, OPS_METRICS_MAX);
	rc = o->m ? metrics_render(o->m, &b) : ERR_OK;
	if (rc != ERR_OK) {
		buf_release(&b);
		log_error("cannot render metrics", LF_STR("reason", err_str(rc)));
		return ops_send_text(
		    conn, MHD_HTTP_INTERNAL_SERVER_ERROR, OPS_JSON,
		    "{\"error\":{\"code\":\"internal\",\"message\":\"cannot render metrics\"}}",
		    NULL);
	}
	text = buf_detach(&b, &len);
	if (!text)
		return MHD_NO;
	/* MUST_FREE: MHD owns text from here and free()s it. */
	return ops_send(conn, MHD_HTTP_OK, OPS_PROMETHEUS, text, len, MHD_RESPMEM_MUST_FREE, NULL);
}

static enum MHD_Result ops_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	struct ops *o = cls;
	int known;

	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)con_cls;

	/*
	 * Every answer is queued on the first call: these routes take no
	 * body, and answering before reading one means MHD never sends
	 * "100 Continue" and closes the connection instead of reading it.
	 */
	known = strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 ||
	        strcmp(url, "/metrics") == 0;
	if (!known)
		return ops_send_text(
		    conn, MHD_HTTP_NOT_FOUND, OPS_JSON,
		    "{\"error\":{\"code\":\"not_found\",\"message\":\"no such route\"}}", NULL);
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
		return ops_send_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, OPS_JSON,
		                     "{\"error\":{\"code\":\"method_not_allowed\","
		                     "\"message\":\"only GET is allowed here\"}}",
		                     "GET");
	if (strcmp(url, "/healthz") == 0)
		return ops_send_text(conn, MHD_HTTP_OK, OPS_JSON, "{\"status\":\"ok\"}", NULL);
	if (strcmp(url, "/readyz") == 0)
		return ops_readyz(o, conn);
	return ops_metrics(o, conn);
}

struct ops *ops_new(const char *bind, int port, struct metrics *m, ops_ready_fn ready, void *arg)
{
	struct sockaddr_in addr;
	struct ops *o;

	if (port <= 0 || port > 65535) {
		log_error("cannot start ops server", LF_STR("reason", "port out of range"),
		          LF_INT("port", port));
		return NULL;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, bind, &addr.sin_addr) != 1) {
		log_error("cannot start ops server", LF_STR("reason", "bad bind address"),
		          LF_STR("address", bind));
		return NULL;
	}
	o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	o->m = m;
	o->ready = ready;
	o->arg = arg;
	o->port = port;

	o->daemon = MHD_start_daemon(
	    MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL,
	    ops_handle, o, MHD_OPTION_EXTERNAL_LOGGER, ops_mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
	    (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
	    (unsigned int)OPS_CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned int)OPS_CONNECTION_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	    (size_t)OPS_CONNECTION_MEMORY, MHD_OPTION_END);
	if (!o->daemon) {
		log_error("cannot start ops server", LF_INT("port", port), LF_STR("address", bind));
		free(o);
		return NULL;
	}
	log_info("ops server listening", LF_INT("port", port), LF_STR("address", bind));
	return o;
}

void ops_free(struct ops *o)
{
	if (!o)
		return;
	/* Stops the internal thread: no handler runs after this returns. */
	MHD_stop_daemon(o->daemon);
	free(o);
}

int ops_queue_gauges_init(struct ops_queue_gauges *g, struct metrics *m)
{
	g->ready = metrics_gauge(m, "orders_queue_messages_ready",
	                         "Messages ready for delivery in each work and dead-letter queue.",
	                         "queue");
	g->consumers =
	    metrics_gauge(m, "orders_queue_consumers",
	                  "Consumers attached to each work and dead-letter queue.", "queue");
	return g->ready && g->consumers ? ERR_OK : ERR_NOMEM;
}

void ops_queue_gauges_update(const struct ops_queue_gauges *g, const struct mq_publisher *p)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < MQ_STAT_QUEUES; i++) {
		const char *labels[1] = {mq_stat_queues[i]};
		long ready, consumers;

		if (mq_publisher_queue_stats(p, i, &ready, &consumers) != ERR_OK)
			continue;
		metric_set(g->ready, labels, (double)ready);
		metric_set(g->consumers, labels, (double)consumers);
	}
}
