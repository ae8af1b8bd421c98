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

/* "key:role,key:role" into a->keys. */
static int parse_keys(struct api *a, char *err, size_t errlen)
{
	char list[CONFIG_STR_MAX];
	char *save = NULL, *item;

	snprintf(list, sizeof(list), "%s", a->cfg.api_keys);
	for (item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *colon = strrchr(item, ':');
		struct api_key *k;
		unsigned char h[6];

		if (a->nkeys == API_MAX_KEYS) {
			snprintf(err, errlen, "ORDERS_API_KEYS has more than %d keys",
			         API_MAX_KEYS);
			return ERR_INVALID;
		}
		if (!colon || colon == item || (size_t)(colon - item) >= sizeof(k->key)) {
			snprintf(err, errlen, "ORDERS_API_KEYS entries must be key:role");
			return ERR_INVALID;
		}
		k = &a->keys[a->nkeys];
		*colon = '\0';
		if (strcmp(colon + 1, "client") == 0)
			k->role = ROLE_CLIENT;
		else if (strcmp(colon + 1, "finance") == 0)
			k->role = ROLE_FINANCE;
		else if (strcmp(colon + 1, "admin") == 0)
			k->role = ROLE_ADMIN;
		else {
			snprintf(err, errlen,
			         "ORDERS_API_KEYS roles are client, finance or admin, got '%s'",
			         colon + 1);
			return ERR_INVALID;
		}
		snprintf(k->key, sizeof(k->key), "%s", item);
		/* A name for the key that can be stored and logged: a hash of it. */
		crypto_generichash(h, sizeof(h), (const unsigned char *)k->key, strlen(k->key),
		                   NULL, 0);
		memcpy(k->client_id, "key_", 4);
		sodium_bin2hex(k->client_id + 4, sizeof(k->client_id) - 4, h, sizeof(h));
		a->nkeys++;
	}
	sodium_memzero(list, sizeof(list));
	if (a->nkeys == 0) {
		snprintf(err, errlen, "ORDERS_API_KEYS has no keys");
		return ERR_INVALID;
	}
	return ERR_OK;
}

static void collect_queue_stats(void *arg)
{
	struct api *a = arg;

	ops_queue_gauges_update(&a->queue_gauges, a->publisher);
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
	if (!a->m_requests || !a->m_latency || !a->m_checkouts || !a->m_confirm_latency ||
	    ops_queue_gauges_init(&a->queue_gauges, a->metrics) != ERR_OK ||
	    metrics_process(a->metrics, ORDERS_VERSION) != ERR_OK)
		return ERR_NOMEM;
	metrics_on_collect(a->metrics, collect_queue_stats, a);
	return ERR_OK;
}

static int setup(struct api *a)
{
	uint8_t pk[SEAL_KEY_BYTES];
	struct mq_publisher_options opt;
	char err[256] = "";
	enum log_level level = LOG_INFO;
	static const char body_hash_context[] = "orders idempotency body hash";

	if (config_load(&a->cfg, err, sizeof(err)) != ERR_OK) {
		fprintf(stderr, "orders-api: %s\n", err);
		return ERR_INVALID;
	}
	log_level_parse(a->cfg.log_level, &level);
	log_init("orders-api", level);
	config_log(&a->cfg);
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
	a->db = db_pool_new(a->cfg.pg_dsn, a->cfg.http_threads);
	a->cache = cache_pool_new(a->cfg.redis_url, a->cfg.http_threads);
	if (!a->db || !a->cache) {
		log_error("cannot start", LF_STR("reason", "bad database or cache settings"));
		return ERR_INVALID;
	}

	memset(&opt, 0, sizeof(opt));
	opt.url = a->cfg.amqp_url;
	opt.confirm_timeout_ms = a->cfg.publish_timeout_ms;
	opt.max_in_flight = 20000;
	opt.declare_topology = 1;
	opt.poll_queue_stats_ms = 5000;
	a->publisher = mq_publisher_new(&opt);
	if (!a->publisher) {
		log_error("cannot start", LF_STR("reason", "cannot start the publisher"));
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
	 * Stop taking connections and requests, let every suspended checkout
	 * get its confirm (bounded by the publish timeout), and only then stop
	 * MHD: stopping it with a suspended connection is undefined. If the
	 * broker never answers, freeing the publisher fails what is left with
	 * ERR_CLOSED, which resumes those connections with a 503.
	 */
	http_quiesce(a);
	atomic_store(&a->stopping, 1);
	if (a->publisher && !drain_suspended(a, a->cfg.publish_timeout_ms + 1000)) {
		mq_publisher_free(a->publisher);
		a->publisher = NULL;
		drain_suspended(a, 2000);
	}
	http_stop(a);
	mq_publisher_free(a->publisher);
	a->publisher = NULL;
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
