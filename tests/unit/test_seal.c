/* test_seal.c: sealing and opening cards, tampering, the opener's key cache, hex keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "seal.h"

#include <string.h>

static const char rec[] = "4242424242424242|123|01|2030";
#define REC_LEN (sizeof(rec) - 1)

static int setup(void **state)
{
	(void)state;
	return seal_init() == ERR_OK ? 0 : -1;
}

static void test_roundtrip(void **state)
{
	uint8_t pk[SEAL_KEY_BYTES], sk[SEAL_KEY_BYTES];
	uint8_t nonce[SEAL_NONCE_BYTES], nonce2[SEAL_NONCE_BYTES];
	uint8_t ct[REC_LEN + SEAL_MAC_BYTES], ct2[REC_LEN + SEAL_MAC_BYTES];
	uint8_t plain[REC_LEN];
	struct sealer *s;
	struct opener *o;

	(void)state;
	seal_keypair(pk, sk);
	s = sealer_new(pk);
	o = opener_new(sk);
	assert_non_null(s);
	assert_non_null(o);
	assert_int_equal(sealer_seal(s, rec, REC_LEN, nonce, ct), ERR_OK);
	/* The clear text appears nowhere in the ciphertext. */
	assert_null(memmem(ct, sizeof(ct), "4242", 4));
	assert_int_equal(opener_open(o, sealer_public_key(s), nonce, ct, sizeof(ct), plain),
	                 ERR_OK);
	assert_memory_equal(plain, rec, REC_LEN);

	/* Each seal takes a fresh nonce, so the same card seals differently. */
	assert_int_equal(sealer_seal(s, rec, REC_LEN, nonce2, ct2), ERR_OK);
	assert_memory_not_equal(nonce, nonce2, SEAL_NONCE_BYTES);
	assert_memory_not_equal(ct, ct2, sizeof(ct));
	assert_int_equal(opener_open(o, sealer_public_key(s), nonce2, ct2, sizeof(ct2), plain),
	                 ERR_OK);
	assert_memory_equal(plain, rec, REC_LEN);

	/* Empty messages work too. */
	assert_int_equal(sealer_seal(s, "", 0, nonce, ct), ERR_OK);
	assert_int_equal(opener_open(o, sealer_public_key(s), nonce, ct, SEAL_MAC_BYTES, plain),
	                 ERR_OK);
	sealer_free(s);
	opener_free(o);
	sealer_free(NULL);
	opener_free(NULL);
}

static void test_sealers_have_own_keys(void **state)
{
	uint8_t pk[SEAL_KEY_BYTES], sk[SEAL_KEY_BYTES];
	struct sealer *a, *b;

	(void)state;
	seal_keypair(pk, sk);
	a = sealer_new(pk);
	b = sealer_new(pk);
	assert_non_null(a);
	assert_non_null(b);
	assert_memory_not_equal(sealer_public_key(a), sealer_public_key(b), SEAL_KEY_BYTES);
	assert_memory_not_equal(sealer_public_key(a), pk, SEAL_KEY_BYTES);
	sealer_free(a);
	sealer_free(b);
}

