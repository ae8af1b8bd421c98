/* main.c: orders-api: read the configuration, wire the modules, serve until SIGTERM. */
#include "api.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "err.h"
#include "log.h"
#include "tls.h"

/* ORDERS_API_KEYS into a->keys; the plain keys are wiped once hashed. */
static int parse_keys(struct api *a, char *err, size_t errlen)
{
	const char *what = NULL;
	int rc;

	rc = apikey_parse(a->cfg.api_keys, a->keys, APIKEY_MAX, &a->nkeys, &what);
	sodium_memzero(a->cfg.api_keys, sizeof(a->cfg.api_keys));
	if (rc != ERR_OK)
		snprintf(err, errlen, "ORDERS_API_KEYS %s", what);
	return rc;
}

/*
 * HTTPS: read ORDERS_TLS_CERT_FILE and _KEY_FILE now, so that a missing or
 * unreadable file, or a key that is not the certificate's, stops start-up
 * with a reason that names the file (never what is in it).
 */
static int load_tls(struct api *a, char *err, size_t errlen)
{
	size_t len;
	int rc;

	if (!a->cfg.tls_cert_file[0])
		return ERR_OK;
	rc = tls_check_files(NULL, a->cfg.tls_cert_file, a->cfg.tls_key_file, err, errlen);
	if (rc == ERR_OK)
		rc = tls_read_file(a->cfg.tls_cert_file, TLS_FILE_MAX, &a->tls_cert, &len, err,
		                   errlen);
	if (rc == ERR_OK)
		rc = tls_read_file(a->cfg.tls_key_file, TLS_FILE_MAX, &a->tls_key, &a->tls_key_len,
		                   err, errlen);
	return rc;
}

/* One limiter slot per key, in a->keys order, counting in Redis. */
static int setup_ratelimit(struct api *a)
{
	struct ratelimit_options o = {.lease = ratelimit_redis_lease, .lease_arg = a->cache};
	size_t i, index;

	a->ratelimit = ratelimit_new(&o, a->nkeys);
	if (!a->ratelimit)
		return ERR_NOMEM;
	for (i = 0; i < a->nkeys; i++) {
		long limit = a->keys[i].limit;

		if (limit == APIKEY_LIMIT_DEFAULT)
			limit = a->cfg.rate_limit;
		if (ratelimit_add(a->ratelimit, a->keys[i].client_id, limit, &index) != ERR_OK ||
		    index != i)
			return ERR_INVALID;
		log_info("api key", LF_STR("key", a->keys[i].client_id),
		         LF_INT("rate_limit_per_s", limit));
	}
	return ERR_OK;
}

static void collect_queue_stats(void *arg)
{
	struct api *a = arg;

	ops_queue_gauges_update(&a->queue_gauges, a->publisher);
	http_collect(a);
}

static int setup_metrics(struct api *a)
{
	const double *lb = metrics_latency_bounds;
	size_t nlb = metrics_latency_nbounds;

	a->metrics = metrics_new();
	if (!a->metrics)
		return ERR_NOMEM;
	a->m_requests = metrics_counter(a->metrics, "orders_http_requests_total",
	                                "HTTP requests by route and status", "route,status");
	a->m_latency =
	    metrics_histogram(a->metrics, "orders_http_request_duration_seconds",
	                      "HTTP request latency by route and status", "route,status", lb, nlb);
	a->m_checkouts = metrics_counter(a->metrics, "orders_checkouts_accepted_total",
	                                 "Checkouts answered 202", NULL);
	a->m_confirm_latency = metrics_histogram(
	    a->metrics, "orders_publish_confirm_seconds",
	    "Time from handing a checkout to the publisher to the broker's confirm", NULL, lb, nlb);
	a->m_rate_limited = metrics_counter(a->metrics, "orders_rate_limited_total",
	                                    "Requests refused with 429 by API key", "key");
	a->m_rate_unchecked =
	    metrics_counter(a->metrics, "orders_rate_limit_unchecked_total",
	                    "Requests admitted unchecked because Redis could not be asked", "key");
	a->m_auth_failures = metrics_counter(
	    a->metrics, "orders_auth_failures_total",
	    "Requests without a known API key: answered 401, or 429 once their address was over "
	    "ORDERS_AUTH_FAILURE_LIMIT",
	    "outcome");
	a->m_slow_closed = metrics_counter(
	    a->metrics, "orders_http_slow_connections_closed_total",
	    "Connections closed for taking longer than their request deadline", NULL);
	if (!a->m_requests || !a->m_latency || !a->m_checkouts || !a->m_confirm_latency ||
	    !a->m_rate_limited || !a->m_rate_unchecked || !a->m_auth_failures ||
	    !a->m_slow_closed || ops_queue_gauges_init(&a->queue_gauges, a->metrics) != ERR_OK ||
	    metrics_process(a->metrics, ORDERS_VERSION) != ERR_OK)
		return ERR_NOMEM;
	metrics_on_collect(a->metrics, collect_queue_stats, a);
	return ERR_OK;
}

