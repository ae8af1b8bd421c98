/*
 * api.h: orders-api, the HTTP front door. Shared state and the pieces the
 * route handlers in catalog.c, checkout.c, orders.c and events.c use.
 *
 * Threads: libmicrohttpd runs the handlers on its pool of epoll threads;
 * the publisher has a thread of its own. struct api is set up before the
 * HTTP daemon starts and is read-only afterwards, except through the
 * thread-safe pools, publisher and metrics it holds.
 */
#ifndef ORDERS_API_H
#define ORDERS_API_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "addrlimit.h"
#include "apikey.h"
#include "buf.h"
#include "cache.h"
#include "config.h"
#include "db.h"
#include "metrics.h"
#include "mq.h"
#include "netaddr.h"
#include "ops.h"
#include "ratelimit.h"
#include "seal.h"

#define API_BODY_MAX (64 * 1024)
/* MHD's memory pool per connection: the request's headers and the
 * response's header block (bodies are kept elsewhere). The same over
 * HTTPS: GnuTLS keeps a session's state and records in memory of its own
 * (some 11 KB more per idle connection, tests/integration/tls_api.sh). */
#define API_CONNECTION_MEMORY (4 * 1024)
/* The most of it a request line and headers may take: the rest is for the
 * answer's header block. */
#define API_HEAD_MAX (API_CONNECTION_MEMORY - 1024)
/*
 * What HTTPS offers (GnuTLS priorities): TLS 1.3 and 1.2 only, AEAD ciphers
 * (AES-GCM, ChaCha20-Poly1305) with ECDHE key exchange on 1.2, the
 * server's order of preference. PCI-DSS 4.2.1 wants TLS 1.2 or later.
 */
#define API_TLS_PRIORITIES                                                                         \
	"SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:"     \
	"+CHACHA20-POLY1305:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:%SERVER_PRECEDENCE"
#define API_REQUEST_ID_MAX 64
#define API_CLIENT_ID_LEN APIKEY_CLIENT_ID_LEN

struct api {
	struct config cfg; /* its api_keys is wiped once the keys are hashed */
	struct apikey keys[APIKEY_MAX];
	size_t nkeys;
	struct ratelimit *ratelimit; /* key i is the limiter's index i */
	uint8_t order_id_key[32];
	uint8_t body_hash_key[32]; /* keys the idempotency record's body hash */
	/* Failed authentications per client address (authguard.c); NULL: no
	 * limit. Client addresses come through the trusted proxies. */
	struct addrlimit *auth_failures;
	struct netaddr_net trusted[NETADDR_NETS_MAX];
	size_t ntrusted;
	struct watchdog *watchdog; /* slow connections (watchdog.c) */

	/* Shutdown: new requests are refused once stopping is set, and the
	 * daemon stops only when no checkout is suspended any more. */
	atomic_int stopping;
	atomic_int suspended;

	struct db_pool *db;
	struct cache_pool *cache;
	struct mq_publisher *publisher;
	struct settler *settler;
	struct sealer *sealer;

	struct metrics *metrics;
	struct metric_family *m_requests;
	struct metric_family *m_latency;
	struct metric_family *m_checkouts;
	struct metric_family *m_confirm_latency;
	struct ops_queue_gauges queue_gauges;
	struct metric_family *m_rate_limited;
	struct metric_family *m_rate_unchecked;
	struct metric_family *m_auth_failures;
	struct metric_family *m_slow_closed;
	/* GET /healthz answers 200 not yet added to m_requests: counted with
	 * one atomic add each, folded in at every scrape (http_collect). */
	atomic_long healthz_ok;

	struct MHD_Daemon *httpd;
	/* HTTPS: the PEM certificate chain and key, read at start (NULL: plain
	 * HTTP); the key is wiped once MHD has stopped. */
	char *tls_cert;
	char *tls_key;
	size_t tls_key_len;
};

/* The stages of one request's life (struct request.state). */
enum request_state {
	REQ_RECEIVING = 0, /* headers and body arriving */
	REQ_PUBLISHING,    /* suspended, waiting for the broker's confirm */
	REQ_CONFIRMED,     /* the confirm (or its failure) has arrived */
};

