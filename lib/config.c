/* config.c: the ORDERS_* configuration table, its validation and its log line. */

#include "config.h"

#include "apikey.h"
#include "cache.h"
#include "err.h"
#include "log.h"
#include "mq.h"
#include "netaddr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>
#include <sodium.h>

enum config_type { CONFIG_INT, CONFIG_STR };

/* What isspace() takes in the C locale, as libpq reads a keyword DSN. */
#define SPACES " \t\n\v\f\r"

enum config_flags {
	CONFIG_SECRET = 1 << 0, /* never printed */
	CONFIG_URL = 1 << 1,    /* printed with the password of a URL or DSN masked */
	CONFIG_KEY = 1 << 2,    /* 64 hex digits; production refuses the dev default */
	CONFIG_URLS = 1 << 3,   /* with CONFIG_URL: URLs separated by commas, each masked */
};

/* A check for a string value: NULL when fine, else what the value must be. */
typedef const char *(*config_check_fn)(const char *value);

struct config_row {
	const char *name;
	enum config_type type;
	size_t offset;
	size_t size; /* of the char array, for strings */
	const char *def_str;
	int def_int;
	int min, max;
	unsigned flags;
	config_check_fn check;
};

static const char *check_env(const char *v);
static const char *check_bind(const char *v);
static const char *check_log_level(const char *v);
static const char *check_api_keys(const char *v);
static const char *check_key(const char *v);
static const char *check_amqp_urls(const char *v);
static const char *check_proxies(const char *v);
static const char *check_pg_dsn(const char *v);
static const char *check_redis_url(const char *v);

#define CONFIG_STR(x) #x
#define CONFIG_XSTR(x) CONFIG_STR(x)
#define CONFIG_FIELD_SIZE(field) sizeof(((struct config *)0)->field)
#define ROW_INT(name, field, def, lo, hi)                                                          \
	{                                                                                          \
		name, CONFIG_INT, offsetof(struct config, field), CONFIG_FIELD_SIZE(field), NULL,  \
		    def, lo, hi, 0, NULL                                                           \
	}
#define ROW_STR(name, field, def, flags, check)                                                    \
	{                                                                                          \
		name, CONFIG_STR, offsetof(struct config, field), CONFIG_FIELD_SIZE(field), def,   \
		    0, 0, 0, flags, check                                                          \
	}

/*
 * DEVELOPMENT-ONLY DEFAULTS. The API keys and the five crypto keys below
 * are published with the source code and protect nothing: they exist so
 * that the local stack runs without setup. config_load() refuses to start
 * with any of them when ORDERS_ENV=production. The seal key pair was made
 * with crypto_box_keypair(); the three other keys are 32 random bytes.
 */
#define DEV_API_KEYS "dev-client:client,dev-finance:finance,dev-admin:admin"
#define DEV_SEAL_PUBLIC_KEY "05638a2115cf33b298907f2fe5719403e168290d2a3d9ee35944da3e711ef249"
#define DEV_SEAL_SECRET_KEY "60d614a4df2dbc47747637bcc6373251b58c91ab5904be0278ed137c0ba8711c"
#define DEV_VAULT_KEY "10a8dbd4dcf3b796f1f04696ba0732b9ec29475667e8d4a18ab7d5f43a6f287f"
#define DEV_FINGERPRINT_KEY "af8015beadf6cdb784e7f364f968a4fc509110d7252f1f9c9774b32993b3d7d0"
#define DEV_ORDER_ID_KEY "a69bbf245efef7d23420bb343b1007bf608d25e790662c8b6874a651c315a8da"

/* dev-limited is the test stack's rate-limited key (deploy/local/test.sh). */
static const char *const dev_api_keys[] = {"dev-client", "dev-finance", "dev-admin", "dev-limited"};

