/*
 * vault.h: the card vault (table vault_cards) of payment-consumer.
 *
 * A number is stored only encrypted: XChaCha20-Poly1305 under the data key
 * (ORDERS_VAULT_KEY) with a fresh random nonce and the fingerprint as
 * associated data, so a ciphertext cannot be moved to another row. The
 * fingerprint is BLAKE2b of the number keyed with ORDERS_FINGERPRINT_KEY: it
 * finds "the same card" and reveals nothing without the key. The CVC is
 * never stored.
 */
#ifndef ORDERS_VAULT_H
#define ORDERS_VAULT_H

#include <stdint.h>

#include "card.h"
#include "db.h"

#define VAULT_KEY_BYTES 32
#define VAULT_FINGERPRINT_BYTES 32
#define VAULT_TOKEN_LEN 28 /* "tok_" + 24 hex digits */

struct vault {
	uint8_t key[VAULT_KEY_BYTES];             /* data key */
	uint8_t fingerprint_key[VAULT_KEY_BYTES]; /* fingerprint key */
};

/*
 * vault_init - both keys from 64 hex digits each. ERR_PARSE (the sentence
 * naming the bad variable is logged) when one is not.
 */
int vault_init(struct vault *v, const char *key_hex, const char *fingerprint_key_hex);

/* vault_release - wipe the keys. */
void vault_release(struct vault *v);

/*
 * vault_fingerprint - the keyed hash of the card number. Exposed for tests.
 */
void vault_fingerprint(const struct vault *v, const struct card *c,
                       uint8_t out[VAULT_FINGERPRINT_BYTES]);

/*
 * vault_store - upsert the card (encrypted number, brand, last4, expiry) on
 * db, inside the caller's transaction, and write its token into token. The
 * same number keeps the token it got first (its expiry is updated); a new
 * number gets a new random token. Errors: those of db_exec() (mapped with
 * consume_db_rc), ERR_CRYPTO.
 */
int vault_store(const struct vault *v, struct db *db, const struct card *c,
                char token[VAULT_TOKEN_LEN + 1]);

#endif