/* The watchdog that closes connections too slow over a request. */
static int setup_watchdog(struct api *a)
{
	a->watchdog = watchdog_new(a->cfg.http_idle_timeout_s + a->cfg.http_request_timeout_s,
	                           a->m_slow_closed);
	return a->watchdog ? ERR_OK : ERR_NOMEM;
}

/* Failed authentications per client address, and the proxies whose
 * X-Forwarded-For names the client (ORDERS_TRUSTED_PROXIES). */
static int setup_auth_limit(struct api *a)
{
	const char *what = NULL;

	/* The value passed its check at load, so it parses. */
	if (netaddr_nets_parse(a->cfg.trusted_proxies, a->trusted, NETADDR_NETS_MAX, &a->ntrusted,
	                       &what) != ERR_OK)
		return ERR_INVALID;
	if (a->cfg.auth_failure_limit <= 0)
		return ERR_OK;
	/* 64k entries (2 MB): a flood from more addresses is under-counted. */
	a->auth_failures = addrlimit_new(a->cfg.auth_failure_limit, 65536);
	return a->auth_failures ? ERR_OK : ERR_NOMEM;
}

static int setup(struct api *a)
{
	uint8_t pk[SEAL_KEY_BYTES];
	struct mq_publisher_options opt;
	char err[256] = "";
	enum log_level level = LOG_INFO;
	static const char body_hash_context[] = "orders idempotency body hash";

	/* The API seals cards and derives order ids; it never opens a card. */
	if (config_load_for(&a->cfg,
	                    CONFIG_NEED_API_KEYS | CONFIG_NEED_SEAL_PUBLIC | CONFIG_NEED_ORDER_ID,
	                    err, sizeof(err)) != ERR_OK) {
		fprintf(stderr, "orders-api: %s\n", err);
		return ERR_INVALID;
	}
	log_level_parse(a->cfg.log_level, &level);
	log_init("orders-api", level);
	config_log(&a->cfg);
	if (load_tls(a, err, sizeof(err)) != ERR_OK) {
		log_error("cannot serve https", LF_STR("reason", err));
		return ERR_INVALID;
	}
	if (seal_init() != ERR_OK || parse_keys(a, err, sizeof(err)) != ERR_OK ||
	    seal_hex_decode(a->cfg.seal_public_key, pk, sizeof(pk)) != ERR_OK ||
	    seal_hex_decode(a->cfg.order_id_key, a->order_id_key, sizeof(a->order_id_key)) !=
	        ERR_OK) {
		log_error("cannot start", LF_STR("reason", err[0] ? err : "bad key material"));
		return ERR_INVALID;
	}
	/* A key of its own for hashing request bodies, derived from the order
	 * id key so that there is no further secret to configure. */
	crypto_generichash(a->body_hash_key, sizeof(a->body_hash_key),
	                   (const unsigned char *)body_hash_context, sizeof(body_hash_context) - 1,
	                   a->order_id_key, sizeof(a->order_id_key));
	a->sealer = sealer_new(pk);
	if (!a->sealer || setup_metrics(a) != ERR_OK)
		return ERR_NOMEM;

	/* One pooled connection per HTTP thread is enough: a handler holds at
	 * most one of each kind at a time. */
	if (cache_tls_configure(a->cfg.redis_ca_file, err, sizeof(err)) != ERR_OK) {
		log_error("cannot use the redis tls settings", LF_STR("reason", err));
		return ERR_INVALID;
	}
	a->db = db_pool_new(a->cfg.pg_dsn, a->cfg.http_threads);
	a->cache = cache_pool_new(a->cfg.redis_url, a->cfg.http_threads);
	if (!a->db || !a->cache) {
		log_error("cannot start", LF_STR("reason", "bad database or cache settings"));
		return ERR_INVALID;
	}
	if (setup_ratelimit(a) != ERR_OK) {
		log_error("cannot start", LF_STR("reason", "cannot set up the rate limits"));
		return ERR_NOMEM;
	}

	if (mq_tls_configure(&(struct mq_tls_options){a->cfg.amqp_ca_file, a->cfg.amqp_cert_file,
	                                              a->cfg.amqp_key_file},
	                     err, sizeof(err)) != ERR_OK) {
		log_error("cannot use the rabbitmq tls settings", LF_STR("reason", err));
		return ERR_INVALID;
	}
	memset(&opt, 0, sizeof(opt));
	opt.url = a->cfg.amqp_url;
	opt.confirm_timeout_ms = a->cfg.publish_timeout_ms;
	opt.written_timeout_ms = checkout_written_timeout_ms(a);
	opt.max_in_flight = 20000;
	opt.declare_topology = 1;
	opt.poll_queue_stats_ms = 5000;
	a->publisher = mq_publisher_new(&opt);
	if (!a->publisher) {
		log_error("cannot start", LF_STR("reason", "cannot start the publisher"));
		return ERR_NOMEM;
	}
	a->settler = settler_new(a->cfg.redis_url);
	if (!a->settler) {
		log_error("cannot start", LF_STR("reason", "cannot start the settler"));
		return ERR_NOMEM;
	}
	if (setup_watchdog(a) != ERR_OK) {
		log_error("cannot start", LF_STR("reason", "cannot start the watchdog"));
		return ERR_NOMEM;
	}
	if (setup_auth_limit(a) != ERR_OK) {
		log_error("cannot start",
		          LF_STR("reason", "cannot set up the failed-authentication limit"));
		return ERR_NOMEM;
	}
	return http_start(a);
}