static void test_tampering_fails(void **state)
{
	uint8_t pk[SEAL_KEY_BYTES], sk[SEAL_KEY_BYTES], spk[SEAL_KEY_BYTES];
	uint8_t nonce[SEAL_NONCE_BYTES];
	uint8_t ct[REC_LEN + SEAL_MAC_BYTES];
	uint8_t plain[REC_LEN];
	struct sealer *s;
	struct opener *o;
	size_t i;

	(void)state;
	seal_keypair(pk, sk);
	s = sealer_new(pk);
	o = opener_new(sk);
	assert_non_null(s);
	assert_non_null(o);
	assert_int_equal(sealer_seal(s, rec, REC_LEN, nonce, ct), ERR_OK);
	memcpy(spk, sealer_public_key(s), sizeof(spk));

	for (i = 0; i < sizeof(ct); i++) {
		ct[i] ^= 0x01;
		assert_int_equal(opener_open(o, spk, nonce, ct, sizeof(ct), plain), ERR_CRYPTO);
		ct[i] ^= 0x01;
	}
	for (i = 0; i < SEAL_NONCE_BYTES; i++) {
		nonce[i] ^= 0x80;
		assert_int_equal(opener_open(o, spk, nonce, ct, sizeof(ct), plain), ERR_CRYPTO);
		nonce[i] ^= 0x80;
	}
	for (i = 0; i < SEAL_KEY_BYTES; i++) {
		spk[i] ^= 0x04;
		assert_int_equal(opener_open(o, spk, nonce, ct, sizeof(ct), plain), ERR_CRYPTO);
		spk[i] ^= 0x04;
	}
	/* Cut short, or too short to hold a MAC. */
	assert_int_equal(opener_open(o, spk, nonce, ct, sizeof(ct) - 1, plain), ERR_CRYPTO);
	assert_int_equal(opener_open(o, spk, nonce, ct, SEAL_MAC_BYTES - 1, plain), ERR_CRYPTO);
	assert_int_equal(opener_open(o, spk, nonce, ct, 0, plain), ERR_CRYPTO);
	/* All the failures left the real sender working. */
	assert_int_equal(opener_open(o, spk, nonce, ct, sizeof(ct), plain), ERR_OK);
	assert_memory_equal(plain, rec, REC_LEN);
	/* And a tampered message fails also once the key is cached. */
	ct[3] ^= 0x10;
	assert_int_equal(opener_open(o, spk, nonce, ct, sizeof(ct), plain), ERR_CRYPTO);
	sealer_free(s);
	opener_free(o);
}

static void test_wrong_recipient_fails(void **state)
{
	uint8_t pk[SEAL_KEY_BYTES], sk[SEAL_KEY_BYTES];
	uint8_t pk2[SEAL_KEY_BYTES], sk2[SEAL_KEY_BYTES];
	uint8_t nonce[SEAL_NONCE_BYTES];
	uint8_t ct[REC_LEN + SEAL_MAC_BYTES];
	uint8_t plain[REC_LEN];
	struct sealer *s;
	struct opener *other;

	(void)state;
	seal_keypair(pk, sk);
	seal_keypair(pk2, sk2);
	s = sealer_new(pk);
	other = opener_new(sk2);
	assert_non_null(s);
	assert_non_null(other);
	assert_int_equal(sealer_seal(s, rec, REC_LEN, nonce, ct), ERR_OK);
	assert_int_equal(opener_open(other, sealer_public_key(s), nonce, ct, sizeof(ct), plain),
	                 ERR_CRYPTO);
	sealer_free(s);
	opener_free(other);
}

static void test_low_order_key_refused(void **state)
{
	static const uint8_t zero[SEAL_KEY_BYTES];
	uint8_t pk[SEAL_KEY_BYTES], sk[SEAL_KEY_BYTES];
	uint8_t nonce[SEAL_NONCE_BYTES] = {0};
	uint8_t ct[SEAL_MAC_BYTES + 4] = {0};
	uint8_t plain[4];
	struct opener *o;

	(void)state;
	assert_null(sealer_new(zero));
	seal_keypair(pk, sk);
	o = opener_new(sk);
	assert_non_null(o);
	assert_int_equal(opener_open(o, zero, nonce, ct, sizeof(ct), plain), ERR_CRYPTO);
	opener_free(o);
}

#define SENDERS 40