static const struct config_row config_table[] = {
    ROW_STR("ORDERS_ENV", env, "development", 0, check_env),
    ROW_STR("ORDERS_LOG_LEVEL", log_level, "info", 0, check_log_level),
    ROW_STR("ORDERS_HTTP_BIND", http_bind, "127.0.0.1", 0, check_bind),
    ROW_INT("ORDERS_HTTP_PORT", http_port, 8080, 1, 65535),
    ROW_INT("ORDERS_HTTP_THREADS", http_threads, 2, 1, 64),
    ROW_INT("ORDERS_HTTP_CONNECTION_LIMIT", http_connection_limit, 10000, 1, 100000),
    ROW_INT("ORDERS_HTTP_IDLE_TIMEOUT_S", http_idle_timeout_s, 30, 1, 3600),
    ROW_INT("ORDERS_HTTP_REQUEST_TIMEOUT_S", http_request_timeout_s, 30, 1, 3600),
    ROW_INT("ORDERS_HTTP_PER_IP_CONNECTION_LIMIT", http_per_ip_limit, 1000, 0, 100000),
    ROW_INT("ORDERS_AUTH_FAILURE_LIMIT", auth_failure_limit, 50, 0, 1000000),
    ROW_STR("ORDERS_TRUSTED_PROXIES", trusted_proxies, "", 0, check_proxies),
    ROW_INT("ORDERS_METRICS_PORT", metrics_port, 0, 0, 65535),
    ROW_STR("ORDERS_PG_DSN", pg_dsn, "postgresql://orders@127.0.0.1:5442/orders", CONFIG_URL,
            check_pg_dsn),
    ROW_STR("ORDERS_AMQP_URL", amqp_url, "amqp://guest:guest@127.0.0.1:5682/",
            CONFIG_URL | CONFIG_URLS, check_amqp_urls),
    ROW_STR("ORDERS_REDIS_URL", redis_url, "redis://127.0.0.1:6389/0", CONFIG_URL, check_redis_url),
    ROW_STR("ORDERS_API_KEYS", api_keys, DEV_API_KEYS, CONFIG_SECRET, check_api_keys),
    ROW_INT("ORDERS_RATE_LIMIT", rate_limit, 100000, 0, APIKEY_LIMIT_MAX),
    ROW_STR("ORDERS_SEAL_PUBLIC_KEY", seal_public_key, DEV_SEAL_PUBLIC_KEY, CONFIG_KEY, check_key),
    ROW_STR("ORDERS_SEAL_SECRET_KEY", seal_secret_key, DEV_SEAL_SECRET_KEY,
            CONFIG_KEY | CONFIG_SECRET, check_key),
    ROW_STR("ORDERS_VAULT_KEY", vault_key, DEV_VAULT_KEY, CONFIG_KEY | CONFIG_SECRET, check_key),
    ROW_STR("ORDERS_FINGERPRINT_KEY", fingerprint_key, DEV_FINGERPRINT_KEY,
            CONFIG_KEY | CONFIG_SECRET, check_key),
    ROW_STR("ORDERS_ORDER_ID_KEY", order_id_key, DEV_ORDER_ID_KEY, CONFIG_KEY | CONFIG_SECRET,
            check_key),
    ROW_INT("ORDERS_PREFETCH", prefetch, 100, 1, 65535),
    ROW_INT("ORDERS_PUBLISH_TIMEOUT_MS", publish_timeout_ms, 5000, 10, 600000),
    ROW_INT("ORDERS_GATEWAY_LATENCY_MS", gateway_latency_ms, 0, 0, 60000),
    ROW_INT("ORDERS_RESERVATION_TTL_S", reservation_ttl_s, 900, 1, 604800),
    ROW_INT("ORDERS_FINALIZE_GRACE_S", finalize_grace_s, 60, 1, 86400),
    ROW_INT("ORDERS_CONSUMER_BATCH", consumer_batch, 0, 0, 1000),
    ROW_INT("ORDERS_DRAIN_TIMEOUT_MS", drain_timeout_ms, 15000, 0, 600000),
    ROW_STR("ORDERS_TLS_CERT_FILE", tls_cert_file, "", 0, NULL),
    ROW_STR("ORDERS_TLS_KEY_FILE", tls_key_file, "", 0, NULL),
    ROW_STR("ORDERS_AMQP_CA_FILE", amqp_ca_file, "", 0, NULL),
    ROW_STR("ORDERS_AMQP_CERT_FILE", amqp_cert_file, "", 0, NULL),
    ROW_STR("ORDERS_AMQP_KEY_FILE", amqp_key_file, "", 0, NULL),
    ROW_STR("ORDERS_REDIS_CA_FILE", redis_ca_file, "", 0, NULL),
};

