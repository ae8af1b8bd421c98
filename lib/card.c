/* card.c: payment card checks (Luhn, brand, expiry, CVC) and the sealed record. */
#include "card.h"

#include "err.h"

#include <sodium.h>
#include <string.h>

static int all_digits(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
	}
	return 1;
}

int card_luhn_ok(const char *s)
{
	size_t n, i;
	unsigned sum = 0;
	int dbl = 0;

	if (!s)
		return 0;
	n = strlen(s);
	if (n == 0 || !all_digits(s, n))
		return 0;
	/* From the right, every second digit is doubled. */
	for (i = n; i-- > 0;) {
		unsigned d = (unsigned)(s[i] - '0');

		if (dbl) {
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
		dbl = !dbl;
	}
	return sum % 10 == 0;
}

/* The number formed by the first n digits of s, or -1 when there are fewer. */
static int prefix(const char *s, size_t n)
{
	int v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

const char *card_brand(const char *number)
{
	int p1, p2, p3, p4;

	if (!number)
		return "unknown";
	p1 = prefix(number, 1);
	p2 = prefix(number, 2);
	p3 = prefix(number, 3);
	p4 = prefix(number, 4);
	if (p1 == 4)
		return "visa";
	if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720))
		return "mastercard";
	if (p2 == 34 || p2 == 37)
		return "amex";
	if (p4 == 6011 || p2 == 65 || (p3 >= 644 && p3 <= 649))
		return "discover";
	return "unknown";
}

void card_last4(const char *number, char out[5])
{
	size_t n, k;

	out[0] = '\0';
	if (!number)
		return;
	n = strlen(number);
	k = n < 4 ? n : 4;
	memcpy(out, number + (n - k), k);
	out[k] = '\0';
}

enum card_problem card_validate(const struct card *c, int now_year, int now_month)
{
	size_t n = strnlen(c->number, sizeof(c->number));
	size_t cvc_len = strnlen(c->cvc, sizeof(c->cvc));
	size_t want_cvc;

	/* A field without its NUL is as bad as a wrong one. */
	if (n == sizeof(c->number) || n < 12 || n > CARD_NUMBER_MAX || !card_luhn_ok(c->number))
		return CARD_BAD_NUMBER;
	if (c->exp_month < 1 || c->exp_month > 12 || c->exp_year < 1000 || c->exp_year > 9999)
		return CARD_BAD_EXPIRY;
	/* A card is good through the last day of its expiry month. */
	if (c->exp_year < now_year || (c->exp_year == now_year && c->exp_month < now_month))
		return CARD_BAD_EXPIRY;
	want_cvc = strcmp(card_brand(c->number), "amex") == 0 ? 4 : 3;
	if (cvc_len == sizeof(c->cvc) || cvc_len != want_cvc || !all_digits(c->cvc, cvc_len))
		return CARD_BAD_CVC;
	return CARD_OK;
}

const char *card_problem_str(enum card_problem p)
{
	switch (p) {
	case CARD_OK:
		return "the card is valid";
	case CARD_BAD_NUMBER:
		return "the card number is not valid";
	case CARD_BAD_EXPIRY:
		return "the card has expired or its expiry date is not valid";
	case CARD_BAD_CVC:
		return "the card security code is not valid";
	}
	return "the card is not valid";
}

void card_wipe(struct card *c)
{
	sodium_memzero(c, sizeof(*c));
}

static size_t put_num(char *out, unsigned v, int width)
{
	int i;

	for (i = width; i-- > 0;) {
		out[i] = (char)('0' + v % 10);
		v /= 10;
	}
	return (size_t)width;
}

size_t card_encode(const struct card *c, char out[CARD_RECORD_MAX])
{
	size_t n = strnlen(c->number, CARD_NUMBER_MAX);
	size_t k = strnlen(c->cvc, CARD_CVC_MAX);
	size_t o = 0;
	int month = c->exp_month, year = c->exp_year;

	/*
	 * The widths are fixed (19 + 1 + 4 + 1 + 2 + 1 + 4 < 40), so out never
	 * overflows; a field out of range gives a record decode refuses.
	 */
	if (month < 0 || month > 99)
		month = 0;
	if (year < 0 || year > 9999)
		year = 0;
	memcpy(out + o, c->number, n);
	o += n;
	out[o++] = '|';
	memcpy(out + o, c->cvc, k);
	o += k;
	out[o++] = '|';
	o += put_num(out + o, (unsigned)month, 2);
	out[o++] = '|';
	o += put_num(out + o, (unsigned)year, 4);
	out[o] = '\0';
	return o;
}

/* The length of the run of digits at rec[i..len), at most max + 1. */
static size_t digit_run(const char *rec, size_t i, size_t len, size_t max)
{
	size_t n = 0;

	while (i + n < len && n <= max && rec[i + n] >= '0' && rec[i + n] <= '9')
		n++;
	return n;
}

int card_decode(const char *rec, size_t len, struct card *out)
{
	struct card c;
	size_t i = 0, n;
	int rc = ERR_PARSE;

	memset(&c, 0, sizeof(c));
	if (!rec)
		goto out;
	n = digit_run(rec, i, len, CARD_NUMBER_MAX);
	if (n < 12 || n > CARD_NUMBER_MAX || i + n >= len || rec[i + n] != '|')
		goto out;
	memcpy(c.number, rec + i, n);
	i += n + 1;
	n = digit_run(rec, i, len, CARD_CVC_MAX);
	if (n < 3 || n > CARD_CVC_MAX || i + n >= len || rec[i + n] != '|')
		goto out;
	memcpy(c.cvc, rec + i, n);
	i += n + 1;
	n = digit_run(rec, i, len, 2);
	if (n != 2 || i + n >= len || rec[i + n] != '|')
		goto out;
	c.exp_month = (rec[i] - '0') * 10 + (rec[i + 1] - '0');
	if (c.exp_month < 1 || c.exp_month > 12)
		goto out;
	i += n + 1;
	n = digit_run(rec, i, len, 4);
	if (n != 4 || i + n != len)
		goto out;
	c.exp_year = (rec[i] - '0') * 1000 + (rec[i + 1] - '0') * 100 + (rec[i + 2] - '0') * 10 +
	             (rec[i + 3] - '0');
	*out = c;
	rc = ERR_OK;
out:
	card_wipe(&c);
	return rc;
}