static void test_cache_many_senders(void **state)
{
	static struct sealer *s[SENDERS];
	static uint8_t ct[SENDERS][REC_LEN + SEAL_MAC_BYTES];
	static uint8_t nonce[SENDERS][SEAL_NONCE_BYTES];
	uint8_t pk[SEAL_KEY_BYTES], sk[SEAL_KEY_BYTES];
	uint8_t plain[REC_LEN];
	struct opener *o;
	int i, round;

	(void)state;
	seal_keypair(pk, sk);
	o = opener_new(sk);
	assert_non_null(o);
	for (i = 0; i < SENDERS; i++) {
		s[i] = sealer_new(pk);
		assert_non_null(s[i]);
		assert_int_equal(sealer_seal(s[i], rec, REC_LEN, nonce[i], ct[i]), ERR_OK);
	}
	/* In order, in reverse and strided: every pattern of hits and evictions. */
	for (round = 0; round < 6; round++) {
		for (i = 0; i < SENDERS; i++) {
			int k = round % 3 == 0   ? i
			        : round % 3 == 1 ? SENDERS - 1 - i
			                         : (i * 7) % SENDERS;

			memset(plain, 0, sizeof(plain));
			assert_int_equal(opener_open(o, sealer_public_key(s[k]), nonce[k], ct[k],
			                             sizeof(ct[k]), plain),
			                 ERR_OK);
			assert_memory_equal(plain, rec, REC_LEN);
			/* A cached key must not open another sender's message. */
			assert_int_equal(opener_open(o, sealer_public_key(s[k]),
			                             nonce[(k + 1) % SENDERS],
			                             ct[(k + 1) % SENDERS], sizeof(ct[0]), plain),
			                 ERR_CRYPTO);
		}
	}
	/* A few hot senders among many cold ones. */
	for (i = 0; i < 200; i++) {
		int k = i % 2 ? i % 3 : i % SENDERS;

		assert_int_equal(
		    opener_open(o, sealer_public_key(s[k]), nonce[k], ct[k], sizeof(ct[k]), plain),
		    ERR_OK);
	}
	for (i = 0; i < SENDERS; i++)
		sealer_free(s[i]);
	opener_free(o);
}

static void test_hex_decode(void **state)
{
	uint8_t out[4], before[4];

	(void)state;
	assert_int_equal(seal_hex_decode("00ff7fA0", out, 4), ERR_OK);
	assert_int_equal(out[0], 0x00);
	assert_int_equal(out[1], 0xff);
	assert_int_equal(out[2], 0x7f);
	assert_int_equal(out[3], 0xa0);
	assert_int_equal(seal_hex_decode("", out, 0), ERR_OK);

	memcpy(before, out, sizeof(out));
	assert_int_equal(seal_hex_decode("00ff7f", out, 4), ERR_PARSE);    /* short */
	assert_int_equal(seal_hex_decode("00ff7fa0b", out, 4), ERR_PARSE); /* long */
	assert_int_equal(seal_hex_decode("00ff7fa0bb", out, 4), ERR_PARSE);
	assert_int_equal(seal_hex_decode("00ff7fg0", out, 4), ERR_PARSE);
	assert_int_equal(seal_hex_decode("00ff7f 0", out, 4), ERR_PARSE);
	assert_int_equal(seal_hex_decode(" 00ff7fa0", out, 4), ERR_PARSE);
	assert_int_equal(seal_hex_decode("0x00ff7f", out, 4), ERR_PARSE);
	assert_int_equal(seal_hex_decode("00ff7fa", out, 4), ERR_PARSE);
	assert_int_equal(seal_hex_decode("", out, 4), ERR_PARSE);
	assert_int_equal(seal_hex_decode(NULL, out, 4), ERR_PARSE);
	assert_memory_equal(out, before, sizeof(out)); /* untouched */
}

static void test_hex_keys_work(void **state)
{
	/* Keys as they come from the configuration. */
	static const char hex_digits[] = "0123456789abcdef";
	uint8_t pk[SEAL_KEY_BYTES], sk[SEAL_KEY_BYTES], sk2[SEAL_KEY_BYTES];
	char hex[2 * SEAL_KEY_BYTES + 1];
	size_t i;

	(void)state;
	seal_keypair(pk, sk);
	for (i = 0; i < SEAL_KEY_BYTES; i++) {
		hex[2 * i] = hex_digits[sk[i] >> 4];
		hex[2 * i + 1] = hex_digits[sk[i] & 0xf];
	}
	hex[2 * SEAL_KEY_BYTES] = '\0';
	assert_int_equal(seal_hex_decode(hex, sk2, SEAL_KEY_BYTES), ERR_OK);
	assert_memory_equal(sk, sk2, SEAL_KEY_BYTES);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_sealers_have_own_keys),
	    cmocka_unit_test(test_tampering_fails),
	    cmocka_unit_test(test_wrong_recipient_fails),
	    cmocka_unit_test(test_low_order_key_refused),
	    cmocka_unit_test(test_cache_many_senders),
	    cmocka_unit_test(test_hex_decode),
	    cmocka_unit_test(test_hex_keys_work),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
