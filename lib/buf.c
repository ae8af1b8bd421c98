/* buf.c: a growable byte buffer with a maximum size. */
#include "buf.h"

#include "err.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN_CAP 64

void buf_init(struct buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
}

void buf_release(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void buf_truncate(struct buf *b, size_t len)
{
	if (len >= b->len)
		return;
	b->len = len;
	b->data[len] = '\0';
}

void buf_cut(struct buf *b, size_t off, size_t n)
{
	if (off >= b->len || n == 0)
		return;
	if (n > b->len - off)
		n = b->len - off;
	memmove(b->data + off, b->data + off + n, b->len - off - n);
	b->len -= n;
	b->data[b->len] = '\0';
}

/*
 * Make room for n more bytes plus the NUL. The capacity doubles (checked
 * against overflow) but never goes past max + 1, so a buffer near its
 * maximum does not allocate twice what it may ever hold.
 */
static int buf_grow(struct buf *b, size_t n)
{
	size_t need, cap;
	char *p;

	if (n > b->max - b->len)
		return ERR_TOO_BIG;
	/* len + n <= max here; the NUL needs one more byte. */
	if (b->len + n == SIZE_MAX)
		return ERR_TOO_BIG;
	need = b->len + n + 1;
	if (b->data && need <= b->cap)
		return ERR_OK;
	cap = b->cap ? b->cap : BUF_MIN_CAP;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (b->max < SIZE_MAX && cap > b->max + 1)
		cap = b->max + 1;
	if (cap < need)
		cap = need;
	p = realloc(b->data, cap);
	if (!p)
		return ERR_NOMEM;
	if (!b->data)
		p[0] = '\0';
	b->data = p;
	b->cap = cap;
	return ERR_OK;
}

int buf_append(struct buf *b, const void *data, size_t n)
{
	const char *src = data;
	size_t off = 0;
	int inside = 0;
	int rc;

	/* Appending a part of the buffer to itself must survive realloc. */
	if (b->data && src >= b->data && src < b->data + b->cap) {
		inside = 1;
		off = (size_t)(src - b->data);
	}
	rc = buf_grow(b, n);
	if (rc != ERR_OK)
		return rc;
	if (inside)
		src = b->data + off;
	if (n > 0)
		memmove(b->data + b->len, src, n);
	b->len += n;
	b->data[b->len] = '\0';
	return ERR_OK;
}

int buf_append_str(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap, ap2;
	size_t room = b->data ? b->cap - b->len : 0;
	int n, rc;

	va_start(ap, fmt);
	va_copy(ap2, ap);
	n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n < 0) {
		rc = ERR_INVALID;
		goto out;
	}
	if ((size_t)n < room) {
		/* It fitted in the spare capacity; still bounded by max. */
		if ((size_t)n > b->max - b->len) {
			rc = ERR_TOO_BIG;
			goto out;
		}
		b->len += (size_t)n;
		rc = ERR_OK;
		goto out;
	}
	rc = buf_grow(b, (size_t)n);
	if (rc != ERR_OK)
		goto out;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
	b->len += (size_t)n;
	rc = ERR_OK;
out:
	va_end(ap2);
	/* vsnprintf may have written past len; the data stays as it was. */
	if (b->data)
		b->data[b->len] = '\0';
	return rc;
}

char *buf_detach(struct buf *b, size_t *len_out)
{
	char *p = b->data;
	size_t len = b->len;

	if (!p) {
		p = malloc(1);
		if (!p)
			return NULL;
		p[0] = '\0';
		len = 0;
	}
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	if (len_out)
		*len_out = len;
	return p;
}
