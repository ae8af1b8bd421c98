/*
 * fuzz_config.c: the configuration from the environment (config_load_for),
 * the API keys' list (apikey_parse) and the Redis URL (cache_pool_new). The
 * input is lines, each one variable: its first byte picks the ORDERS_*
 * name, the rest is the value. A configuration that loads must load the
 * same again from its own values, hold API keys that parse back (also
 * written as digests) and find their plain keys, keep production clear of
 * the development keys, and log no password (config_log); one that does
 * not load must not quote a secret in its message.
 */
#include <ctype.h>
#include <sys/mman.h>
#include <unistd.h>

#include <amqp.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "apikey.h"
#include "cache.h"
#include "config.h"
#include "fuzz.h"

/* Every variable, as lib/config's own table lists it (LLVMFuzzerInitialize). */
static struct config_var vars[64];
static size_t nvars;

static const char *const dev_keys[] = {"dev-client", "dev-finance", "dev-admin", "dev-limited"};

static int log_mem = -1, log_null = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	FUZZ_CHECK(sodium_init() >= 0);
	while (config_var_at(nvars, &vars[nvars]) == ERR_OK) {
		nvars++;
		FUZZ_CHECK(nvars < sizeof(vars) / sizeof(vars[0]));
	}
	FUZZ_CHECK(nvars >= 30);
	fuzz_quiet_logs();
	log_null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	log_mem = memfd_create("config-log", MFD_CLOEXEC);
	FUZZ_CHECK(log_null >= 0 && log_mem >= 0);
	for (size_t i = 0; i < nvars; i++)
		unsetenv(vars[i].name);
	return 0;
}

static void env_clear(void)
{
	for (size_t i = 0; i < nvars; i++)
		unsetenv(vars[i].name);
}

/* The configuration's own values as the environment, every one of them. */
static void env_from(const struct config *c)
{
	char n[16];

	for (size_t i = 0; i < nvars; i++) {
		const char *field = (const char *)c + vars[i].offset;

		if (vars[i].is_int) {
			snprintf(n, sizeof(n), "%d", *(const int *)(const void *)field);
			setenv(vars[i].name, n, 1);
		} else {
			setenv(vars[i].name, field, 1);
		}
	}
}

static int hex64(const char *s)
{
	return strlen(s) == 64 && strspn(s, "0123456789abcdefABCDEF") == 64;
}

/* The keys parse, are distinct and well named; each entry's plain key finds
 * its role; written as digests they parse to the same keys. */
static void check_api_keys(const char *list, int production)
{
	struct apikey keys[APIKEY_MAX], again[APIKEY_MAX];
	char *copy = strdup(list), *entry, *save = NULL, digests[4096];
	const char *what;
	size_t n = 0, m = 0, o = 0, i;
	uint8_t h[APIKEY_HASH_BYTES];

	FUZZ_CHECK(copy);
	FUZZ_CHECK(apikey_parse(list, keys, APIKEY_MAX, &n, &what) == ERR_OK);
	FUZZ_CHECK(n >= 1 && n <= APIKEY_MAX);
	for (i = 0; i < n; i++) {
		char hex[2 * APIKEY_HASH_BYTES + 1];

		FUZZ_CHECK(keys[i].role == ROLE_CLIENT || keys[i].role == ROLE_FINANCE ||
		           keys[i].role == ROLE_ADMIN);
		FUZZ_CHECK(keys[i].limit == APIKEY_LIMIT_DEFAULT ||
		           (keys[i].limit >= 0 && keys[i].limit <= APIKEY_LIMIT_MAX));
		FUZZ_CHECK(strlen(keys[i].client_id) == APIKEY_CLIENT_ID_LEN &&
		           strncmp(keys[i].client_id, "key_", 4) == 0);
		sodium_bin2hex(hex, sizeof(hex), keys[i].hash, sizeof(keys[i].hash));
		FUZZ_CHECK(strncmp(keys[i].client_id + 4, hex, 12) == 0);
		for (size_t k = 0; k < i; k++)
			FUZZ_CHECK(memcmp(keys[k].hash, keys[i].hash, APIKEY_HASH_BYTES) != 0);
		o += (size_t)snprintf(digests + o, sizeof(digests) - o, "%s%s%s:%s", i ? "," : "",
		                      APIKEY_HASH_PREFIX, hex,
		                      keys[i].role == ROLE_CLIENT    ? "client"
		                      : keys[i].role == ROLE_FINANCE ? "finance"
		                                                     : "admin");
		if (keys[i].limit != APIKEY_LIMIT_DEFAULT)
			o += (size_t)snprintf(digests + o, sizeof(digests) - o, ":%ld",
			                      keys[i].limit);
		FUZZ_CHECK(o < sizeof(digests));
	}
	FUZZ_CHECK(apikey_parse(digests, again, APIKEY_MAX, &m, &what) == ERR_OK && m == n);
	for (i = 0; i < n; i++)
		FUZZ_CHECK(memcmp(again[i].hash, keys[i].hash, APIKEY_HASH_BYTES) == 0 &&
		           again[i].role == keys[i].role && again[i].limit == keys[i].limit &&
		           strcmp(again[i].client_id, keys[i].client_id) == 0);
	/* The entries as the syntax reads: key:role[:limit], the key up to the first ':'. */
	for (entry = strtok_r(copy, ",", &save); entry; entry = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(entry, ':');
		const struct apikey *k;

		FUZZ_CHECK(colon);
		*colon = '\0';
		if (strncmp(entry, APIKEY_HASH_PREFIX, strlen(APIKEY_HASH_PREFIX)) == 0)
			continue;
		k = apikey_find(keys, n, entry, strlen(entry));
		FUZZ_CHECK(k);
		FUZZ_CHECK(strncmp(colon + 1,
		                   k->role == ROLE_CLIENT    ? "client"
		                   : k->role == ROLE_FINANCE ? "finance"
		                                             : "admin",
		                   strlen(k->role == ROLE_CLIENT    ? "client"
		                          : k->role == ROLE_FINANCE ? "finance"
		                                                    : "admin")) == 0);
	}
	if (production) {
		for (i = 0; i < sizeof(dev_keys) / sizeof(dev_keys[0]); i++) {
			apikey_hash(dev_keys[i], strlen(dev_keys[i]), h);
			for (size_t k = 0; k < n; k++)
				FUZZ_CHECK(memcmp(h, keys[k].hash, sizeof(h)) != 0);
		}
	}
	sodium_memzero(keys, sizeof(keys));
	sodium_memzero(again, sizeof(again));
	free(copy);
}

