/*
 * card.h: a payment card in clear, and its validation.
 *
 * struct card exists only in the API (between parsing and sealing) and in
 * payment-consumer (between opening and vaulting). It has no formatter and
 * no log field helper on purpose; card_wipe() zeroes it. Never copy its
 * number or cvc into anything else but seal_* and the vault.
 */
#ifndef ORDERS_CARD_H
#define ORDERS_CARD_H

#include <stddef.h>

#define CARD_NUMBER_MAX 19
#define CARD_CVC_MAX 4

struct card {
	char number[CARD_NUMBER_MAX + 1]; /* digits only */
	char cvc[CARD_CVC_MAX + 1];
	int exp_month; /* 1..12 */
	int exp_year;  /* four digits */
};

enum card_problem {
	CARD_OK = 0,
	CARD_BAD_NUMBER, /* not 12..19 digits, or fails Luhn */
	CARD_BAD_EXPIRY, /* month out of range, or in the past */
	CARD_BAD_CVC,    /* not 3 digits (4 for amex) */
};

/* card_luhn_ok - 1 when s is all digits and passes the Luhn check. */
int card_luhn_ok(const char *s);

/* card_brand - "visa", "mastercard", "amex", "discover" or "unknown". */
const char *card_brand(const char *number);

/* card_last4 - the last four digits into out[5]. */
void card_last4(const char *number, char out[5]);

/*
 * card_validate - check number, expiry against (now_year, now_month) and CVC.
 * Returns CARD_OK or the first problem found.
 */
enum card_problem card_validate(const struct card *c, int now_year, int now_month);

/* card_problem_str - the sentence for an error message; never mentions digits. */
const char *card_problem_str(enum card_problem p);

/* card_wipe - zero the struct in a way the compiler cannot drop. */
void card_wipe(struct card *c);

/*
 * card_encode / card_decode - the fixed record that is sealed:
 * "number|cvc|MM|YYYY". encode writes into out (size CARD_RECORD_MAX) and
 * returns the length; decode returns ERR_PARSE on anything malformed.
 */
#define CARD_RECORD_MAX 40
size_t card_encode(const struct card *c, char out[CARD_RECORD_MAX]);
int card_decode(const char *rec, size_t len, struct card *out);

#endif
