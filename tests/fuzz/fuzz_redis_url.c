/* fuzz_redis_url.c: libFuzzer target for ORDERS_REDIS_URL as lib/cache takes it apart. */
#include "cache.h"
#include "fuzz.h"

FUZZ_QUIET_INITIALIZE

/* s percent-encoded whole (every byte as %XX), so that it parses back as it is. */
static void encode(const char *s, char *out)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		*out++ = '%';
		*out++ = hex[(unsigned char)*s >> 4];
		*out++ = hex[(unsigned char)*s & 15];
	}
	*out = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_cstr(data, size);
	char user[3 * CACHE_USER_MAX + 1], pw[3 * CACHE_PASSWORD_MAX + 1];
	char again[3 * (CACHE_USER_MAX + CACHE_PASSWORD_MAX) + CACHE_HOST_MAX + 64];
	struct cache_url u, v;
	const char *why = NULL;
	int rc = cache_url_parse(text, &u, &why);

	if (rc != ERR_OK) {
		/* A reason, never the input (the reasons are fixed sentences). */
		FUZZ_CHECK(rc == ERR_INVALID && why && strlen(why) > 10);
		free(text);
		return 0;
	}
	FUZZ_CHECK(u.tls == (strncmp(text, "rediss://", 9) == 0));
	FUZZ_CHECK(u.port >= 1 && u.port <= 65535 && u.db >= 0 && u.db <= 65535);
	FUZZ_CHECK(u.host[0] && strlen(u.host) < CACHE_HOST_MAX);
	FUZZ_CHECK(strlen(u.user) <= CACHE_USER_MAX && strlen(u.password) <= CACHE_PASSWORD_MAX);
	/* A user is only ever given with its password. */
	FUZZ_CHECK(!u.user[0] || u.password[0]);
	/* Written out again, with user and password encoded, it parses to the same. */
	encode(u.user, user);
	encode(u.password, pw);
	snprintf(again, sizeof(again), "%s://%s%s%s%s%s%s%s:%d/%d", u.tls ? "rediss" : "redis",
	         user, u.password[0] ? ":" : "", pw, u.password[0] ? "@" : "",
	         strchr(u.host, ':') ? "[" : "", u.host, strchr(u.host, ':') ? "]" : "", u.port,
	         u.db);
	FUZZ_CHECK(cache_url_parse(again, &v, &why) == ERR_OK);
	FUZZ_CHECK(strcmp(u.host, v.host) == 0 && u.port == v.port && u.db == v.db &&
	           u.tls == v.tls && strcmp(u.user, v.user) == 0 &&
	           strcmp(u.password, v.password) == 0);
	free(text);
	return 0;
}
