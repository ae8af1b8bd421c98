/* seal.c: card sealing with a precomputed X25519 shared key (libsodium crypto_box). */
#include "seal.h"

#include "err.h"

#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Sender keys remembered by an opener; API processes are few, so this is plenty. */
#define OPENER_CACHE_SIZE 16

struct sealer {
	uint8_t pk[crypto_box_PUBLICKEYBYTES];
	uint8_t k[crypto_box_BEFORENMBYTES];
};

struct opener_slot {
	uint8_t pk[crypto_box_PUBLICKEYBYTES];
	uint8_t k[crypto_box_BEFORENMBYTES];
	uint64_t used; /* 0: empty; otherwise the tick of the last use */
};

struct opener {
	uint8_t sk[crypto_box_SECRETKEYBYTES];
	struct opener_slot cache[OPENER_CACHE_SIZE];
	uint64_t tick;
};

/* The sizes in seal.h are the contract; libsodium must agree with them. */
_Static_assert(SEAL_KEY_BYTES == crypto_box_PUBLICKEYBYTES, "public key size");
_Static_assert(SEAL_KEY_BYTES == crypto_box_SECRETKEYBYTES, "secret key size");
_Static_assert(SEAL_NONCE_BYTES == crypto_box_NONCEBYTES, "nonce size");
_Static_assert(SEAL_MAC_BYTES == crypto_box_MACBYTES, "mac size");

int seal_init(void)
{
	return sodium_init() < 0 ? ERR_CRYPTO : ERR_OK;
}

void seal_keypair(uint8_t pk[SEAL_KEY_BYTES], uint8_t sk[SEAL_KEY_BYTES])
{
	crypto_box_keypair(pk, sk);
}

static int hex_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int seal_hex_decode(const char *hex, uint8_t *out, size_t n)
{
	size_t i;

	if (!hex || n > SIZE_MAX / 2)
		return ERR_PARSE;
	/* Check everything first: out is written only on success. */
	for (i = 0; i < 2 * n; i++) {
		if (hex_val(hex[i]) < 0)
			return ERR_PARSE;
	}
	if (hex[2 * n] != '\0')
		return ERR_PARSE;
	for (i = 0; i < n; i++)
		out[i] = (uint8_t)(hex_val(hex[2 * i]) << 4 | hex_val(hex[2 * i + 1]));
	return ERR_OK;
}

struct sealer *sealer_new(const uint8_t recipient_pk[SEAL_KEY_BYTES])
{
	struct sealer *s;
	uint8_t sk[crypto_box_SECRETKEYBYTES];

	if (!recipient_pk)
		return NULL;
	s = malloc(sizeof(*s));
	if (!s)
		return NULL;
	crypto_box_keypair(s->pk, sk);
	/* Fails only for a low-order recipient key, which is no key at all. */
	if (crypto_box_beforenm(s->k, recipient_pk, sk) != 0) {
		sodium_memzero(sk, sizeof(sk));
		sealer_free(s);
		return NULL;
	}
	/* The shared key is all this sealer needs from now on. */
	sodium_memzero(sk, sizeof(sk));
	return s;
}

void sealer_free(struct sealer *s)
{
	if (!s)
		return;
	sodium_memzero(s, sizeof(*s));
	free(s);
}

const uint8_t *sealer_public_key(const struct sealer *s)
{
	return s->pk;
}

int sealer_seal(const struct sealer *s, const void *plain, size_t n,
                uint8_t nonce[SEAL_NONCE_BYTES], uint8_t *ct)
{
	if (!s || (!plain && n > 0) || !nonce || !ct)
		return ERR_INVALID;
	if (n > crypto_box_MESSAGEBYTES_MAX)
		return ERR_TOO_BIG;
	/* 24 random bytes: collisions are negligible, no counter to share. */
	randombytes_buf(nonce, SEAL_NONCE_BYTES);
	if (crypto_box_easy_afternm(ct, plain, n, nonce, s->k) != 0)
		return ERR_CRYPTO;
	return ERR_OK;
}

struct opener *opener_new(const uint8_t sk[SEAL_KEY_BYTES])
{
	struct opener *o;

	if (!sk)
		return NULL;
	o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	memcpy(o->sk, sk, sizeof(o->sk));
	return o;
}

void opener_free(struct opener *o)
{
	if (!o)
		return;
	sodium_memzero(o, sizeof(*o));
	free(o);
}

static struct opener_slot *opener_find(struct opener *o, const uint8_t pk[SEAL_KEY_BYTES])
{
	size_t i;

	for (i = 0; i < OPENER_CACHE_SIZE; i++) {
		if (o->cache[i].used && memcmp(o->cache[i].pk, pk, SEAL_KEY_BYTES) == 0)
			return &o->cache[i];
	}
	return NULL;
}

/* An empty slot, or else the least recently used one. */
static struct opener_slot *opener_victim(struct opener *o)
{
	struct opener_slot *v = &o->cache[0];
	size_t i;

	for (i = 0; i < OPENER_CACHE_SIZE; i++) {
		if (!o->cache[i].used)
			return &o->cache[i];
		if (o->cache[i].used < v->used)
			v = &o->cache[i];
	}
	return v;
}

int opener_open(struct opener *o, const uint8_t sender_pk[SEAL_KEY_BYTES],
                const uint8_t nonce[SEAL_NONCE_BYTES], const uint8_t *ct, size_t n, uint8_t *plain)
{
	struct opener_slot *slot;
	uint8_t k[crypto_box_BEFORENMBYTES];
	int rc = ERR_CRYPTO;

	if (!o || !sender_pk || !nonce || !ct || !plain)
		return ERR_INVALID;
	if (n < SEAL_MAC_BYTES)
		return ERR_CRYPTO;
	slot = opener_find(o, sender_pk);
	if (slot) {
		if (crypto_box_open_easy_afternm(plain, ct, n, nonce, slot->k) != 0)
			return ERR_CRYPTO;
		slot->used = ++o->tick;
		return ERR_OK;
	}
	if (crypto_box_beforenm(k, sender_pk, o->sk) != 0)
		goto out;
	if (crypto_box_open_easy_afternm(plain, ct, n, nonce, k) != 0)
		goto out;
	/*
	 * Only a key that opened a message is cached, so that forged sender
	 * keys cannot push the real senders out of the cache.
	 */
	slot = opener_victim(o);
	memcpy(slot->pk, sender_pk, SEAL_KEY_BYTES);
	memcpy(slot->k, k, sizeof(k));
	slot->used = ++o->tick;
	rc = ERR_OK;
out:
	sodium_memzero(k, sizeof(k));
	return rc;
}
