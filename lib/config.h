/*
 * config.h: the one configuration table, read from ORDERS_* environment
 * variables, validated at start and printed once with secrets masked.
 *
 * Every daemon loads the same struct config; each uses the fields it needs.
 * Adding a setting means one field here and one row in config.c's table.
 */
#ifndef ORDERS_CONFIG_H
#define ORDERS_CONFIG_H

#include <stddef.h>

#define CONFIG_STR_MAX 512
#define CONFIG_PATH_MAX 256

struct config {
	char env[32];                /* ORDERS_ENV: development | production */
	char log_level[16];          /* ORDERS_LOG_LEVEL */
	char http_bind[64];          /* ORDERS_HTTP_BIND: address the API and ops ports listen on */
	int http_port;               /* ORDERS_HTTP_PORT (API) */
	int http_threads;            /* ORDERS_HTTP_THREADS */
	int http_connection_limit;   /* ORDERS_HTTP_CONNECTION_LIMIT */
	int metrics_port;            /* ORDERS_METRICS_PORT (consumers; 0 = daemon default) */
	char pg_dsn[CONFIG_STR_MAX]; /* ORDERS_PG_DSN (secret) */
	char amqp_url[CONFIG_STR_MAX];  /* ORDERS_AMQP_URL (secret) */
	char redis_url[CONFIG_STR_MAX]; /* ORDERS_REDIS_URL: redis:// or rediss:// (secret) */
	char api_keys[4096];            /* ORDERS_API_KEYS (secret): 32 hashed entries fit */
	char seal_public_key[128];      /* ORDERS_SEAL_PUBLIC_KEY, hex (API) */
	char seal_secret_key[128];      /* ORDERS_SEAL_SECRET_KEY, hex (payment; secret) */
	char vault_key[128];            /* ORDERS_VAULT_KEY, hex (payment; secret) */
	char fingerprint_key[128];      /* ORDERS_FINGERPRINT_KEY, hex (payment; secret) */
	char order_id_key[128];         /* ORDERS_ORDER_ID_KEY, hex (API; secret) */
	int prefetch;                   /* ORDERS_PREFETCH */
	int publish_timeout_ms;         /* ORDERS_PUBLISH_TIMEOUT_MS */
	int gateway_latency_ms;         /* ORDERS_GATEWAY_LATENCY_MS */
	int reservation_ttl_s;          /* ORDERS_RESERVATION_TTL_S */
	int finalize_grace_s;           /* ORDERS_FINALIZE_GRACE_S */
	int consumer_batch;             /* ORDERS_CONSUMER_BATCH: 0 = each consumer's default */
	int drain_timeout_ms;           /* ORDERS_DRAIN_TIMEOUT_MS */
	int rate_limit;                 /* ORDERS_RATE_LIMIT: per key and second; 0 = none */
	int http_idle_timeout_s;        /* ORDERS_HTTP_IDLE_TIMEOUT_S */
	int http_request_timeout_s;     /* ORDERS_HTTP_REQUEST_TIMEOUT_S */
	int http_per_ip_limit;          /* ORDERS_HTTP_PER_IP_CONNECTION_LIMIT (0 = none) */
	int auth_failure_limit;         /* ORDERS_AUTH_FAILURE_LIMIT, per address (0 = none) */
	char trusted_proxies[512];      /* ORDERS_TRUSTED_PROXIES: addresses and networks */
	/* TLS: file paths (PEM), "" when unset; each pair is both or neither. */
	char tls_cert_file[CONFIG_PATH_MAX];  /* ORDERS_TLS_CERT_FILE: the API serves HTTPS */
	char tls_key_file[CONFIG_PATH_MAX];   /* ORDERS_TLS_KEY_FILE: its private key */
	char amqp_ca_file[CONFIG_PATH_MAX];   /* ORDERS_AMQP_CA_FILE: "" = system trust store */
	char amqp_cert_file[CONFIG_PATH_MAX]; /* ORDERS_AMQP_CERT_FILE: amqps client cert */
	char amqp_key_file[CONFIG_PATH_MAX];  /* ORDERS_AMQP_KEY_FILE: its private key */
	char redis_ca_file[CONFIG_PATH_MAX];  /* ORDERS_REDIS_CA_FILE: "" = system trust store */
};

/* The secrets a daemon uses: in production, config_load_for() refuses to
 * start while one of them is left at its published development default. */
enum config_need {
	CONFIG_NEED_API_KEYS = 1 << 0,    /* ORDERS_API_KEYS */
	CONFIG_NEED_SEAL_PUBLIC = 1 << 1, /* ORDERS_SEAL_PUBLIC_KEY */
	CONFIG_NEED_SEAL_SECRET = 1 << 2, /* ORDERS_SEAL_SECRET_KEY */
	CONFIG_NEED_VAULT = 1 << 3,       /* ORDERS_VAULT_KEY */
	CONFIG_NEED_FINGERPRINT = 1 << 4, /* ORDERS_FINGERPRINT_KEY */
	CONFIG_NEED_ORDER_ID = 1 << 5,    /* ORDERS_ORDER_ID_KEY */
	CONFIG_NEED_ALL = (1 << 6) - 1,
};

/*
 * config_load_for - fill cfg from the defaults and then from getenv().
 * On a bad value returns ERR_INVALID and writes a sentence naming the
 * variable into err (size errlen); so does a TLS certificate set without
 * its key or the other way round (the files themselves are read by their
 * users: the API and mq_tls_configure()). In production, refuses the dev
 * API keys and any dev crypto key among needs (enum config_need): each
 * daemon names only what it uses, so that the others never have to hold
 * the card keys.
 * Not thread-safe (reads the environment).
 */
int config_load_for(struct config *cfg, unsigned needs, char *err, size_t errlen);

/* config_load - config_load_for() needing every secret. */
int config_load(struct config *cfg, char *err, size_t errlen);

/* config_log - print every setting once as a log line, secrets masked. */
void config_log(const struct config *cfg);

/* config_is_production - ORDERS_ENV is "production". */
int config_is_production(const struct config *cfg);

/* One row of the configuration table, read-only: for tests and tools that
 * must cover every variable without keeping a list of their own. */
struct config_var {
	const char *name; /* ORDERS_... */
	size_t offset;    /* of its field in struct config */
	int is_int;       /* an int; else a NUL-terminated char array */
	int secret;       /* holds a secret (a key, a password): never quoted in an error */
};

/* config_var_at - the i-th variable (from 0) into *out; ERR_NOT_FOUND past
 * the last. Any thread. */
int config_var_at(size_t i, struct config_var *out);

#endif
