/* apikey.c: parsing ORDERS_API_KEYS into hashed keys, and finding a bearer token's key. */
#include "apikey.h"

#include <string.h>

#include <sodium.h>

#include "err.h"
#include "strnum.h"

static const char *const what_syntax =
    "must be a comma-separated list of key:role[:limit] with role client, finance or admin";

static int parse_role(const char *s, size_t n, enum role *out)
{
	static const struct {
		const char *name;
		enum role role;
	} roles[] = {{"client", ROLE_CLIENT}, {"finance", ROLE_FINANCE}, {"admin", ROLE_ADMIN}};
	size_t i;

	for (i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
		if (strlen(roles[i].name) == n && memcmp(roles[i].name, s, n) == 0) {
			*out = roles[i].role;
			return ERR_OK;
		}
	}
	return ERR_INVALID;
}

/* The key part of an entry: a plain token is hashed, a written digest decoded. */
static int parse_secret(const char *s, size_t n, uint8_t hash[APIKEY_HASH_BYTES], const char **what)
{
	const size_t plen = sizeof(APIKEY_HASH_PREFIX) - 1;
	size_t i, bin_len = 0;

	*what = what_syntax;
	if (n == 0)
		return ERR_INVALID;
	for (i = 0; i < n; i++) {
		if (s[i] <= ' ' || s[i] > '~')
			return ERR_INVALID;
	}
	if (n < plen || memcmp(s, APIKEY_HASH_PREFIX, plen) != 0) {
		apikey_hash(s, n, hash);
		return ERR_OK;
	}
	*what = "must write a hashed key as blake2b256. and 64 hex digits";
	if (n != plen + 2 * APIKEY_HASH_BYTES)
		return ERR_INVALID;
	for (i = plen; i < n; i++) {
		char c = s[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return ERR_INVALID;
	}
	if (sodium_hex2bin(hash, APIKEY_HASH_BYTES, s + plen, n - plen, NULL, &bin_len, NULL) !=
	        0 ||
	    bin_len != APIKEY_HASH_BYTES)
		return ERR_INVALID;
	return ERR_OK;
}

/* One "key:role[:limit]" of n bytes into k. */
static int parse_entry(const char *s, size_t n, struct apikey *k, const char **what)
{
	const char *role, *limit, *end = s + n, *colon = memchr(s, ':', n);
	uint8_t id[6];

	*what = what_syntax;
	if (!colon)
		return ERR_INVALID;
	role = colon + 1;
	limit = memchr(role, ':', (size_t)(end - role));
	if (parse_role(role, (size_t)((limit ? limit : end) - role), &k->role) != ERR_OK)
		return ERR_INVALID;
	k->limit = APIKEY_LIMIT_DEFAULT;
	if (limit && strnum_parse(limit + 1, (size_t)(end - limit - 1), 10, 0, APIKEY_LIMIT_MAX,
	                          &k->limit) != ERR_OK) {
		*what = "must give a key's rate limit as a number from 0 to 1000000000";
		return ERR_INVALID;
	}
	if (parse_secret(s, (size_t)(colon - s), k->hash, what) != ERR_OK)
		return ERR_INVALID;
	/* A name that can be stored and logged: the digest's first 6 bytes. */
	memcpy(id, k->hash, sizeof(id));
	memcpy(k->client_id, "key_", 4);
	sodium_bin2hex(k->client_id + 4, sizeof(k->client_id) - 4, id, sizeof(id));
	return ERR_OK;
}

int apikey_parse(const char *list, struct apikey *keys, size_t max, size_t *n, const char **what)
{
	struct apikey got[APIKEY_MAX];
	const char *p = list;
	size_t count = 0, i;
	int rc = ERR_INVALID;

	*what = what_syntax;
	if (max > APIKEY_MAX)
		max = APIKEY_MAX;
	for (;;) {
		size_t len = strcspn(p, ",");

		if (count == max) {
			*what = "has more keys than allowed (32)";
			goto out;
		}
		if (parse_entry(p, len, &got[count], what) != ERR_OK)
			goto out;
		for (i = 0; i < count; i++) {
			if (sodium_memcmp(got[i].hash, got[count].hash, APIKEY_HASH_BYTES) == 0) {
				*what = "lists the same key twice";
				goto out;
			}
		}
		count++;
		p += len;
		if (*p == '\0')
			break;
		p++;
	}
	memcpy(keys, got, count * sizeof(got[0]));
	*n = count;
	rc = ERR_OK;
out:
	sodium_memzero(got, sizeof(got));
	return rc;
}

void apikey_hash(const char *token, size_t len, uint8_t out[APIKEY_HASH_BYTES])
{
	crypto_generichash(out, APIKEY_HASH_BYTES, (const unsigned char *)token, len, NULL, 0);
}

const struct apikey *apikey_find(const struct apikey *keys, size_t n, const char *token, size_t len)
{
	uint8_t h[APIKEY_HASH_BYTES];
	size_t i, found = 0, any = 0;

	apikey_hash(token, len, h);
	/*
	 * Every key is compared, and the match is selected with masks rather
	 * than a branch, so neither the time nor the path depends on which key
	 * matched. The digest is compared, not the token: its bytes are not
	 * under the caller's control.
	 */
	for (i = 0; i < n; i++) {
		size_t eq = (size_t)(sodium_memcmp(keys[i].hash, h, APIKEY_HASH_BYTES) == 0);
		size_t mask = (size_t)0 - eq;

		found = (found & ~mask) | (i & mask);
		any |= eq;
	}
	sodium_memzero(h, sizeof(h));
	return any ? &keys[found] : NULL;
}
