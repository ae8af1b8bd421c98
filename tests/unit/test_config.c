/* test_config.c: defaults, overrides, validation, production refusal, masking. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "err.h"
#include "log.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const all_vars[] = {
    "ORDERS_ENV",
    "ORDERS_LOG_LEVEL",
    "ORDERS_HTTP_PORT",
    "ORDERS_HTTP_THREADS",
    "ORDERS_HTTP_CONNECTION_LIMIT",
    "ORDERS_HTTP_IDLE_TIMEOUT_S",
    "ORDERS_HTTP_REQUEST_TIMEOUT_S",
    "ORDERS_HTTP_PER_IP_CONNECTION_LIMIT",
    "ORDERS_AUTH_FAILURE_LIMIT",
    "ORDERS_TRUSTED_PROXIES",
    "ORDERS_METRICS_PORT",
    "ORDERS_PG_DSN",
    "ORDERS_AMQP_URL",
    "ORDERS_REDIS_URL",
    "ORDERS_API_KEYS",
    "ORDERS_RATE_LIMIT",
    "ORDERS_SEAL_PUBLIC_KEY",
    "ORDERS_SEAL_SECRET_KEY",
    "ORDERS_VAULT_KEY",
    "ORDERS_FINGERPRINT_KEY",
    "ORDERS_ORDER_ID_KEY",
    "ORDERS_PREFETCH",
    "ORDERS_PUBLISH_TIMEOUT_MS",
    "ORDERS_GATEWAY_LATENCY_MS",
    "ORDERS_RESERVATION_TTL_S",
    "ORDERS_FINALIZE_GRACE_S",
    "ORDERS_CONSUMER_BATCH",
    "ORDERS_TLS_CERT_FILE",
    "ORDERS_TLS_KEY_FILE",
    "ORDERS_AMQP_CA_FILE",
    "ORDERS_AMQP_CERT_FILE",
    "ORDERS_AMQP_KEY_FILE",
    "ORDERS_REDIS_CA_FILE",
};

#define NVARS (sizeof(all_vars) / sizeof(all_vars[0]))

/* Production-looking keys, none of them a dev default. */
#define K1 "1111111111111111111111111111111111111111111111111111111111111111"
#define K2 "2222222222222222222222222222222222222222222222222222222222222222"
#define K3 "3333333333333333333333333333333333333333333333333333333333333333"
#define K4 "4444444444444444444444444444444444444444444444444444444444444444"
#define K5 "5555555555555555555555555555555555555555555555555555555555555555"

static int clear_env(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < NVARS; i++)
		unsetenv(all_vars[i]);
	return 0;
}

static void set_prod_keys(void)
{
	setenv("ORDERS_ENV", "production", 1);
	setenv("ORDERS_API_KEYS", "live-7f3a:client,live-91bc:finance,live-0d2e:admin", 1);
	setenv("ORDERS_SEAL_PUBLIC_KEY", K1, 1);
	setenv("ORDERS_SEAL_SECRET_KEY", K2, 1);
	setenv("ORDERS_VAULT_KEY", K3, 1);
	setenv("ORDERS_FINGERPRINT_KEY", K4, 1);
	setenv("ORDERS_ORDER_ID_KEY", K5, 1);
}

static int is_hex64(const char *s)
{
	size_t i;

	for (i = 0; i < 64; i++) {
		if (!strchr("0123456789abcdef", s[i]) || s[i] == '\0')
			return 0;
	}
	return s[64] == '\0';
}

static void test_defaults(void **state)
{
	struct config c;
	char err[256] = "";

	(void)state;
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_OK);
	assert_string_equal(c.env, "development");
	assert_false(config_is_production(&c));
	assert_string_equal(c.log_level, "info");
	assert_int_equal(c.http_port, 8080);
	assert_int_equal(c.http_threads, 2);
	assert_int_equal(c.http_connection_limit, 10000);
	assert_int_equal(c.http_idle_timeout_s, 30);
	assert_int_equal(c.http_request_timeout_s, 30);
	assert_int_equal(c.http_per_ip_limit, 1000);
	assert_int_equal(c.auth_failure_limit, 50);
	assert_string_equal(c.trusted_proxies, "");
	assert_int_equal(c.metrics_port, 0);
	assert_string_equal(c.pg_dsn, "postgresql://orders@127.0.0.1:5442/orders");
	assert_string_equal(c.amqp_url, "amqp://guest:guest@127.0.0.1:5682/");
	assert_string_equal(c.redis_url, "redis://127.0.0.1:6389/0");
	assert_string_equal(c.api_keys, "dev-client:client,dev-finance:finance,dev-admin:admin");
	assert_int_equal(c.rate_limit, 100000);
	assert_int_equal(c.prefetch, 100);
	assert_int_equal(c.publish_timeout_ms, 5000);
	assert_int_equal(c.gateway_latency_ms, 0);
	assert_int_equal(c.reservation_ttl_s, 900);
	assert_int_equal(c.finalize_grace_s, 60);
	assert_int_equal(c.consumer_batch, 0);
	/* Plain HTTP, and the system's trust store for amqps:// URLs. */
	assert_string_equal(c.tls_cert_file, "");
	assert_string_equal(c.tls_key_file, "");
	assert_string_equal(c.amqp_ca_file, "");
	assert_string_equal(c.amqp_cert_file, "");
	assert_string_equal(c.amqp_key_file, "");
	assert_true(is_hex64(c.seal_public_key));
	assert_true(is_hex64(c.seal_secret_key));
	assert_true(is_hex64(c.vault_key));
	assert_true(is_hex64(c.fingerprint_key));
	assert_true(is_hex64(c.order_id_key));
	assert_string_not_equal(c.vault_key, c.fingerprint_key);
	assert_string_not_equal(c.vault_key, c.order_id_key);
}

