/* strnum.c: decimal numbers from untrusted text, digits only. */
#include "strnum.h"

#include "err.h"

int strnum_parse(const char *s, size_t n, size_t max_digits, long min, long max, long *out)
{
	long v = 0;

	if (n == 0 || n > max_digits || n > STRNUM_DIGITS_MAX)
		return ERR_INVALID;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return ERR_INVALID;
		v = v * 10 + (s[i] - '0');
	}
	if (v < min || v > max)
		return ERR_INVALID;
	*out = v;
	return ERR_OK;
}
