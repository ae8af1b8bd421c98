/*
 * apikey.h: the API keys of ORDERS_API_KEYS, kept only as hashes.
 *
 * Syntax: a comma-separated list of entries "<key>:<role>[:<limit>]".
 *   key    the bearer token clients send, printable ASCII without spaces,
 *          ':' or ','; or "blake2b256." followed by the 64 hex digits of
 *          the token's unkeyed BLAKE2b-256 digest, so that no plain key
 *          needs to be in the environment:
 *            printf %s "$KEY" | b2sum -l 256 | cut -c1-64
 *          A plain key may therefore not itself start with "blake2b256.".
 *   role   client, finance or admin.
 *   limit  optional: requests per second for this key, across every API
 *          instance, 0 for none; without it ORDERS_RATE_LIMIT applies.
 *
 * Every key, plain or not, is kept as its 32-byte digest; the plain text is
 * wiped once hashed. A key's client_id, its non-secret name in Redis keys,
 * order records and metrics, is "key_" and the first 12 hex digits of that
 * digest, so a key has the same client_id in either form.
 */
#ifndef ORDERS_APIKEY_H
#define ORDERS_APIKEY_H

#include <stddef.h>
#include <stdint.h>

#define APIKEY_MAX 32
#define APIKEY_HASH_BYTES 32
#define APIKEY_CLIENT_ID_LEN 16 /* "key_" + 12 hex digits */
#define APIKEY_HASH_PREFIX "blake2b256."
/* The largest per-key limit, and of ORDERS_RATE_LIMIT. */
#define APIKEY_LIMIT_MAX 1000000000
/* struct apikey.limit when the entry names none: ORDERS_RATE_LIMIT applies. */
#define APIKEY_LIMIT_DEFAULT (-1)

/* A key's role; admin may use every route. */
enum role { ROLE_NONE = 0, ROLE_CLIENT, ROLE_FINANCE, ROLE_ADMIN };

struct apikey {
	uint8_t hash[APIKEY_HASH_BYTES]; /* BLAKE2b-256 of the bearer token */
	enum role role;
	long limit; /* requests per second, 0 none, or APIKEY_LIMIT_DEFAULT */
	char client_id[APIKEY_CLIENT_ID_LEN + 1];
};

/*
 * apikey_parse - read list (the syntax above) into keys[0..max), setting *n.
 * ERR_INVALID when an entry is malformed, a key is listed twice, there are
 * more than max entries or none; *what then says what the value must be, a
 * static text that never quotes the list (it holds secrets). keys and *n
 * are written only on success; the temporary copies are wiped either way.
 * Thread-safe.
 */
int apikey_parse(const char *list, struct apikey *keys, size_t max, size_t *n, const char **what);

/* apikey_hash - the digest a key is kept as (token need not be terminated). */
void apikey_hash(const char *token, size_t len, uint8_t out[APIKEY_HASH_BYTES]);

/*
 * apikey_find - the key whose digest is token's, or NULL. Compares with
 * every key in constant time, so the time taken does not tell which key,
 * if any, matched. Thread-safe.
 */
const struct apikey *apikey_find(const struct apikey *keys, size_t n, const char *token,
                                 size_t len);

#endif