static void test_dev_seal_keys_are_a_pair(void **state)
{
	struct config c;
	uint8_t pk[32], sk[32], derived[32];

	(void)state;
	assert_int_equal(config_load(&c, NULL, 0), ERR_OK);
	assert_int_equal(sodium_hex2bin(pk, 32, c.seal_public_key, 64, NULL, NULL, NULL), 0);
	assert_int_equal(sodium_hex2bin(sk, 32, c.seal_secret_key, 64, NULL, NULL, NULL), 0);
	assert_int_equal(crypto_scalarmult_base(derived, sk), 0);
	assert_memory_equal(derived, pk, 32);
}

static void test_overrides(void **state)
{
	struct config c;
	char err[256] = "";

	(void)state;
	setenv("ORDERS_LOG_LEVEL", "debug", 1);
	setenv("ORDERS_HTTP_PORT", "9090", 1);
	setenv("ORDERS_HTTP_THREADS", "64", 1);
	setenv("ORDERS_HTTP_CONNECTION_LIMIT", "1", 1);
	setenv("ORDERS_METRICS_PORT", "9101", 1);
	setenv("ORDERS_PG_DSN", "host=db user=orders", 1);
	setenv("ORDERS_AMQP_URL", "amqp://u:p@mq:5672/%2F", 1);
	setenv("ORDERS_REDIS_URL", "redis://cache:6379/1", 1);
	setenv("ORDERS_API_KEYS", "a:client", 1);
	setenv("ORDERS_RATE_LIMIT", "0", 1);
	setenv("ORDERS_VAULT_KEY", K3, 1);
	setenv("ORDERS_PREFETCH", "65535", 1);
	setenv("ORDERS_PUBLISH_TIMEOUT_MS", "10", 1);
	setenv("ORDERS_GATEWAY_LATENCY_MS", "60000", 1);
	setenv("ORDERS_RESERVATION_TTL_S", "604800", 1);
	setenv("ORDERS_FINALIZE_GRACE_S", "1", 1);
	setenv("ORDERS_CONSUMER_BATCH", "1000", 1);
	setenv("ORDERS_ORDER_ID_KEY",
	       "ABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCD", 1);
	setenv("ORDERS_ENV", "", 1); /* empty counts as unset */
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_OK);
	assert_string_equal(c.env, "development");
	assert_string_equal(c.log_level, "debug");
	assert_int_equal(c.http_port, 9090);
	assert_int_equal(c.http_threads, 64);
	assert_int_equal(c.http_connection_limit, 1);
	assert_int_equal(c.metrics_port, 9101);
	assert_string_equal(c.pg_dsn, "host=db user=orders");
	assert_string_equal(c.amqp_url, "amqp://u:p@mq:5672/%2F");
	assert_string_equal(c.redis_url, "redis://cache:6379/1");
	assert_string_equal(c.api_keys, "a:client");
	assert_int_equal(c.rate_limit, 0);
	assert_string_equal(c.vault_key, K3);
	assert_string_equal(c.order_id_key,
	                    "ABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCD");
	assert_int_equal(c.prefetch, 65535);
	assert_int_equal(c.publish_timeout_ms, 10);
	assert_int_equal(c.gateway_latency_ms, 60000);
	assert_int_equal(c.reservation_ttl_s, 604800);
	assert_int_equal(c.finalize_grace_s, 1);
	assert_int_equal(c.consumer_batch, 1000);
}

/* Load with one variable set; expect ERR_INVALID, cfg untouched, and the message. */
static void expect_invalid(const char *var, const char *value, const char *expect_msg)
{
	struct config c, before;
	char err[256] = "";

	clear_env(NULL);
	setenv(var, value, 1);
	memset(&c, 0xab, sizeof(c));
	before = c;
	if (config_load(&c, err, sizeof(err)) != ERR_INVALID)
		fail_msg("%s='%s' was accepted", var, value);
	assert_memory_equal(&c, &before, sizeof(c));
	if (strstr(err, var) != err)
		fail_msg("message does not start with the variable: %s", err);
	if (expect_msg)
		assert_string_equal(err, expect_msg);
	unsetenv(var);
}

