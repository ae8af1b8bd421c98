/* vault.c: stores card numbers encrypted and tokenized, never in clear. */
#include "vault.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "consume.h"
#include "err.h"
#include "ids.h"
#include "log.h"
#include "seal.h"

_Static_assert(VAULT_KEY_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "vault key size");

#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define CT_MAX (CARD_NUMBER_MAX + crypto_aead_xchacha20poly1305_ietf_ABYTES)

int vault_init(struct vault *v, const char *key_hex, const char *fingerprint_key_hex)
{
	struct vault t;

	if (seal_hex_decode(key_hex, t.key, sizeof(t.key)) != ERR_OK) {
		log_error("cannot use ORDERS_VAULT_KEY: it must be 64 hex digits");
		sodium_memzero(&t, sizeof(t));
		return ERR_PARSE;
	}
	if (seal_hex_decode(fingerprint_key_hex, t.fingerprint_key, sizeof(t.fingerprint_key)) !=
	    ERR_OK) {
		log_error("cannot use ORDERS_FINGERPRINT_KEY: it must be 64 hex digits");
		sodium_memzero(&t, sizeof(t));
		return ERR_PARSE;
	}
	*v = t;
	sodium_memzero(&t, sizeof(t));
	return ERR_OK;
}

void vault_release(struct vault *v)
{
	sodium_memzero(v, sizeof(*v));
}

void vault_fingerprint(const struct vault *v, const struct card *c,
                       uint8_t out[VAULT_FINGERPRINT_BYTES])
{
	crypto_generichash(out, VAULT_FINGERPRINT_BYTES, (const unsigned char *)c->number,
	                   strnlen(c->number, sizeof(c->number)), v->fingerprint_key,
	                   sizeof(v->fingerprint_key));
}

/* "\x" and the hex digits: bytea's text input form. out holds 2n + 3. */
static void bytea_hex(char *out, size_t outlen, const uint8_t *bin, size_t n)
{
	out[0] = '\\';
	out[1] = 'x';
	sodium_bin2hex(out + 2, outlen - 2, bin, n);
}

int vault_store(const struct vault *v, struct db *db, const struct card *c,
                char token[VAULT_TOKEN_LEN + 1])
{
	static const struct db_stmt st = {
	    "vault.store",
	    "INSERT INTO vault_cards (token, fingerprint, ciphertext, nonce, brand, last4, "
	    "exp_month, exp_year) "
	    "VALUES ($1, $2::bytea, $3::bytea, $4::bytea, $5, $6, $7::int, $8::int) "
	    "ON CONFLICT (fingerprint) DO UPDATE SET exp_month = EXCLUDED.exp_month, "
	    "exp_year = EXCLUDED.exp_year RETURNING token"};
	uint8_t fp[VAULT_FINGERPRINT_BYTES], nonce[NONCE_BYTES], ct[CT_MAX];
	char fp_hex[2 * sizeof(fp) + 3], nonce_hex[2 * sizeof(nonce) + 3], ct_hex[2 * CT_MAX + 3];
	char new_token[VAULT_TOKEN_LEN + 1], last4[5], month[8], year[8];
	unsigned long long ctlen = 0;
	size_t n = strnlen(c->number, sizeof(c->number));
	const char *p[8];
	PGresult *r = NULL;
	int rc;

	if (n == 0 || n > CARD_NUMBER_MAX)
		return ERR_INVALID;
	vault_fingerprint(v, c, fp);
	randombytes_buf(nonce, sizeof(nonce));
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(ct, &ctlen, (const unsigned char *)c->number,
	                                               n, fp, sizeof(fp), NULL, nonce, v->key) != 0)
		return ERR_CRYPTO;
	bytea_hex(fp_hex, sizeof(fp_hex), fp, sizeof(fp));
	bytea_hex(nonce_hex, sizeof(nonce_hex), nonce, sizeof(nonce));
	bytea_hex(ct_hex, sizeof(ct_hex), ct, (size_t)ctlen);
	ids_token(new_token);
	card_last4(c->number, last4);
	snprintf(month, sizeof(month), "%d", c->exp_month);
	snprintf(year, sizeof(year), "%d", c->exp_year);
	p[0] = new_token;
	p[1] = fp_hex;
	p[2] = ct_hex;
	p[3] = nonce_hex;
	p[4] = card_brand(c->number);
	p[5] = last4;
	p[6] = month;
	p[7] = year;
	rc = consume_db_rc(db_exec_stmt(db, &st, 8, p, &r));
	if (rc)
		return rc;
	if (PQntuples(r) != 1 || strlen(PQgetvalue(r, 0, 0)) != VAULT_TOKEN_LEN) {
		PQclear(r);
		return ERR_DB;
	}
	memcpy(token, PQgetvalue(r, 0, 0), VAULT_TOKEN_LEN + 1);
	PQclear(r);
	return ERR_OK;
}
