/*
 * fuzz_http.c: the headers and the path the API parses before any handler.
 * The input is NUL-separated fields: an Idempotency-Key, an X-Request-Id,
 * an Authorization header (looked up among the development keys), a
 * Content-Type, and a URL path that goes through unescape_url() and
 * path_param() for each route with a parameter, whose value then goes
 * through the route's check (valid_sku(), ids_uuid_valid()).
 */
#include <strings.h>

#include "apikey.h"
#include "fuzz.h"
#include "ids.h"
#include "parse.h"

static struct apikey keys[APIKEY_MAX];
static size_t nkeys;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *what;

	(void)argc;
	(void)argv;
	fuzz_quiet_logs();
	FUZZ_CHECK(apikey_parse("dev-client:client,dev-finance:finance,dev-admin:admin,"
	                        "dev-limited:client:20",
	                        keys, APIKEY_MAX, &nkeys, &what) == ERR_OK);
	return 0;
}

static int printable(const char *s)
{
	for (; *s; s++)
		if (*s < ' ' || *s > '~')
			return 0;
	return 1;
}

static void check_auth(const char *header)
{
	const char *token = bearer_token(header);
	const struct apikey *k;
	uint8_t h[APIKEY_HASH_BYTES];

	if (!token)
		return;
	FUZZ_CHECK(token >= header + 7 && token <= header + strlen(header));
	FUZZ_CHECK(strncasecmp(header, "Bearer ", 7) == 0 && *token != ' ');
	k = apikey_find(keys, nkeys, token, strlen(token));
	if (k) {
		FUZZ_CHECK(k >= keys && k < keys + nkeys);
		apikey_hash(token, strlen(token), h);
		FUZZ_CHECK(memcmp(h, k->hash, sizeof(h)) == 0);
	}
}

static void check_path(const char *path)
{
	static const char *const prefixes[] = {"/v1/products/", "/v1/carts/", "/v1/orders/"};
	size_t n = strlen(path), slashes = 0, after = 0, len;
	char *url = fuzz_cstr((const uint8_t *)path, n);

	for (size_t i = 0; i < n; i++)
		slashes += path[i] == '/';
	len = unescape_url(NULL, NULL, url);
	/* Decoding only shortens, never makes a NUL or a slash. */
	FUZZ_CHECK(len == strlen(url) && len <= n);
	for (size_t i = 0; i < len; i++)
		after += url[i] == '/';
	FUZZ_CHECK(after == slashes);
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		const char *p = path_param(url, prefixes[i]);

		if (!p)
			continue;
		FUZZ_CHECK(p == url + strlen(prefixes[i]) && *p && !strchr(p, '/'));
		if (valid_sku(p))
			FUZZ_CHECK(strlen(p) <= 64 &&
			           strspn(p,
			                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
			                  "abcdefghijklmnopqrstuvwxyz0123456789._-") == strlen(p));
		if (ids_uuid_valid(p))
			FUZZ_CHECK(strlen(p) == IDS_UUID_LEN &&
			           strspn(p, "0123456789abcdef-") == IDS_UUID_LEN);
	}
	free(url);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_fields ff;
	const char *ct;

	fuzz_fields_split(&ff, data, size, 5);
	if (ff.f[0] && valid_idempotency_key(ff.f[0]))
		FUZZ_CHECK(strlen(ff.f[0]) >= 1 && strlen(ff.f[0]) <= 255 && printable(ff.f[0]));
	/* An echoed request id goes into a header: never a control character
	 * (CR, LF) nor a byte past ASCII. */
	if (ff.f[1] && valid_request_id(ff.f[1]))
		FUZZ_CHECK(strlen(ff.f[1]) >= 1 && strlen(ff.f[1]) <= API_REQUEST_ID_MAX &&
		           printable(ff.f[1]));
	if (ff.f[2])
		check_auth(ff.f[2]);
	ct = ff.f[3];
	if (ct && is_json_type(ct))
		FUZZ_CHECK(
		    strncasecmp(ct, "application/json", 16) == 0 &&
		    (!ct[16 + strspn(ct + 16, " \t")] || ct[16 + strspn(ct + 16, " \t")] == ';'));
	if (ff.f[4])
		check_path(ff.f[4]);
	free(ff.buf);
	return 0;
}