/* Wait up to ms for every suspended checkout to be answered; 1 when none is left. */
static int drain_suspended(struct api *a, int ms)
{
	for (; ms > 0 && atomic_load(&a->suspended) > 0; ms -= 10)
		usleep(10000);
	return atomic_load(&a->suspended) == 0;
}

static void teardown(struct api *a)
{
	/*
	 * Stop taking connections and requests (api_publish refuses once
	 * stopping is set), and let every suspended checkout get its confirm
	 * or its timeout and its Redis records. Then stop the publisher, which
	 * fails what is left with ERR_CLOSED (503), or ERR_IN_DOUBT when it was
	 * sent (closed without an answer), and the settler, which
	 * closes what it still holds without an answer; both stay allocated
	 * while MHD's threads may look at them. MHD is stopped only once no
	 * connection is suspended: stopping it with one aborts the process.
	 */
	http_quiesce(a);
	atomic_store(&a->stopping, 1);
	drain_suspended(a, a->cfg.publish_timeout_ms + 1000);
	mq_publisher_stop(a->publisher);
	settler_stop(a->settler);
	if (drain_suspended(a, 2000)) {
		http_stop(a);
	} else {
		/* Not seen; rather exit without stopping MHD than abort. */
		log_error("connections still wait for the broker; exiting without closing them",
		          LF_INT("connections", atomic_load(&a->suspended)));
		return;
	}
	/* MHD has stopped: no connection is left for these to look at. */
	watchdog_free(a->watchdog);
	addrlimit_free(a->auth_failures);
	free(a->tls_cert);
	if (a->tls_key)
		sodium_memzero(a->tls_key, a->tls_key_len);
	free(a->tls_key);
	mq_publisher_free(a->publisher);
	a->publisher = NULL;
	settler_free(a->settler);
	a->settler = NULL;
	ratelimit_free(a->ratelimit);
	db_pool_free(a->db);
	cache_pool_free(a->cache);
	sealer_free(a->sealer);
	metrics_free(a->metrics);
	sodium_memzero(a->keys, sizeof(a->keys));
	sodium_memzero(a->order_id_key, sizeof(a->order_id_key));
	sodium_memzero(a->body_hash_key, sizeof(a->body_hash_key));
}

int main(void)
{
	static struct api api;
	sigset_t stop;
	int rc, sig;

	/* Every thread started from here inherits the mask, so SIGTERM and
	 * SIGINT reach only the sigwait below. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);

	rc = setup(&api);
	if (rc == ERR_OK) {
		sigwait(&stop, &sig);
		log_info("shutting down", LF_STR("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
	}
	teardown(&api);
	return rc == ERR_OK ? 0 : 1;
}
