/* test_cache.c: ORDERS_REDIS_URL as lib/cache takes it apart, and its TLS settings (no network). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "err.h"

static struct cache_url parse_ok(const char *url)
{
	struct cache_url u;
	const char *why = NULL;

	if (cache_url_parse(url, &u, &why) != ERR_OK)
		fail_msg("'%s' refused: %s", url, why);
	return u;
}

static void test_plain_forms(void **state)
{
	struct cache_url u;

	(void)state;
	u = parse_ok("redis://cache:6380/3");
	assert_string_equal(u.host, "cache");
	assert_int_equal(u.port, 6380);
	assert_int_equal(u.db, 3);
	assert_int_equal(u.tls, 0);
	assert_string_equal(u.user, "");
	assert_string_equal(u.password, "");
	/* Defaults: 127.0.0.1, 6379, db 0. */
	u = parse_ok("redis://");
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(u.port, 6379);
	assert_int_equal(u.db, 0);
	u = parse_ok("redis://cache/");
	assert_int_equal(u.port, 6379);
	assert_int_equal(u.db, 0);
	u = parse_ok("redis://[::1]:7000/65535");
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 7000);
	assert_int_equal(u.db, 65535);
	u = parse_ok("redis://10.0.0.7:1");
	assert_string_equal(u.host, "10.0.0.7");
	assert_int_equal(u.port, 1);
}

static void test_tls_and_auth(void **state)
{
	struct cache_url u;

	(void)state;
	u = parse_ok("rediss://:tok3n@master.orders.abc123.use1.cache.amazonaws.com:6379/0");
	assert_int_equal(u.tls, 1);
	assert_string_equal(u.host, "master.orders.abc123.use1.cache.amazonaws.com");
	assert_string_equal(u.user, "");
	assert_string_equal(u.password, "tok3n");
	/* Redis 6 ACL: a user and its password. */
	u = parse_ok("rediss://orders-app:pw@cache/1");
	assert_string_equal(u.user, "orders-app");
	assert_string_equal(u.password, "pw");
	assert_int_equal(u.db, 1);
	/* A ':' in the password is the password's; sub-delims may stand unencoded. */
	u = parse_ok("redis://u:a:b!$&'()*+,;=~@h");
	assert_string_equal(u.user, "u");
	assert_string_equal(u.password, "a:b!$&'()*+,;=~");
	/* Percent-decoding, upper and lower case: '@', '/', ':', '%', ' ', '#', a byte > 127. */
	u = parse_ok("redis://us%3Aer:p%40s%2fs%25%20%23%C3%a9@h:1/0");
	assert_string_equal(u.user, "us:er");
	assert_string_equal(u.password, "p@s/s% #\xc3\xa9");
}

static void test_limits(void **state)
{
	char url[1024], user[CACHE_USER_MAX + 2], pw[CACHE_PASSWORD_MAX + 2];
	char host[CACHE_HOST_MAX + 1];
	struct cache_url u;
	const char *why;

	(void)state;
	memset(user, 'u', sizeof(user) - 1);
	memset(pw, 'p', sizeof(pw) - 1);
	memset(host, 'h', sizeof(host) - 1);
	/* Exactly at the limits. */
	user[CACHE_USER_MAX] = '\0';
	pw[CACHE_PASSWORD_MAX] = '\0';
	host[CACHE_HOST_MAX - 1] = '\0';
	snprintf(url, sizeof(url), "rediss://%s:%s@%s:6379/0", user, pw, host);
	u = parse_ok(url);
	assert_int_equal(strlen(u.user), CACHE_USER_MAX);
	assert_int_equal(strlen(u.password), CACHE_PASSWORD_MAX);
	assert_int_equal(strlen(u.host), CACHE_HOST_MAX - 1);
	/* The limits count decoded bytes: %41 is one. */
	snprintf(url, sizeof(url), "redis://:%%41%s@h", pw + 1);
	u = parse_ok(url);
	assert_int_equal(u.password[0], 'A');
	/* One over each. */
	user[CACHE_USER_MAX] = 'u';
	user[CACHE_USER_MAX + 1] = '\0';
	snprintf(url, sizeof(url), "redis://%s:pw@h", user);
	assert_int_equal(cache_url_parse(url, &u, &why), ERR_INVALID);
	assert_string_equal(why, "has a user longer than 128 bytes");
	pw[CACHE_PASSWORD_MAX] = 'p';
	pw[CACHE_PASSWORD_MAX + 1] = '\0';
	snprintf(url, sizeof(url), "redis://:%s@h", pw);
	assert_int_equal(cache_url_parse(url, &u, &why), ERR_INVALID);
	assert_string_equal(why, "has a password longer than 256 bytes");
	host[CACHE_HOST_MAX - 1] = 'h';
	host[CACHE_HOST_MAX] = '\0';
	snprintf(url, sizeof(url), "redis://%s/0", host);
	assert_int_equal(cache_url_parse(url, &u, &why), ERR_INVALID);
	assert_string_equal(why, "has a host name longer than 255 characters");
}