/* The password in a value (one URL of a list), as libpq or rabbitmq-c reads
 * it, when it can be told apart in the text: at least 3 characters, no '*',
 * found once. */
static int password_of(const char *name, const char *value, char *out, size_t outlen)
{
	out[0] = '\0';
	if (strcmp(name, "ORDERS_PG_DSN") == 0) {
		PQconninfoOption *opts = PQconninfoParse(value, NULL);

		for (PQconninfoOption *o = opts; o && o->keyword; o++)
			if (strcmp(o->keyword, "password") == 0 && o->val)
				snprintf(out, outlen, "%s", o->val);
		PQconninfoFree(opts);
	} else if (strcmp(name, "ORDERS_AMQP_URL") == 0) {
		struct amqp_connection_info info;
		char *copy = strdup(value), given[CONFIG_STR_MAX + 2];

		FUZZ_CHECK(copy);
		/* Only a password the URL spells out (":<password>@"): without one,
		 * amqp_parse_url gives the default "guest", which the value may
		 * hold as something else. */
		if (amqp_parse_url(copy, &info) == AMQP_STATUS_OK && info.password) {
			snprintf(given, sizeof(given), ":%s@", info.password);
			if (strstr(value, given))
				snprintf(out, outlen, "%s", info.password);
		}
		free(copy);
	}
	if (strlen(out) < 3 || strchr(out, '*'))
		return 0;
	{
		const char *first = strstr(value, out);

		return first && !strstr(first + 1, out);
	}
}

/* 1 when w is in value outside the password (at pw_at, pw_len long): the
 * log may show it for that reason. */
static int outside_password(const char *w, const char *value, size_t pw_at, size_t pw_len)
{
	size_t wl = strlen(w);

	for (const char *p = strstr(value, w); p; p = strstr(p + 1, w)) {
		size_t at = (size_t)(p - value);

		if (at + wl <= pw_at || at >= pw_at + pw_len)
			return 1;
	}
	return 0;
}

/*
 * No 8 characters of the password pw (found once in value) in what the log
 * shows for value, unless they are in value outside the password too: a
 * mask that leaves part of a password is a leak as well.
 */
static void check_no_piece(const char *shown, const char *value, const char *pw)
{
	size_t pl = strlen(pw), pw_at = (size_t)(strstr(value, pw) - value);

	for (size_t k = 0; k + 8 <= pl; k++) {
		char w[9];

		memcpy(w, pw + k, 8);
		w[8] = '\0';
		if (!strchr(w, '*') && !outside_password(w, value, pw_at, pl))
			FUZZ_CHECK(!strstr(shown, w));
	}
}