/*
 * One HTTP request, from its first header to its completion. Owned by MHD's
 * per-request pointer; freed in the completion callback. While suspended,
 * the publisher thread writes publish_result and state, then resumes the
 * connection; after that it never touches the request again.
 */
struct request {
	struct api *api;
	struct MHD_Connection *conn;
	char request_id[API_REQUEST_ID_MAX + 1];
	const char *method;
	const char *route; /* the route's pattern, the metrics label */
	const struct apikey *key;
	int rate_counted; /* the key's rate limit has counted this request */
	int auth_blocked; /* its address is over the failed-authentication limit */
	int have_client;  /* client holds the client's address (authguard.c) */
	struct netaddr client;
	struct buf body;
	int body_too_big;
	int64_t started_ns;

	/* A message in flight (api_publish), across the suspension. */
	_Atomic int state;
	_Atomic int publish_result;
	int64_t publish_started_ns;
	enum MHD_Result (*on_published)(struct request *r);
	int done_ran; /* on_published has been called */
	int gone;     /* the client left: nothing is sent (respond() says MHD_NO) */
	/* Commands written to Redis once the broker has confirmed the message,
	 * before on_published runs (NULL: none); malloc'd, freed with the
	 * request. settle_failed: they could not all be written, so the
	 * answer must not be a 202 (on_published closes the connection). */
	struct cache_batch *settle;
	int settle_failed;
	struct request *settle_next; /* the settler's queues */
	int64_t settle_since_ms;     /* when the settler got it (monotonic) */
	int64_t settle_by_ms;        /* give up after (monotonic; 0: none) */
	/* Route state kept across the suspension, freed with the request. */
	void *ctx;
	void (*ctx_free)(void *ctx);

	/* Checkout, across the suspension. */
	char order_id[40];
	char idem_redis_key[320];
	char idem_hash[33];  /* keyed hash of the body, hex */
	char idem_token[37]; /* a UUID naming this request's in-flight record */
	char *accepted_body; /* the 202 body, malloc'd */
};

/* ---- responses (http.c) --------------------------------------------------- */

/* respond_json - queue status with the JSON body (copied). headers is a
 * NULL-terminated list of name, value pairs, or NULL. */
enum MHD_Result respond_json(struct request *r, unsigned int status, const char *body,
                             const char *const *headers);
/* respond_text - queue status with body (len bytes, copied) of Content-Type
 * type; headers as for respond_json. */
enum MHD_Result respond_text(struct request *r, unsigned int status, const char *type,
                             const char *body, size_t len, const char *const *headers);
/* respond_empty - queue status without a body (204). */
enum MHD_Result respond_empty(struct request *r, unsigned int status);
/* respond_obj - like respond_json with a jansson object (decref'd here). */
enum MHD_Result respond_obj(struct request *r, unsigned int status, json_t *obj,
                            const char *const *headers);
/* respond_error - the contract's error shape; field may be NULL. */
enum MHD_Result respond_error(struct request *r, unsigned int status, const char *code,
                              const char *message, const char *field);
/* respond_unavailable - 503 unavailable with Retry-After. */
enum MHD_Result respond_unavailable(struct request *r, const char *what);

/* require_role - ERR_OK when the request's key may use a route for role and
 * is within its rate limit; otherwise the 401/429/403 has been queued and
 * the handler returns *result. Every authenticated route calls it first. */
int require_role(struct request *r, enum role role, enum MHD_Result *result);

/* body_json - parse the request body as a JSON object. On failure queues
 * 415/400 and returns NULL with *result set. */
json_t *body_json(struct request *r, enum MHD_Result *result);

/* require_query_args - ERR_OK when every query parameter of the request is in
 * allowed (a NULL-terminated list; NULL allows none); otherwise a 422
 * validation_error naming the first unknown one has been queued, *result
 * is set and ERR_INVALID returned. */
int require_query_args(struct request *r, const char *const *allowed, enum MHD_Result *result);

int64_t api_now_ns(void);

/*
 * api_publish - suspend the connection and hand msg (copied) to the
 * publisher for exchange "orders" (mandatory). Once the broker has
 * answered, r->publish_result holds ERR_OK or the failure (ERR_IN_DOUBT:
 * sent, and the broker may hold it; see mq.h) and done(r) is called on an
 * MHD thread to queue the response; on ERR_OK, r->settle's
 * commands are in Redis by then (or r->settle_failed is set). Returns
 * MHD_YES; done is called exactly once, also when the hand-over itself
 * fails.
 */