static void test_bad_forms(void **state)
{
	static const char *const bad[] = {
	    "",
	    "http://h:6379/0",
	    "REDIS://h",
	    "redis:/h",
	    "rediss:h",
	    "redis://h:0",
	    "redis://h:65536",
	    "redis://h:-1",
	    "redis://h:port",
	    "redis://h:",
	    "redis://h:6379/x",
	    "redis://h:6379/65536",
	    "redis://h:6379/-1",
	    "redis://h:6379/0/1",
	    "redis://h:6379/0?timeout=1",
	    "redis://h:6379/0#x",
	    "redis://h h:6379",
	    "redis://[::1/0",
	    "redis://[]/0",
	    "redis://user@h",        /* no ':' : a user alone */
	    "redis://:@h",           /* an empty password */
	    "redis://u:@h",          /* the same with a user */
	    "redis://@h",            /* empty user info */
	    "redis://:p%@h",         /* '%' without digits */
	    "redis://:p%4@h",        /* one digit */
	    "redis://:p%4g@h",       /* not hex */
	    "redis://:p%00w@h",      /* a NUL byte */
	    "redis://:p w@h",        /* a space */
	    "redis://:p#w@h",        /* a fragment's '#' */
	    "redis://:p?w@h",        /* a query's '?' */
	    "redis://:p\"w@h",       /* a quote */
	    "redis://:p\xc3\xa9w@h", /* not ASCII: encode it */
	    "redis://:p@w@h",        /* the second '@' belongs to the host part */
	    "redis://u:p@h@i",
	    "redis://u%3:p@h",
	};
	struct cache_url u;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = NULL;

		memset(&u, 0x5a, sizeof(u));
		if (cache_url_parse(bad[i], &u, &why) != ERR_INVALID)
			fail_msg("'%s' was taken", bad[i]);
		assert_non_null(why);
		assert_true(strlen(why) > 10);
		/* The reason never quotes the URL. */
		if (bad[i][0])
			assert_null(strstr(why, bad[i]));
		/* Nothing is written on failure. */
		assert_int_equal((unsigned char)u.host[0], 0x5a);
	}
	assert_int_equal(cache_url_parse(NULL, &u, NULL), ERR_INVALID);
}

/* A bad URL gives no connection, nor a pool; a good one both, connected or not. */
static void test_constructors(void **state)
{
	struct cache_pool *p;
	struct cache *c;

	(void)state;
	assert_null(cache_new("redis://:p%zz@127.0.0.1:1/0"));
	assert_null(cache_pool_new("rediss://u@127.0.0.1:1/0", 2));
	/* Port 1: nothing listens, so the first connection fails at once (and is retried). */
	c = cache_new("redis://:pw@127.0.0.1:1/0");
	assert_non_null(c);
	assert_int_equal(cache_ping(c), ERR_UNAVAILABLE);
	cache_free(c);
	p = cache_pool_new("rediss://u:pw@127.0.0.1:1/0", 2);
	assert_non_null(p);
	cache_pool_free(p);
}

/* The CA file is checked when it is configured; unset means the system's trust store. */
static void test_tls_configure(void **state)
{
	char reason[256] = "", path[] = "/tmp/test_cache.XXXXXX";
	int fd;

	(void)state;
	assert_int_equal(cache_tls_configure(NULL, reason, sizeof(reason)), ERR_OK);
	assert_int_equal(cache_tls_configure("", reason, sizeof(reason)), ERR_OK);
	assert_int_equal(cache_tls_configure("/nonexistent/ca.pem", reason, sizeof(reason)),
	                 ERR_INVALID);
	assert_non_null(strstr(reason, "cannot read '/nonexistent/ca.pem'"));
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "not a certificate\n", 18), 18);
	close(fd);
	assert_int_equal(cache_tls_configure(path, reason, sizeof(reason)), ERR_INVALID);
	assert_non_null(strstr(reason, path));
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_forms),  cmocka_unit_test(test_tls_and_auth),
	    cmocka_unit_test(test_limits),       cmocka_unit_test(test_bad_forms),
	    cmocka_unit_test(test_constructors), cmocka_unit_test(test_tls_configure),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
