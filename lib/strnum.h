/*
 * strnum.h: decimal numbers from untrusted text, as URLs and key lists
 * carry them: digits only (no sign, no spaces, no base prefix).
 */
#ifndef ORDERS_STRNUM_H
#define ORDERS_STRNUM_H

#include <stddef.h>

/* Past this many digits a number is refused before it could overflow. */
#define STRNUM_DIGITS_MAX 18

/*
 * strnum_parse - the n bytes at s (not NUL-terminated) as a number within
 * [min, max] into *out. ERR_OK, or ERR_INVALID when n is 0 or over
 * max_digits (at most STRNUM_DIGITS_MAX), a byte is not a digit, or the
 * value is out of range; *out is set only on success. Thread-safe.
 */
int strnum_parse(const char *s, size_t n, size_t max_digits, long min, long max, long *out);

#endif