enum MHD_Result api_publish(struct request *r, const char *routing_key, const char *message_id,
                            const uint8_t *msg, size_t len,
                            enum MHD_Result (*done)(struct request *r));

/* json_text - the string value of v when it is one of 1..max bytes of
 * text without NUL characters, else NULL. */
const char *json_text(json_t *v, size_t max);

/* ---- validation helpers (http.c) ------------------------------------------ */

int valid_sku(const char *s);
int valid_currency(const char *s);

/* json_only_fields - ERR_OK when obj has no member outside allowed (a NULL-terminated
 * list); else ERR_INVALID with *bad set to the first unknown member's name.
 * *bad points into obj and lives as long as that member. */
int json_only_fields(json_t *obj, const char *const *allowed, const char **bad);

/* require_only_fields - json_only_fields, answering the first unknown member
 * with 422 validation_error ("unknown field 'x'"); its field is path.x, or x
 * when path is "". ERR_OK, or ERR_INVALID with the answer queued and *result set. */
int require_only_fields(struct request *r, json_t *obj, const char *path,
                        const char *const *allowed, enum MHD_Result *result);

/* ---- route handlers ------------------------------------------------------- */

enum MHD_Result catalog_put(struct request *r, const char *sku);
enum MHD_Result catalog_get(struct request *r, const char *sku);
enum MHD_Result catalog_list(struct request *r);
enum MHD_Result checkout_post(struct request *r);
/* checkout_written_timeout_ms - how long a checkout's message, once sent, may wait for its
 * confirm (the publisher's written_timeout_ms): until just before its key's in-flight record
 * expires. */
int checkout_written_timeout_ms(const struct api *a);
enum MHD_Result carts_post(struct request *r);
enum MHD_Result carts_get(struct request *r, const char *cart_id);
enum MHD_Result carts_put(struct request *r, const char *cart_id);
enum MHD_Result carts_delete(struct request *r, const char *cart_id);
enum MHD_Result orders_get(struct request *r, const char *order_id);
/* events.c: the finance feed (JSON or, on Accept: text/csv, CSV) and the
 * day's reconciliation figures, both from PostgreSQL. */
enum MHD_Result events_list(struct request *r);
enum MHD_Result reconciliation_get(struct request *r);

/*
 * product_lookup - name, price and currency of sku: Redis first, PostgreSQL
 * on a miss (and the cache is filled). ERR_NOT_FOUND, ERR_UNAVAILABLE.
 * name_out may be NULL.
 */
int product_lookup(struct api *a, struct cache *c, const char *sku, int64_t *price_cents,
                   char currency[4], char *name_out, size_t name_len);

/* product_batch_add - append to b the cache read product_prices() takes as
 * known[i]: a caller that talks to Redis anyway saves the round trip. */
int product_batch_add(struct cache_batch *b, const char *sku);

#define PRODUCT_PRICES_MAX 100

/*
 * require_prices - today's price of each of n lines (at most
 * PRODUCT_PRICES_MAX), the product of skus[i], into cents[i], when every
 * one is a product sold in currency: ERR_OK. The cache is read for all of
 * them in one round trip (known[i], when known is not NULL and known[i]
 * is, is product_batch_add's reply for skus[i], already read), misses from
 * PostgreSQL one by one (and cached). Otherwise the first line at fault is
 * answered and *result set: 422 unknown_sku, or currency_mismatch with the
 * message mismatch (field items[i].sku, i = origin[line], or the line's
 * own index when origin is NULL), or 503 when the catalog could not say.
 */
int require_prices(struct request *r, struct cache *c, const char *const *skus, size_t n,
                   redisReply *const *known, const char *currency, const size_t *origin,
                   const char *mismatch, int64_t *cents, enum MHD_Result *result);

/* ---- carts (cart.c), for checkout.c --------------------------------------- */

#define CART_MAX_LINES 100
#define CART_MAX_QUANTITY 999

struct cart_line {
	char sku[65];
	int quantity;
};

