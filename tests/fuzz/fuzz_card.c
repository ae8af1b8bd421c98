/*
 * fuzz_card.c: the card record payment-consumer finds inside a sealed card
 * once it has opened it (card_decode), the input as it is. A record that
 * decodes is a card the checks take (number, CVC, month and year within
 * their bounds) and encodes back to the very same bytes.
 */
#include "card.h"
#include "fuzz.h"

FUZZ_QUIET_INITIALIZE

static int all_digits(const char *s)
{
	return *s && strspn(s, "0123456789") == strlen(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct card c;
	char rec[CARD_RECORD_MAX], last4[5];
	size_t n;

	memset(&c, 0x5a, sizeof(c));
	if (card_decode((const char *)data, size, &c) != ERR_OK)
		return 0;
	n = strlen(c.number);
	FUZZ_CHECK(n >= 12 && n <= CARD_NUMBER_MAX && all_digits(c.number));
	FUZZ_CHECK(strlen(c.cvc) >= 3 && strlen(c.cvc) <= CARD_CVC_MAX && all_digits(c.cvc));
	FUZZ_CHECK(c.exp_month >= 1 && c.exp_month <= 12);
	FUZZ_CHECK(c.exp_year >= 0 && c.exp_year <= 9999);
	FUZZ_CHECK(card_encode(&c, rec) == size && memcmp(rec, data, size) == 0);
	/* What payment-consumer does with it next never reads past it. */
	(void)card_validate(&c, 2026, 6);
	(void)card_luhn_ok(c.number);
	FUZZ_CHECK(card_brand(c.number));
	card_last4(c.number, last4);
	FUZZ_CHECK(strlen(last4) == 4 && strcmp(last4, c.number + n - 4) == 0);
	card_wipe(&c);
	return 0;
}
