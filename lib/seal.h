/*
 * seal.h: card sealing between the API and payment-consumer (libsodium).
 *
 * A crypto_box_seal per card costs ~90 us (two X25519 operations); instead
 * each API process makes one ephemeral key pair, computes the shared key with
 * the payment service's public key once (crypto_box_beforenm), and seals each
 * card with crypto_box_easy_afternm and a random nonce (~1-2 us), sending
 * its ephemeral public key along. payment-consumer caches the shared key per
 * sender public key. Only the holder of the payment secret key can open.
 */
#ifndef ORDERS_SEAL_H
#define ORDERS_SEAL_H

#include <stddef.h>
#include <stdint.h>

#define SEAL_KEY_BYTES 32
#define SEAL_NONCE_BYTES 24
#define SEAL_MAC_BYTES 16

struct sealer; /* API side: ephemeral key pair + shared key. Thread-safe after new. */
struct opener; /* payment side: secret key + cache of shared keys. Not thread-safe. */

/* seal_init - sodium_init(); call once before anything else. ERR_CRYPTO on failure. */
int seal_init(void);

/* seal_keypair - a new recipient key pair (for tools and tests). */
void seal_keypair(uint8_t pk[SEAL_KEY_BYTES], uint8_t sk[SEAL_KEY_BYTES]);

/* seal_hex_decode - exactly n bytes from 2n hex digits; ERR_PARSE otherwise. */
int seal_hex_decode(const char *hex, uint8_t *out, size_t n);

/* sealer_new - for the recipient public key; NULL on failure. */
struct sealer *sealer_new(const uint8_t recipient_pk[SEAL_KEY_BYTES]);
void sealer_free(struct sealer *s);
/* sealer_public_key - this sealer's ephemeral public key (32 bytes). */
const uint8_t *sealer_public_key(const struct sealer *s);
/*
 * sealer_seal - encrypt plain (len n) into ct (n + SEAL_MAC_BYTES bytes) with
 * a fresh random nonce written to nonce. Thread-safe.
 */
int sealer_seal(const struct sealer *s, const void *plain, size_t n,
                uint8_t nonce[SEAL_NONCE_BYTES], uint8_t *ct);

/* opener_new - from the recipient secret key; NULL on failure. */
struct opener *opener_new(const uint8_t sk[SEAL_KEY_BYTES]);
void opener_free(struct opener *o);
/*
 * opener_open - decrypt ct (len n >= SEAL_MAC_BYTES) sent by sender_pk into
 * plain (n - SEAL_MAC_BYTES bytes). ERR_CRYPTO when it does not authenticate.
 */
int opener_open(struct opener *o, const uint8_t sender_pk[SEAL_KEY_BYTES],
                const uint8_t nonce[SEAL_NONCE_BYTES], const uint8_t *ct, size_t n, uint8_t *plain);

#endif