/* A cart as stored in Redis. */
struct cart {
	char cart_id[40];
	char customer_id[129];
	char currency[4];
	char status[16];
	char order_id[40];
	int64_t version;
	int64_t created_ms, updated_ms;
	struct cart_line lines[CART_MAX_LINES];
	size_t nlines;
};

/*
 * cart_load - the cart cart_id of the request's API key from Redis.
 * ERR_NOT_FOUND when there is none (or it is another key's), ERR_UNAVAILABLE
 * when Redis failed.
 */
int cart_load(struct request *r, struct cache *c, const char *cart_id, struct cart *out);

/* http_collect - fold the counts kept outside the metrics (the /healthz
 * answers) into them; called before every render. */
void http_collect(struct api *a);

/* ---- the settler (settle.c) ----------------------------------------------- */

/*
 * A thread that writes the r->settle commands of confirmed requests to
 * Redis, for all requests waiting at the time in one round trip, and then
 * resumes their connections. While Redis fails it keeps them and retries
 * (backing off up to 1 s) until r->settle_by_ms, at most 30 s after the
 * confirm; then, or when the settler stops, they are resumed with
 * settle_failed set.
 */
struct settler;

/* settler_new - start the thread with a Redis connection of its own. NULL
 * on a bad URL or when out of memory. */
struct settler *settler_new(const char *redis_url);

/*
 * settler_push - queue r, whose message the broker has confirmed and whose
 * r->settle is not empty. ERR_OK: r is the settler's until it resumes r.
 * ERR_CLOSED once settler_stop has begun, ERR_INVALID for an r without
 * commands or with more than CACHE_BATCH_MAX: r stays the caller's.
 * Thread-safe; never waits for Redis.
 */
int settler_push(struct settler *s, struct request *r);

/*
 * settler_stop - settle and resume whatever is queued, stop the thread. Call
 * it while the HTTP daemon still runs. s stays valid: a publisher thread may
 * still push to it (and be told ERR_CLOSED) until settler_free. From the
 * thread that calls settler_free; again is a no-op.
 */
void settler_stop(struct settler *s);

/* settler_free - settler_stop, then free s; call it once nothing can push to
 * it any more (the publisher and the HTTP daemon have stopped). NULL is a
 * no-op. */
void settler_free(struct settler *s);

/* ---- hostile clients (authguard.c, watchdog.c) ----------------------------- */

/*
 * auth_blocked - 1 when the request's client address is over
 * ORDERS_AUTH_FAILURE_LIMIT: its API key is then never looked at, and
 * auth_failed() answers it. Cheap while no address is over the limit.
 */
int auth_blocked(struct request *r);

/*
 * auth_failed - answer a request without a known API key: counts the
 * failure for its client address, then 401 unauthorized, or 429
 * rate_limited with Retry-After once the address is over the limit.
 */
enum MHD_Result auth_failed(struct request *r);

/*
 * The watchdog: a thread that shuts down every connection still busy with
 * a request budget_s seconds after it opened or after its previous answer
 * went out (time suspended waiting for the broker not counted). MHD's own
 * timeout closes a silent connection, but restarts with every byte: this
 * bounds a client that sends (or reads) a byte at a time.
 */
struct watchdog;

/* watchdog_new - start the thread; closed counts the connections it shuts
 * down. NULL when out of memory. */
struct watchdog *watchdog_new(int budget_s, struct metric_family *closed);

/* watchdog_free - stop the thread; only after MHD has stopped. NULL is a no-op. */
void watchdog_free(struct watchdog *w);

/* watchdog_notify - MHD_OPTION_NOTIFY_CONNECTION's callback; cls is the watchdog. */
void watchdog_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                     enum MHD_ConnectionNotificationCode code);

/* watchdog_arm - conn's budget starts now (a request finished, or a suspended
 * connection was resumed); watchdog_disarm - none while it is suspended.
 * Called on the connection's MHD thread. */
void watchdog_arm(struct watchdog *w, struct MHD_Connection *conn);
void watchdog_disarm(struct MHD_Connection *conn);

/* http_start / http_stop - the MHD daemon (http.c). */
int http_start(struct api *a);
void http_quiesce(struct api *a);
void http_stop(struct api *a);

#endif
