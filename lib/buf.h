/*
 * buf.h: a growable byte buffer that knows its maximum.
 *
 * Going past the maximum is ERR_TOO_BIG and leaves the buffer as it was;
 * the data is always NUL-terminated (the NUL is not counted in len and not
 * against max). Not thread-safe.
 */
#ifndef ORDERS_BUF_H
#define ORDERS_BUF_H

#include <stddef.h>

struct buf {
	char *data; /* NULL until the first append */
	size_t len;
	size_t cap;
	size_t max;
};

/* buf_init - an empty buffer that may hold up to max bytes. */
void buf_init(struct buf *b, size_t max);
/* buf_release - free the memory; the buffer is empty and reusable after. */
void buf_release(struct buf *b);
/* buf_reset - empty the buffer, keep the memory. */
void buf_reset(struct buf *b);
/* buf_truncate - keep only the first len bytes (no-op when len >= b->len):
 * undoes appends that must go together when one of them failed. */
void buf_truncate(struct buf *b, size_t len);
/* buf_cut - remove the n bytes at off (no more than there are); what follows
 * moves down, so offsets past the cut shrink by n. The memory stays. */
void buf_cut(struct buf *b, size_t off, size_t n);
/* buf_append - ERR_OK, ERR_TOO_BIG or ERR_NOMEM. */
int buf_append(struct buf *b, const void *data, size_t n);
int buf_append_str(struct buf *b, const char *s);
/* buf_printf - append formatted text; same errors as buf_append. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* buf_detach - hand the data (malloc'd, NUL-terminated) to the caller and
 * leave the buffer empty. *len_out gets the length when not NULL. Never NULL
 * on success: an empty buffer detaches as "". NULL on ERR_NOMEM. */
char *buf_detach(struct buf *b, size_t *len_out);

#endif