static void test_invalid_ints(void **state)
{
	static const char *const bad[] = {"abc",
	                                  "80x",
	                                  " 80",
	                                  "80 ",
	                                  "+80",
	                                  "0x50",
	                                  "8.0",
	                                  "0",
	                                  "-1",
	                                  "65536",
	                                  "99999999999999999999",
	                                  "-"};
	size_t i;

	(void)state;
	expect_invalid("ORDERS_HTTP_PORT", "abc",
	               "ORDERS_HTTP_PORT must be an integer from 1 to 65535, got 'abc'");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_invalid("ORDERS_HTTP_PORT", bad[i], NULL);
	expect_invalid("ORDERS_HTTP_THREADS", "65",
	               "ORDERS_HTTP_THREADS must be an integer from 1 to 64, got '65'");
	expect_invalid("ORDERS_HTTP_CONNECTION_LIMIT", "100001", NULL);
	expect_invalid("ORDERS_METRICS_PORT", "-1", NULL);
	expect_invalid("ORDERS_PREFETCH", "0", NULL);
	expect_invalid("ORDERS_PUBLISH_TIMEOUT_MS", "9", NULL);
	expect_invalid("ORDERS_GATEWAY_LATENCY_MS", "60001", NULL);
	expect_invalid("ORDERS_CONSUMER_BATCH", "1001", NULL);
	expect_invalid("ORDERS_CONSUMER_BATCH", "-1", NULL);
	expect_invalid("ORDERS_RESERVATION_TTL_S", "604801", NULL);
	expect_invalid("ORDERS_RESERVATION_TTL_S", "4294967297", NULL); /* wraps in 32 bits */
	expect_invalid("ORDERS_FINALIZE_GRACE_S", "0", NULL);
	expect_invalid("ORDERS_FINALIZE_GRACE_S", "86401", NULL);
	expect_invalid("ORDERS_RATE_LIMIT", "-1", NULL);
	expect_invalid(
	    "ORDERS_RATE_LIMIT", "1000000001",
	    "ORDERS_RATE_LIMIT must be an integer from 0 to 1000000000, got '1000000001'");
}

static void test_invalid_strings(void **state)
{
	char longv[CONFIG_STR_MAX + 10];

	(void)state;
	expect_invalid("ORDERS_ENV", "staging",
	               "ORDERS_ENV must be development or production, got 'staging'");
	expect_invalid("ORDERS_ENV", "Production", NULL);
	expect_invalid("ORDERS_LOG_LEVEL", "verbose",
	               "ORDERS_LOG_LEVEL must be debug, info, warn or error, got 'verbose'");
	memset(longv, 'x', sizeof(longv) - 1);
	longv[sizeof(longv) - 1] = '\0';
	expect_invalid("ORDERS_PG_DSN", longv,
	               "ORDERS_PG_DSN is too long (at most 511 characters)");
	expect_invalid("ORDERS_AMQP_URL", longv, NULL);
	/* Exactly at the limit fits. */
	memcpy(longv, "dbname=", 7);
	longv[CONFIG_STR_MAX - 1] = '\0';
	setenv("ORDERS_PG_DSN", longv, 1);
	{
		struct config c;

		assert_int_equal(config_load(&c, NULL, 0), ERR_OK);
		assert_int_equal(strlen(c.pg_dsn), CONFIG_STR_MAX - 1);
	}
	unsetenv("ORDERS_PG_DSN");
	expect_invalid("ORDERS_TRUSTED_PROXIES", "10.0.0.0/33",
	               "ORDERS_TRUSTED_PROXIES has a CIDR prefix longer than its address, got "
	               "'10.0.0.0/33'");
	expect_invalid("ORDERS_TRUSTED_PROXIES", "10.0.0.1,nope", NULL);
	setenv("ORDERS_TRUSTED_PROXIES", "10.0.0.0/16, 192.0.2.7", 1);
	{
		struct config c;

		assert_int_equal(config_load(&c, NULL, 0), ERR_OK);
		assert_string_equal(c.trusted_proxies, "10.0.0.0/16, 192.0.2.7");
	}
	unsetenv("ORDERS_TRUSTED_PROXIES");
}

/* A DSN libpq cannot parse is refused at start, without a word of it: libpq's
 * own complaint would quote it, password and all. */
static void test_unparsable_dsn(void **state)
{
	static const char *const bad[] = {
	    "host=db password=se cret user=x",
	    "postgresql://u:pa%zzsecret@db/orders",
	    "host=db password='unterminated secret",
	};
	struct config c;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		setenv("ORDERS_PG_DSN", bad[i], 1);
		assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
		assert_string_equal(err, "ORDERS_PG_DSN does not parse as a PostgreSQL connection "
		                         "string (keyword=value pairs or a postgresql:// URI)");
	}
	setenv("ORDERS_PG_DSN", "host=db port=5432 dbname=orders user=x password = 'a b'", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_OK);
	unsetenv("ORDERS_PG_DSN");
}

static void test_invalid_keys(void **state)
{
	static const char *const vars[] = {"ORDERS_SEAL_PUBLIC_KEY", "ORDERS_SEAL_SECRET_KEY",
	                                   "ORDERS_VAULT_KEY", "ORDERS_FINGERPRINT_KEY",
	                                   "ORDERS_ORDER_ID_KEY"};
	static const char *const bad[] = {
	    "111111111111111111111111111111111111111111111111111111111111111",   /* 63 */
	    "11111111111111111111111111111111111111111111111111111111111111111", /* 65 */
	    "g111111111111111111111111111111111111111111111111111111111111111",
	    "secret-not-hex",
	};
	char err[256];
	struct config c;
	size_t i, j;

	(void)state;
	for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		for (j = 0; j < sizeof(bad) / sizeof(bad[0]); j++)
			expect_invalid(vars[i], bad[j], NULL);
	}
	/* The message never repeats a secret. */
	clear_env(NULL);
	setenv("ORDERS_VAULT_KEY", "secret-not-hex", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	assert_null(strstr(err, "secret-not-hex"));
	assert_string_equal(err, "ORDERS_VAULT_KEY must be 64 hex digits (32 bytes)");
	unsetenv("ORDERS_VAULT_KEY");
}