/* The configuration's log line (config_log), as the JSON object it is. */
static json_t *logged(const struct config *c)
{
	char buf[16384];
	ssize_t n;

	FUZZ_CHECK(ftruncate(log_mem, 0) == 0 && lseek(log_mem, 0, SEEK_SET) == 0);
	log_set_fd(log_mem);
	config_log(c);
	log_set_fd(log_null);
	n = pread(log_mem, buf, sizeof(buf) - 1, 0);
	FUZZ_CHECK(n > 0);
	buf[n] = '\0';
	return json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
}

static void check_masked(const struct config *c)
{
	static const char *const urls[] = {"ORDERS_PG_DSN", "ORDERS_AMQP_URL"};
	json_t *line = logged(c);
	char pw[CONFIG_STR_MAX];

	FUZZ_CHECK(line);
	FUZZ_CHECK(strcmp(json_string_value(json_object_get(line, "ORDERS_API_KEYS")), "***") == 0);
	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		const char *value = strcmp(urls[i], "ORDERS_PG_DSN") == 0 ? c->pg_dsn : c->amqp_url;
		const char *shown = json_string_value(json_object_get(line, urls[i]));

		FUZZ_CHECK(shown);
		if (password_of(urls[i], value, pw, sizeof(pw))) {
			FUZZ_CHECK(!strstr(shown, pw));
			check_no_piece(shown, value, pw);
		}
		/* Each URL of ORDERS_AMQP_URL's list on its own. */
		if (strcmp(urls[i], "ORDERS_AMQP_URL") == 0 && strchr(value, ',')) {
			char *copy = strdup(value), *one, *save = NULL;

			FUZZ_CHECK(copy);
			for (one = strtok_r(copy, ",", &save); one;
			     one = strtok_r(NULL, ",", &save)) {
				if (password_of(urls[i], one, pw, sizeof(pw)) &&
				    strstr(value, pw) && !strstr(strstr(value, pw) + 1, pw)) {
					FUZZ_CHECK(!strstr(shown, pw));
					check_no_piece(shown, value, pw);
				}
			}
			free(copy);
		}
	}
	json_decref(line);
}

/* 1 when s is in the value of a variable that is no secret, which a message may quote. */
static int in_plain_value(const char *s)
{
	char quoted[64 + 3];

	for (size_t i = 0; i < nvars; i++) {
		const char *v = getenv(vars[i].name);

		if (vars[i].secret || !v)
			continue;
		/* Messages quote a value as '%.64s' (lib/config.c): s may take in the quotes. */
		snprintf(quoted, sizeof(quoted), "'%.64s'", v);
		if (strstr(v, s) || strstr(quoted, s))
			return 1;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config cfg, again;
	char err[512];
	char *text = fuzz_cstr(data, size), *line, *save = NULL;
	struct cache_pool *pool;

	env_clear();
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t v = (unsigned char)line[0] % nvars;

		setenv(vars[v].name, line + 1, 1);
	}
	err[0] = '\0';
	memset(&cfg, 0, sizeof(cfg));
	if (config_load_for(&cfg, CONFIG_NEED_ALL, err, sizeof(err)) != ERR_OK) {
		FUZZ_CHECK(err[0]);
		/* Values of secrets are never quoted; one that the fixed texts and
		 * names cannot contain (a character none of them has) shows it. */
		for (size_t i = 0; i < nvars; i++) {
			const char *v = getenv(vars[i].name);

			if (vars[i].secret && v && strlen(v) >= 4 &&
			    strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			              "0123456789 _:,.'()[]/=-") != strlen(v) &&
			    !in_plain_value(v))
				FUZZ_CHECK(!strstr(err, v));
		}
		env_clear();
		free(text);
		return 0;
	}
	FUZZ_CHECK(hex64(cfg.seal_public_key) && hex64(cfg.seal_secret_key) &&
	           hex64(cfg.vault_key) && hex64(cfg.fingerprint_key) && hex64(cfg.order_id_key));
	check_api_keys(cfg.api_keys, config_is_production(&cfg));
	check_masked(&cfg);
	pool = cache_pool_new(cfg.redis_url, 1);
	FUZZ_CHECK(!pool || strncmp(cfg.redis_url, "redis://", 8) == 0 ||
	           strncmp(cfg.redis_url, "rediss://", 9) == 0);
	cache_pool_free(pool);

	/* Its own values load as the same configuration. */
	env_clear();
	env_from(&cfg);
	memset(&again, 0, sizeof(again));
	FUZZ_CHECK(config_load_for(&again, CONFIG_NEED_ALL, err, sizeof(err)) == ERR_OK);
	FUZZ_CHECK(memcmp(&again, &cfg, sizeof(cfg)) == 0);
	sodium_memzero(&cfg, sizeof(cfg));
	sodium_memzero(&again, sizeof(again));
	env_clear();
	free(text);
	return 0;
}