#define CONFIG_ROWS (sizeof(config_table) / sizeof(config_table[0]))

static const char *check_env(const char *v)
{
	if (strcmp(v, "development") == 0 || strcmp(v, "production") == 0)
		return NULL;
	return "must be development or production";
}

static const char *check_bind(const char *v)
{
	struct in_addr addr;

	if (inet_pton(AF_INET, v, &addr) == 1)
		return NULL;
	return "must be an IPv4 address such as 127.0.0.1 or 0.0.0.0";
}

static const char *check_log_level(const char *v)
{
	enum log_level l;

	if (log_level_parse(v, &l) == ERR_OK)
		return NULL;
	return "must be debug, info, warn or error";
}

/* The syntax is apikey.h's; parsing it is the only sure check. */
static const char *check_api_keys(const char *v)
{
	struct apikey keys[APIKEY_MAX];
	const char *what = NULL;
	size_t n;
	int rc = apikey_parse(v, keys, APIKEY_MAX, &n, &what);

	sodium_memzero(keys, sizeof(keys));
	return rc == ERR_OK ? NULL : what;
}

static const char *check_key(const char *v)
{
	size_t i;

	for (i = 0; i < 64; i++) {
		char c = v[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return "must be 64 hex digits (32 bytes)";
	}
	if (v[64] != '\0')
		return "must be 64 hex digits (32 bytes)";
	return NULL;
}

/*
 * One amqp:// URL, or up to MQ_URLS_MAX separated by commas (lib/mq.h).
 * lib/mq parses each one at connect; this catches a list that cannot be
 * one, e.g. a comma inside a password, which would also defeat the masking.
 */
static const char *check_amqp_urls(const char *v)
{
	static const char what[] = "must be an amqp:// URL, or several separated by commas "
	                           "(write a comma inside one as %2C)";
	size_t n = 0;

	if (strpbrk(v, " \t\r\n"))
		return what;
	for (const char *s = v; s; s = strchr(s, ',')) {
		if (*s == ',')
			s++;
		if (strncmp(s, "amqp://", 7) != 0 && strncmp(s, "amqps://", 8) != 0)
			return what;
		n++;
	}
	if (n > MQ_URLS_MAX)
		return "names more than " CONFIG_XSTR(MQ_URLS_MAX) " URLs";
	return NULL;
}

/* libpq's own parser, at start: its complaint at connect time would quote the
 * DSN's text, a password included ("missing "=" after "cret""), into a log. */
static const char *check_pg_dsn(const char *v)
{
	PQconninfoOption *opts = PQconninfoParse(v, NULL);

	if (!opts)
		return "does not parse as a PostgreSQL connection string (keyword=value pairs or "
		       "a postgresql:// URI)";
	PQconninfoFree(opts);
	return NULL;
}

/* lib/cache's own parser, at start: a URL it would refuse is refused here, before the
 * configuration line could print a password it cannot find to mask (redis://pw@host). */
static const char *check_redis_url(const char *v)
{
	struct cache_url u;
	const char *why = NULL;

	if (cache_url_parse(v, &u, &why) != ERR_OK)
		return why;
	explicit_bzero(&u, sizeof(u));
	return NULL;
}

/* The syntax is netaddr.h's; parsing it is the only sure check. */
static const char *check_proxies(const char *v)
{
	struct netaddr_net nets[NETADDR_NETS_MAX];
	const char *what = NULL;
	size_t n;

	return netaddr_nets_parse(v, nets, NETADDR_NETS_MAX, &n, &what) == ERR_OK ? NULL : what;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Only an optional minus and digits: strtol alone would take " 12" and "+12". */
static int parse_int(const char *s, long long *out)
{
	const char *p = s;
	char *end;
	long long v;

	if (*p == '-')
		p++;
	if (*p < '0' || *p > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

static int load_row(const struct config_row *r, struct config *cfg, const char *v, char *err,
                    size_t errlen)
{
	char *field = (char *)cfg + r->offset;
	const char *what;
	long long n;
	size_t len;

	if (r->type == CONFIG_INT) {
		if (parse_int(v, &n) < 0 || n < r->min || n > r->max) {
			set_err(err, errlen, "%s must be an integer from %d to %d, got '%.64s'",
			        r->name, r->min, r->max, v);
			return ERR_INVALID;
		}
		*(int *)(void *)field = (int)n;
		return ERR_OK;
	}
	len = strlen(v);
	if (len >= r->size) {
		set_err(err, errlen, "%s is too long (at most %zu characters)", r->name,
		        r->size - 1);
		return ERR_INVALID;
	}
	what = r->check ? r->check(v) : NULL;
	if (what) {
		/* Never echo a secret, not even a wrong one. */
		if (r->flags & (CONFIG_SECRET | CONFIG_KEY | CONFIG_URL))
			set_err(err, errlen, "%s %s", r->name, what);
		else
			set_err(err, errlen, "%s %s, got '%.64s'", r->name, what, v);
		return ERR_INVALID;
	}
	memcpy(field, v, len + 1);
	return ERR_OK;
}

/* A dev API key in keys, plain or hashed: its name, else NULL. */
static const char *find_dev_api_key(const struct apikey *keys, size_t n)
{
	uint8_t h[APIKEY_HASH_BYTES];
	size_t i, k;

	for (k = 0; k < sizeof(dev_api_keys) / sizeof(dev_api_keys[0]); k++) {
		apikey_hash(dev_api_keys[k], strlen(dev_api_keys[k]), h);
		for (i = 0; i < n; i++) {
			if (memcmp(keys[i].hash, h, sizeof(h)) == 0)
				return dev_api_keys[k];
		}
	}
	return NULL;
}

/* The need bit of a CONFIG_KEY row (0 for others). */
static unsigned row_need(const struct config_row *r)
{
	static const struct {
		const char *name;
		unsigned need;
	} needs[] = {
	    {"ORDERS_SEAL_PUBLIC_KEY", CONFIG_NEED_SEAL_PUBLIC},
	    {"ORDERS_SEAL_SECRET_KEY", CONFIG_NEED_SEAL_SECRET},
	    {"ORDERS_VAULT_KEY", CONFIG_NEED_VAULT},
	    {"ORDERS_FINGERPRINT_KEY", CONFIG_NEED_FINGERPRINT},
	    {"ORDERS_ORDER_ID_KEY", CONFIG_NEED_ORDER_ID},
	};

	for (size_t i = 0; i < sizeof(needs) / sizeof(needs[0]); i++)
		if (strcmp(needs[i].name, r->name) == 0)
			return needs[i].need;
	return 0;
}

/* Production must not run with anything that ships with the source code. */
static int check_production(const struct config *cfg, unsigned needs, char *err, size_t errlen)
{
	struct apikey keys[APIKEY_MAX];
	const char *what, *dev = NULL;
	size_t i, n = 0;

	/* The value passed check_api_keys, so it parses. */
	if (needs & CONFIG_NEED_API_KEYS) {
		apikey_parse(cfg->api_keys, keys, APIKEY_MAX, &n, &what);
		dev = find_dev_api_key(keys, n);
		sodium_memzero(keys, sizeof(keys));
	}
	if (dev) {
		set_err(err, errlen,
		        "ORDERS_API_KEYS must not contain the development key '%s' "
		        "when ORDERS_ENV is production",
		        dev);
		return ERR_INVALID;
	}
	for (i = 0; i < CONFIG_ROWS; i++) {
		const struct config_row *r = &config_table[i];

		if (!(r->flags & CONFIG_KEY) || !(row_need(r) & needs))
			continue;
		if (strcasecmp((const char *)cfg + r->offset, r->def_str) == 0) {
			set_err(err, errlen,
			        "%s must be set to a key of its own when ORDERS_ENV is production "
			        "(the default is for development only)",
			        r->name);
			return ERR_INVALID;
		}
	}
	return ERR_OK;
}

/* A certificate is useless without its key and the other way round. */
static int check_pairs(const struct config *cfg, char *err, size_t errlen)
{
	static const struct {
		const char *cert, *key, *what;
		size_t cert_off, key_off;
	} pairs[] = {
	    {"ORDERS_TLS_CERT_FILE", "ORDERS_TLS_KEY_FILE", "HTTPS",
	     offsetof(struct config, tls_cert_file), offsetof(struct config, tls_key_file)},
	    {"ORDERS_AMQP_CERT_FILE", "ORDERS_AMQP_KEY_FILE", "a RabbitMQ client certificate",
	     offsetof(struct config, amqp_cert_file), offsetof(struct config, amqp_key_file)},
	};

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		int has_cert = ((const char *)cfg + pairs[i].cert_off)[0] != '\0';
		int has_key = ((const char *)cfg + pairs[i].key_off)[0] != '\0';

		if (has_cert == has_key)
			continue;
		set_err(err, errlen, "%s must be set together with %s (%s needs both)",
		        has_cert ? pairs[i].key : pairs[i].cert,
		        has_cert ? pairs[i].cert : pairs[i].key, pairs[i].what);
		return ERR_INVALID;
	}
	return ERR_OK;
}

int config_load(struct config *cfg, char *err, size_t errlen)
{
	return config_load_for(cfg, CONFIG_NEED_ALL, err, errlen);
}

int config_load_for(struct config *cfg, unsigned needs, char *err, size_t errlen)
{
	struct config c;
	size_t i;
	int rc;

	memset(&c, 0, sizeof(c));
	for (i = 0; i < CONFIG_ROWS; i++) {
		const struct config_row *r = &config_table[i];

		if (r->type == CONFIG_INT)
			*(int *)(void *)((char *)&c + r->offset) = r->def_int;
		else
			snprintf((char *)&c + r->offset, r->size, "%s", r->def_str);
	}
	for (i = 0; i < CONFIG_ROWS; i++) {
		const char *v = getenv(config_table[i].name);

		/* Set but empty counts as unset, as shells and compose files often do. */
		if (!v || *v == '\0')
			continue;
		rc = load_row(&config_table[i], &c, v, err, errlen);
		if (rc != ERR_OK)
			goto out;
	}
	rc = check_pairs(&c, err, errlen);
	if (rc != ERR_OK)
		goto out;
	if (config_is_production(&c)) {
		rc = check_production(&c, needs, err, errlen);
		if (rc != ERR_OK)
			goto out;
	}
	*cfg = c;
	rc = ERR_OK;
out:
	/* The copy holds the secret keys. */
	explicit_bzero(&c, sizeof(c));
	return rc;
}

int config_is_production(const struct config *cfg)
{
	return strcmp(cfg->env, "production") == 0;
}

/* Append n bytes of s to out, cutting at size - 1; out stays NUL-terminated. */
static void put(char *out, size_t size, size_t *o, const char *s, size_t n)
{
	if (*o + 1 >= size)
		return;
	if (n > size - 1 - *o)
		n = size - 1 - *o;
	memcpy(out + *o, s, n);
	*o += n;
	out[*o] = '\0';
}

/*
 * Where the value of a "password" or "sslpassword" parameter at or after
 * from in s starts, or NULL: a libpq keyword (spaces may surround its '=')
 * or a URI query parameter.
 */
static const char *find_password_value(const char *s, const char *from)
{
	static const char key[] = "password";
	const char *p = from, *v;

	while ((p = strstr(p, key)) != NULL) {
		const char *k = p - s >= 3 && strncmp(p - 3, "ssl", 3) == 0 ? p - 3 : p;

		v = p + strlen(key);
		v += strspn(v, SPACES);
		if (*v == '=' &&
		    (k == s || isspace((unsigned char)k[-1]) || k[-1] == '?' || k[-1] == '&'))
			return v + 1 + strspn(v + 1, SPACES);
		p++;
	}
	return NULL;
}

/*
 * Where the parameter value at v ends, as libpq reads it: in a URI's query
 * at the next '&' (spaces, quotes and '#' are part of it); in a keyword DSN
 * at the closing quote of a quoted value, else at the first whitespace that
 * no backslash escapes.
 */
static const char *value_end(const char *v, int uri)
{
	if (uri)
		return v + strcspn(v, "&");
	if (*v == '\'') {
		for (v++; *v && *v != '\''; v++) {
			if (*v == '\\' && v[1])
				v++;
		}
		return *v ? v + 1 : v;
	}
	for (; *v && !isspace((unsigned char)*v); v++) {
		if (*v == '\\' && v[1])
			v++;
	}
	return v;
}

/*
 * Where the "://" after the scheme a URL starts with is in s, or NULL: a
 * keyword DSN is no URL, even with a "://" inside one of its values.
 */
static const char *url_scheme_end(const char *s)
{
	static const char scheme[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                             "0123456789+-.";
	const char *sep = strstr(s, "://");

	if (!sep || !isalpha((unsigned char)s[0]) || strspn(s, scheme) != (size_t)(sep - s))
		return NULL;
	return sep;
}

/*
 * Copy s into out with the passwords masked: "scheme://user:pass@host/..."
 * gives "scheme://user:***@host/...", and a "password=" or "sslpassword="
 * parameter (libpq keyword DSN, also "password = x", or URI query) gives
 * "password=***". The last '@' ends the user info, so that a password with
 * a '/' or an '@' in it is masked whole; when in doubt this masks too much
 * rather than too little.
 */
static void mask_url(const char *s, char *out, size_t size)
{
	const char *p = s, *auth = url_scheme_end(s);
	const char *pw;
	size_t o = 0;

	out[0] = '\0';
	if (auth) {
		const char *at = strrchr(auth + 3, '@');
		const char *colon = at ? memchr(auth + 3, ':', (size_t)(at - (auth + 3))) : NULL;

		if (colon) {
			put(out, size, &o, s, (size_t)(colon + 1 - s));
			put(out, size, &o, "***", 3);
			p = at;
		}
	}
	while ((pw = find_password_value(s, p)) != NULL) {
		const char *end = value_end(pw, auth != NULL);

		put(out, size, &o, p, (size_t)(pw - p));
		put(out, size, &o, "***", 3);
		p = end;
	}
	put(out, size, &o, p, strlen(p));
}

/* mask_url() for each of a comma-separated list (CONFIG_URLS). */
static void mask_urls(const char *s, char *out, size_t size)
{
	char one[CONFIG_STR_MAX], masked[CONFIG_STR_MAX + 8];
	size_t o = 0;

	out[0] = '\0';
	for (const char *p = s; p; p = strchr(p, ',')) {
		size_t n;

		if (*p == ',')
			put(out, size, &o, p++, 1);
		n = strcspn(p, ",");
		snprintf(one, sizeof(one), "%.*s", (int)n, p);
		mask_url(one, masked, sizeof(masked));
		put(out, size, &o, masked, strlen(masked));
	}
	/* They held a password. */
	explicit_bzero(one, sizeof(one));
	explicit_bzero(masked, sizeof(masked));
}

int config_var_at(size_t i, struct config_var *out)
{
	const struct config_row *r;

	if (i >= CONFIG_ROWS || !out)
		return ERR_NOT_FOUND;
	r = &config_table[i];
	out->name = r->name;
	out->offset = r->offset;
	out->is_int = r->type == CONFIG_INT;
	/* What the error messages never quote (see config_load_for). */
	out->secret = (r->flags & (CONFIG_SECRET | CONFIG_KEY | CONFIG_URL)) != 0;
	return ERR_OK;
}

void config_log(const struct config *cfg)
{
	struct log_field fields[CONFIG_ROWS + 1];
	char masked[CONFIG_ROWS][CONFIG_STR_MAX + 8];
	size_t i;

	if (LOG_INFO < log__level)
		return;
	for (i = 0; i < CONFIG_ROWS; i++) {
		const struct config_row *r = &config_table[i];
		const char *field = (const char *)cfg + r->offset;

		if (r->type == CONFIG_INT) {
			fields[i] = LF_INT(r->name, *(const int *)(const void *)field);
		} else if (r->flags & CONFIG_SECRET) {
			fields[i] = LF_STR(r->name, "***");
		} else if (r->flags & CONFIG_URL) {
			if (r->flags & CONFIG_URLS)
				mask_urls(field, masked[i], sizeof(masked[i]));
			else
				mask_url(field, masked[i], sizeof(masked[i]));
			fields[i] = LF_STR(r->name, masked[i]);
		} else {
			fields[i] = LF_STR(r->name, field);
		}
	}
	fields[CONFIG_ROWS] = LF_END;
	log__emit(LOG_INFO, "configuration", fields);
}