static void test_invalid_api_keys(void **state)
{
	static const char *const bad[] = {"nokey",       "a:superuser",        "a:client,",
	                                  ":client",     "a:client,,b:admin",  "a:client:x",
	                                  "a:Client",    "a:client, b:admin",  "a:client,a:admin",
	                                  "a:client:-5", "blake2b256.00:admin"};
	struct config c;
	char err[256], list[sizeof(c.api_keys)];
	size_t i, o = 0;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_invalid("ORDERS_API_KEYS", bad[i], NULL);
	setenv("ORDERS_API_KEYS", "s3cret-key:root", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	assert_null(strstr(err, "s3cret-key"));
	setenv("ORDERS_API_KEYS", "s3cret-key:client:lots", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	assert_null(strstr(err, "s3cret-key"));
	assert_string_equal(err, "ORDERS_API_KEYS must give a key's rate limit as a number from 0 "
	                         "to 1000000000");
	/* Thirty-two hashed keys with limits fit. */
	for (i = 0; i < 32; i++)
		o += (size_t)snprintf(list + o, sizeof(list) - o,
		                      "%sblake2b256.%064zx:finance:1000000000", i ? "," : "", i);
	setenv("ORDERS_API_KEYS", list, 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_OK);
	assert_string_equal(c.api_keys, list);
	unsetenv("ORDERS_API_KEYS");
}

static void test_production_refusal(void **state)
{
	static const char *const key_vars[] = {"ORDERS_SEAL_PUBLIC_KEY", "ORDERS_SEAL_SECRET_KEY",
	                                       "ORDERS_VAULT_KEY", "ORDERS_FINGERPRINT_KEY",
	                                       "ORDERS_ORDER_ID_KEY"};
	struct config dev, c;
	char err[256];
	size_t i;

	(void)state;
	assert_int_equal(config_load(&dev, NULL, 0), ERR_OK); /* the dev defaults */

	/* Production with every default: refused. */
	setenv("ORDERS_ENV", "production", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	assert_non_null(strstr(err, "ORDERS_API_KEYS"));

	/* All own keys: accepted. */
	set_prod_keys();
	err[0] = '\0';
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_OK);
	assert_true(config_is_production(&c));

	/* Any one dev API key among real ones: refused. */
	setenv("ORDERS_API_KEYS", "live-7f3a:client,dev-admin:admin", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	assert_string_equal(err, "ORDERS_API_KEYS must not contain the development key "
	                         "'dev-admin' when ORDERS_ENV is production");
	setenv("ORDERS_API_KEYS", "dev-client:finance", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	setenv("ORDERS_API_KEYS", "dev-finance:finance,live-1:client", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	/* A key that merely starts like a dev key is fine. */
	setenv("ORDERS_API_KEYS", "dev-client2:client,xdev-admin:admin", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_OK);
	/* A dev key written as its digest (printf %s dev-admin | b2sum -l 256),
	 * or with a limit, is still a dev key. */
	setenv("ORDERS_API_KEYS",
	       "live-7f3a:client,blake2b256."
	       "892abd1732822b0f6e1a9221ea325b58dc66a6f59e73f4d66d4cb06f9abc3406:admin",
	       1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	assert_string_equal(err, "ORDERS_API_KEYS must not contain the development key "
	                         "'dev-admin' when ORDERS_ENV is production");
	setenv("ORDERS_API_KEYS", "dev-client:client:5", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	/* So is the test stack's limited key. */
	setenv("ORDERS_API_KEYS", "live-7f3a:client,dev-limited:client:20", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	/* Every dev key, plain or as its digest (upper-case hex too), with any role. */
	{
		static const char *const dev_keys[] = {"dev-client", "dev-finance", "dev-admin",
		                                       "dev-limited"};
		char entry[160], want[160], hex[65];
		uint8_t h[32];

		for (i = 0; i < sizeof(dev_keys) / sizeof(dev_keys[0]); i++) {
			snprintf(want, sizeof(want),
			         "ORDERS_API_KEYS must not contain the development key '%s' when "
			         "ORDERS_ENV is production",
			         dev_keys[i]);
			snprintf(entry, sizeof(entry), "live-7f3a:client,%s:admin", dev_keys[i]);
			setenv("ORDERS_API_KEYS", entry, 1);
			assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
			assert_string_equal(err, want);
			crypto_generichash(h, sizeof(h), (const uint8_t *)dev_keys[i],
			                   strlen(dev_keys[i]), NULL, 0);
			sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
			snprintf(entry, sizeof(entry), "blake2b256.%s:finance,live-7f3a:client",
			         hex);
			setenv("ORDERS_API_KEYS", entry, 1);
			assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
			assert_string_equal(err, want);
			for (size_t k = 0; k < 64; k++)
				if (hex[k] >= 'a')
					hex[k] = (char)(hex[k] - 32);
			snprintf(entry, sizeof(entry), "blake2b256.%s:client:5", hex);
			setenv("ORDERS_API_KEYS", entry, 1);
			assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
			assert_string_equal(err, want);
		}
	}
	/* Production keys written as digests are what production should use. */
	setenv("ORDERS_API_KEYS",
	       "blake2b256.1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff001:client:"
	       "500",
	       1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_OK);

	/* Any crypto key left at its dev default: refused, naming it. */
	for (i = 0; i < sizeof(key_vars) / sizeof(key_vars[0]); i++) {
		const char *def = i == 0   ? dev.seal_public_key
		                  : i == 1 ? dev.seal_secret_key
		                  : i == 2 ? dev.vault_key
		                  : i == 3 ? dev.fingerprint_key
		                           : dev.order_id_key;
		char upper[65];
		size_t k;

		set_prod_keys();
		setenv(key_vars[i], def, 1);
		assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
		assert_non_null(strstr(err, key_vars[i]));
		assert_null(strstr(err, def));
		/* The same key in upper case is the same key. */
		for (k = 0; k < 64; k++)
			upper[k] = (char)(def[k] >= 'a' && def[k] <= 'f' ? def[k] - 32 : def[k]);
		upper[64] = '\0';
		setenv(key_vars[i], upper, 1);
		assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
		/* Unset means the default, so also refused. */
		unsetenv(key_vars[i]);
		assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	}

	/* Development does not care. */
	set_prod_keys();
	setenv("ORDERS_ENV", "development", 1);
	setenv("ORDERS_API_KEYS", "dev-admin:admin", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_OK);
	assert_false(config_is_production(&c));
}

/* Each daemon is refused only for the secrets it uses. */
static void test_production_needs(void **state)
{
	struct config c;
	char err[256];

	(void)state;
	setenv("ORDERS_ENV", "production", 1);
	/* Nothing of its own set: a daemon that uses no secret still starts. */
	assert_int_equal(config_load_for(&c, 0, err, sizeof(err)), ERR_OK);
	/* payment-consumer's keys set, the API's not: payment starts, the API does not. */
	setenv("ORDERS_SEAL_SECRET_KEY",
	       "1111111111111111111111111111111111111111111111111111111111111111", 1);
	setenv("ORDERS_VAULT_KEY",
	       "2222222222222222222222222222222222222222222222222222222222222222", 1);
	setenv("ORDERS_FINGERPRINT_KEY",
	       "3333333333333333333333333333333333333333333333333333333333333333", 1);
	assert_int_equal(
	    config_load_for(&c,
	                    CONFIG_NEED_SEAL_SECRET | CONFIG_NEED_VAULT | CONFIG_NEED_FINGERPRINT,
	                    err, sizeof(err)),
	    ERR_OK);
	assert_int_equal(config_load_for(&c, CONFIG_NEED_ORDER_ID, err, sizeof(err)), ERR_INVALID);
	assert_non_null(strstr(err, "ORDERS_ORDER_ID_KEY"));
	assert_int_equal(config_load_for(&c, CONFIG_NEED_API_KEYS, err, sizeof(err)), ERR_INVALID);
	assert_non_null(strstr(err, "ORDERS_API_KEYS"));
	/* One of payment's own keys at its default: refused, naming it. */
	unsetenv("ORDERS_VAULT_KEY");
	assert_int_equal(
	    config_load_for(&c,
	                    CONFIG_NEED_SEAL_SECRET | CONFIG_NEED_VAULT | CONFIG_NEED_FINGERPRINT,
	                    err, sizeof(err)),
	    ERR_INVALID);
	assert_non_null(strstr(err, "ORDERS_VAULT_KEY"));
}

static void test_error_buffer_bounds(void **state)
{
	struct config c;
	char err[8];

	(void)state;
	setenv("ORDERS_HTTP_PORT", "abc", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	assert_string_equal(err, "ORDERS_");
	assert_int_equal(config_load(&c, NULL, 0), ERR_INVALID);
	unsetenv("ORDERS_HTTP_PORT");
}

/* config_log() with stdout sent into a pipe; returns the parsed line. */
static json_t *log_config(const struct config *c, char *raw, size_t size)
{
	int p[2], saved;
	ssize_t r;
	size_t n = 0;
	json_t *j;

	fflush(stdout);
	assert_int_equal(pipe(p), 0);
	saved = dup(STDOUT_FILENO);
	assert_true(dup2(p[1], STDOUT_FILENO) >= 0);
	config_log(c);
	assert_true(dup2(saved, STDOUT_FILENO) >= 0);
	close(saved);
	close(p[1]);
	while (n + 1 < size && (r = read(p[0], raw + n, size - 1 - n)) > 0)
		n += (size_t)r;
	raw[n] = '\0';
	close(p[0]);
	assert_true(n > 0);
	assert_int_equal(raw[n - 1], '\n');
	assert_ptr_equal(strchr(raw, '\n'), raw + n - 1); /* one line */
	j = json_loads(raw, 0, NULL);
	assert_non_null(j);
	return j;
}

static const char *str_of(json_t *j, const char *key)
{
	json_t *v = json_object_get(j, key);

	if (!json_is_string(v))
		fail_msg("%s is not a string", key);
	return json_string_value(v);
}

static void test_log_masks_secrets(void **state)
{
	static const char *const secrets[] = {
	    "s3cr3t-pg", "s3cr3t-amqp", "s3cr3t-redis", "live-7f3a", "live-91bc", K2, K3, K4, K5};
	struct config c;
	char raw[16384];
	json_t *j;
	size_t i;

	(void)state;
	set_prod_keys();
	setenv("ORDERS_PG_DSN", "postgresql://orders:s3cr3t-pg@db:5432/orders?sslmode=require", 1);
	setenv("ORDERS_AMQP_URL", "amqps://svc:s3cr3t-amqp@mq.internal:5671/%2F", 1);
	setenv("ORDERS_REDIS_URL", "redis://:s3cr3t-redis@cache:6379/0", 1);
	setenv("ORDERS_HTTP_PORT", "8081", 1);
	assert_int_equal(config_load(&c, NULL, 0), ERR_OK);
	log_init("orders-api", LOG_INFO);
	j = log_config(&c, raw, sizeof(raw));
	for (i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
		if (strstr(raw, secrets[i]))
			fail_msg("secret %s in the log line", secrets[i]);
	}
	assert_string_equal(str_of(j, "msg"), "configuration");
	assert_string_equal(str_of(j, "ORDERS_ENV"), "production");
	assert_string_equal(str_of(j, "ORDERS_PG_DSN"),
	                    "postgresql://orders:***@db:5432/orders?sslmode=require");
	assert_string_equal(str_of(j, "ORDERS_AMQP_URL"), "amqps://svc:***@mq.internal:5671/%2F");
	assert_string_equal(str_of(j, "ORDERS_REDIS_URL"), "redis://:***@cache:6379/0");
	assert_string_equal(str_of(j, "ORDERS_API_KEYS"), "***");
	assert_string_equal(str_of(j, "ORDERS_SEAL_SECRET_KEY"), "***");
	assert_string_equal(str_of(j, "ORDERS_VAULT_KEY"), "***");
	assert_string_equal(str_of(j, "ORDERS_FINGERPRINT_KEY"), "***");
	assert_string_equal(str_of(j, "ORDERS_ORDER_ID_KEY"), "***");
	/* The public key is not a secret and helps to tell deployments apart. */
	assert_string_equal(str_of(j, "ORDERS_SEAL_PUBLIC_KEY"), K1);
	assert_int_equal(json_integer_value(json_object_get(j, "ORDERS_HTTP_PORT")), 8081);
	assert_int_equal(json_integer_value(json_object_get(j, "ORDERS_RESERVATION_TTL_S")), 900);
	assert_int_equal(json_integer_value(json_object_get(j, "ORDERS_FINALIZE_GRACE_S")), 60);
	/* Every setting is there. */
	for (i = 0; i < NVARS; i++)
		assert_non_null(json_object_get(j, all_vars[i]));
	assert_null(json_object_get(j, "truncated"));
	json_decref(j);
}

/* One DSN through config_log; returns the masked form. */
static void expect_masked(const char *dsn, const char *secret, const char *expect)
{
	struct config c;
	char raw[16384];
	json_t *j;

	clear_env(NULL);
	setenv("ORDERS_PG_DSN", dsn, 1);
	assert_int_equal(config_load(&c, NULL, 0), ERR_OK);
	j = log_config(&c, raw, sizeof(raw));
	if (secret && strstr(raw, secret))
		fail_msg("'%s' leaks from '%s'", secret, dsn);
	assert_string_equal(str_of(j, "ORDERS_PG_DSN"), expect);
	json_decref(j);
}

static void test_dsn_masking_forms(void **state)
{
	(void)state;
	expect_masked("postgresql://orders@127.0.0.1:5442/orders", NULL,
	              "postgresql://orders@127.0.0.1:5442/orders");
	expect_masked("host=db user=orders password=pw1 dbname=orders", "pw1",
	              "host=db user=orders password=*** dbname=orders");
	expect_masked("password=pw2 host=db", "pw2", "password=*** host=db");
	expect_masked("host=db password='p w\\'3' user=x", "p w", "host=db password=*** user=x");
	expect_masked("postgresql://db/orders?user=x&password=pw4&sslmode=require", "pw4",
	              "postgresql://db/orders?user=x&password=***&sslmode=require");
	/* libpq allows spaces around '=', and has an sslpassword too. */
	expect_masked("host=db password = pw7 user=x", "pw7", "host=db password = *** user=x");
	expect_masked("host=db password ='p w8'", "p w8", "host=db password =***");
	expect_masked("host=db sslpassword=pw9 password=pw10", "pw",
	              "host=db sslpassword=*** password=***");
	/* Not a parameter: left as it is. */
	expect_masked("host=db user=password dbname=orders", NULL,
	              "host=db user=password dbname=orders");
	/* Unescaped '/' and '@' in a password are masked whole. */
	expect_masked("postgresql://u:pa/s@s5@db/orders", "pa/s", "postgresql://u:***@db/orders");
	expect_masked("postgresql://u:p:w6@db:5432/orders", "p:w6",
	              "postgresql://u:***@db:5432/orders");
	/* libpq takes spaces around a keyword's '=' (found by fuzz/config). */
	expect_masked("host=db password = pw7 user=x", "pw7", "host=db password = *** user=x");
	expect_masked("host=db\tpassword=\tpw8", "pw8", "host=db\tpassword=\t***");
	/* A keyword's value ends at a space, not at '&'. */
	expect_masked("password=pw9&more host=db", "pw9&more", "password=*** host=db");
}

/* ORDERS_AMQP_URL: a list of URLs loads as it is and is masked entry by entry. */
static void test_amqp_url_lists(void **state)
{
	static const char *const bad[] = {
	    "amqp://u:p@a:1/,",           /* an empty entry */
	    "amqp://u:p@a:1/,,amqp://b/", /* another */
	    "amqp://u:pa,ss@a:1/",        /* a comma in a password */
	    "amqp://a:1/ amqp://b:2/",    /* not a comma */
	    "amqp://a:1/, amqp://b:2/",   /* a space */
	    "http://a:1/,amqp://b:2/",    /* another scheme */
	};
	const char *list = "amqp://u:pw-one@a:5672/,amqp://b:5673/%2F,amqps://v:pw-two@c:5671/";
	char many[CONFIG_STR_MAX], err[256], raw[16384];
	struct config c;
	json_t *j;
	size_t i, o = 0;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_invalid("ORDERS_AMQP_URL", bad[i], NULL);
	/* The message never repeats the value: it may hold a password. */
	setenv("ORDERS_AMQP_URL", "amqp://u:pa,ss@a:1/", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	assert_null(strstr(err, "ss@a"));
	assert_string_equal(err, "ORDERS_AMQP_URL must be an amqp:// URL, or several separated by "
	                         "commas (write a comma inside one as %2C)");
	for (i = 0; i < 17; i++)
		o +=
		    (size_t)snprintf(many + o, sizeof(many) - o, "%samqp://h%zu/", i ? "," : "", i);
	expect_invalid("ORDERS_AMQP_URL", many, "ORDERS_AMQP_URL names more than 16 URLs");

	clear_env(NULL);
	setenv("ORDERS_AMQP_URL", list, 1);
	assert_int_equal(config_load(&c, NULL, 0), ERR_OK);
	assert_string_equal(c.amqp_url, list);
	j = log_config(&c, raw, sizeof(raw));
	assert_null(strstr(raw, "pw-one"));
	assert_null(strstr(raw, "pw-two"));
	assert_string_equal(str_of(j, "ORDERS_AMQP_URL"),
	                    "amqp://u:***@a:5672/,amqp://b:5673/%2F,amqps://v:***@c:5671/");
	json_decref(j);
}

/* DSNs as production writes them: TLS parameters pass through, secrets do not. */
static void test_dsn_masking_tls(void **state)
{
	(void)state;
	expect_masked("postgresql://app:pw7@db.rds.amazonaws.com:5432/orders?sslmode=verify-full"
	              "&sslrootcert=/etc/ssl/rds-global-bundle.pem",
	              "pw7",
	              "postgresql://app:***@db.rds.amazonaws.com:5432/orders?sslmode=verify-full"
	              "&sslrootcert=/etc/ssl/rds-global-bundle.pem");
	expect_masked("host=db port=5432 user=app password=pw8 dbname=orders sslmode=verify-full "
	              "sslrootcert=/etc/ssl/rds.pem",
	              "pw8",
	              "host=db port=5432 user=app password=*** dbname=orders sslmode=verify-full "
	              "sslrootcert=/etc/ssl/rds.pem");
	/* libpq reads a backslash in a plain value as an escape: "p w10" is one value. */
	expect_masked("host=db\tpassword=p\\ w10\tsslmode=require", "w10",
	              "host=db\tpassword=***\tsslmode=require");
	/* The passphrase of a client key is as secret as a password. */
	expect_masked("host=db sslcert=/c.pem sslkey=/k.pem sslpassword='p p12' user=x", "p12",
	              "host=db sslcert=/c.pem sslkey=/k.pem sslpassword=*** user=x");
	expect_masked("postgresql://db/orders?sslmode=verify-ca&sslpassword=pp13&sslkey=/k.pem",
	              "pp13",
	              "postgresql://db/orders?sslmode=verify-ca&sslpassword=***&sslkey=/k.pem");
	/* A "://" inside a value does not make a keyword DSN a URL, whose values end at '&'. */
	expect_masked("options='-c x=a://b' password=pw14&x14", "x14",
	              "options='-c x=a://b' password=***");
	/* In a URI's query libpq ends a value at '&' only: spaces, '#' and quotes are in it. */
	expect_masked("postgresql://db/orders?password=pw 15#x15&sslmode=require", "x15",
	              "postgresql://db/orders?password=***&sslmode=require");
	expect_masked("postgresql://db/orders?sslpassword='p'pp16&sslmode=require", "pp16",
	              "postgresql://db/orders?sslpassword=***&sslmode=require");
}

/*
 * ORDERS_REDIS_URL: every form lib/cache takes loads, with its password
 * masked in the configuration line however it is written; a URL lib/cache
 * would refuse is refused at start, with its reason and without a word of it.
 */
static void test_redis_urls(void **state)
{
	static const struct {
		const char *url, *secret, *masked;
	} good[] = {
	    {"redis://cache:6379/1", NULL, "redis://cache:6379/1"},
	    {"redis://:rpw1@cache:6379/0", "rpw1", "redis://:***@cache:6379/0"},
	    {"rediss://:rpw2@master.x.cache.amazonaws.com:6379/0", "rpw2",
	     "rediss://:***@master.x.cache.amazonaws.com:6379/0"},
	    {"rediss://app:rpw3@cache/2", "rpw3", "rediss://app:***@cache/2"},
	    {"rediss://app:r%40p%2Fw%3A4@cache:6380", "w%3A4", "rediss://app:***@cache:6380"},
	    {"redis://:r:pw5@[::1]:6379/0", "pw5", "redis://:***@[::1]:6379/0"},
	};
	static const struct {
		const char *url, *err;
	} bad[] = {
	    {"redis://rpw6@cache:6379/0",
	     "ORDERS_REDIS_URL has user info without a ':' (write redis://[user]:password@host)"},
	    {"redis://:rpw7%zz@cache/0",
	     "ORDERS_REDIS_URL has a '%' that is not followed by two hex digits"},
	    {"redis://:rp#w8@cache/0", "ORDERS_REDIS_URL has a character in its user or password "
	                               "that must be percent-encoded (%XX)"},
	    {"http://:rpw9@cache/0", "ORDERS_REDIS_URL must start with redis:// or rediss://"},
	    {"rediss://:rpw10@cache:0/0",
	     "ORDERS_REDIS_URL has a port that is not a number from 1 to 65535"},
	};
	struct config c;
	char err[256], raw[16384];
	json_t *j;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		clear_env(NULL);
		setenv("ORDERS_REDIS_URL", good[i].url, 1);
		assert_int_equal(config_load(&c, err, sizeof(err)), ERR_OK);
		assert_string_equal(c.redis_url, good[i].url);
		j = log_config(&c, raw, sizeof(raw));
		if (good[i].secret && strstr(raw, good[i].secret))
			fail_msg("'%s' leaks from '%s'", good[i].secret, good[i].url);
		assert_string_equal(str_of(j, "ORDERS_REDIS_URL"), good[i].masked);
		json_decref(j);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		clear_env(NULL);
		setenv("ORDERS_REDIS_URL", bad[i].url, 1);
		assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
		assert_string_equal(err, bad[i].err);
		assert_null(strstr(err, "rpw"));
	}
	clear_env(NULL);
	setenv("ORDERS_REDIS_CA_FILE", "/etc/orders/tls/redis-ca.pem", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_OK);
	assert_string_equal(c.redis_ca_file, "/etc/orders/tls/redis-ca.pem");
}

static void test_tls_pairs(void **state)
{
	struct config c;
	char err[256] = "";

	(void)state;
	setenv("ORDERS_TLS_CERT_FILE", "/etc/orders/tls/api.crt", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	assert_string_equal(err, "ORDERS_TLS_KEY_FILE must be set together with "
	                         "ORDERS_TLS_CERT_FILE (HTTPS needs both)");
	unsetenv("ORDERS_TLS_CERT_FILE");
	setenv("ORDERS_TLS_KEY_FILE", "/etc/orders/tls/api.key", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	assert_string_equal(err, "ORDERS_TLS_CERT_FILE must be set together with "
	                         "ORDERS_TLS_KEY_FILE (HTTPS needs both)");
	setenv("ORDERS_TLS_CERT_FILE", "/etc/orders/tls/api.crt", 1);
	setenv("ORDERS_AMQP_KEY_FILE", "/etc/orders/tls/mq.key", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_INVALID);
	assert_string_equal(err, "ORDERS_AMQP_CERT_FILE must be set together with "
	                         "ORDERS_AMQP_KEY_FILE (a RabbitMQ client certificate needs both)");
	setenv("ORDERS_AMQP_CERT_FILE", "/etc/orders/tls/mq.crt", 1);
	setenv("ORDERS_AMQP_CA_FILE", "/etc/orders/tls/ca.pem", 1);
	assert_int_equal(config_load(&c, err, sizeof(err)), ERR_OK);
	assert_string_equal(c.tls_cert_file, "/etc/orders/tls/api.crt");
	assert_string_equal(c.tls_key_file, "/etc/orders/tls/api.key");
	assert_string_equal(c.amqp_ca_file, "/etc/orders/tls/ca.pem");
	assert_string_equal(c.amqp_cert_file, "/etc/orders/tls/mq.crt");
	assert_string_equal(c.amqp_key_file, "/etc/orders/tls/mq.key");
}

static void test_config_log_respects_level(void **state)
{
	struct config c;
	char raw[64];
	int p[2], saved;
	ssize_t r;

	(void)state;
	assert_int_equal(config_load(&c, NULL, 0), ERR_OK);
	log_init("orders-api", LOG_ERROR);
	fflush(stdout);
	assert_int_equal(pipe(p), 0);
	saved = dup(STDOUT_FILENO);
	assert_true(dup2(p[1], STDOUT_FILENO) >= 0);
	config_log(&c);
	assert_true(dup2(saved, STDOUT_FILENO) >= 0);
	close(saved);
	close(p[1]);
	r = read(p[0], raw, sizeof(raw));
	close(p[0]);
	assert_int_equal(r, 0);
	log_init("orders-api", LOG_INFO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_defaults, clear_env),
	    cmocka_unit_test_setup(test_dev_seal_keys_are_a_pair, clear_env),
	    cmocka_unit_test_setup(test_overrides, clear_env),
	    cmocka_unit_test_setup(test_invalid_ints, clear_env),
	    cmocka_unit_test_setup(test_invalid_strings, clear_env),
	    cmocka_unit_test_setup(test_unparsable_dsn, clear_env),
	    cmocka_unit_test_setup(test_invalid_keys, clear_env),
	    cmocka_unit_test_setup(test_invalid_api_keys, clear_env),
	    cmocka_unit_test_setup(test_production_refusal, clear_env),
	    cmocka_unit_test_setup(test_production_needs, clear_env),
	    cmocka_unit_test_setup(test_error_buffer_bounds, clear_env),
	    cmocka_unit_test_setup(test_log_masks_secrets, clear_env),
	    cmocka_unit_test_setup(test_dsn_masking_forms, clear_env),
	    cmocka_unit_test_setup(test_amqp_url_lists, clear_env),
	    cmocka_unit_test_setup(test_dsn_masking_tls, clear_env),
	    cmocka_unit_test_setup(test_redis_urls, clear_env),
	    cmocka_unit_test_setup(test_tls_pairs, clear_env),
	    cmocka_unit_test_setup(test_config_log_respects_level, clear_env),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
