/* log.c: structured logging, one bounded JSON object a line on stdout. */
#include <stddef.h> /* log.h uses size_t without including it */

#include "log.h"

#include "err.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A line never grows past this; longer string values are cut short. */
#define LOG_LINE_MAX 8192
#define LOG_DAEMON_MAX 64

enum log_level log__level = LOG_INFO;

/* Written by log_init() and log_set_fd() before any thread starts, read-only afterwards. */
static char log_daemon[LOG_DAEMON_MAX] = "orders";
static int log_fd = STDOUT_FILENO;

static const char log_cut_marker[] = "\"truncated\":true";

/*
 * The calling thread's context: copies, so that a caller's buffers may go
 * away before its last line. An empty string is an absent field.
 */
enum { LOG_CTX_REQUEST, LOG_CTX_MESSAGE, LOG_CTX_ORDER, LOG_CTX_N };

static const char *const log_ctx_keys[LOG_CTX_N] = {
    [LOG_CTX_REQUEST] = "request_id",
    [LOG_CTX_MESSAGE] = "message_id",
    [LOG_CTX_ORDER] = "order_id",
};

static _Thread_local char log_ctx[LOG_CTX_N][LOG_CONTEXT_ID_MAX + 1];

static const char *const log_level_names[] = {
    [LOG_DEBUG] = "debug",
    [LOG_INFO] = "info",
    [LOG_WARN] = "warn",
    [LOG_ERROR] = "error",
};

void log_init(const char *daemon, enum log_level level)
{
	if (daemon) {
		size_t n = strlen(daemon);

		if (n >= sizeof(log_daemon))
			n = sizeof(log_daemon) - 1;
		memcpy(log_daemon, daemon, n);
		log_daemon[n] = '\0';
	}
	log__level = level;
}

void log_set_fd(int fd)
{
	if (fd >= 0)
		log_fd = fd;
}

static void log_ctx_copy(char *dst, const char *src)
{
	size_t n = src ? strlen(src) : 0;

	if (n > LOG_CONTEXT_ID_MAX)
		n = LOG_CONTEXT_ID_MAX;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

void log_context_set(const char *request_id, const char *message_id, const char *order_id)
{
	log_ctx_copy(log_ctx[LOG_CTX_REQUEST], request_id);
	log_ctx_copy(log_ctx[LOG_CTX_MESSAGE], message_id);
	log_ctx_copy(log_ctx[LOG_CTX_ORDER], order_id);
}

static long long log_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	/* Never 0, which means "no line yet". */
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 1;
}

int log_throttle_due(struct log_throttle *t, int every_s, long *suppressed)
{
	long long now = log_mono_ms();

	if (t->last_ms != 0 && now - t->last_ms < (long long)every_s * 1000) {
		t->suppressed++;
		return 0;
	}
	*suppressed = t->suppressed;
	t->last_ms = now;
	t->suppressed = 0;
	return 1;
}

int log_throttle_clear(struct log_throttle *t, long *suppressed)
{
	int was = t->last_ms != 0;

	*suppressed = t->suppressed;
	t->last_ms = 0;
	t->suppressed = 0;
	return was;
}

void log_context_clear(void)
{
	for (int i = 0; i < LOG_CTX_N; i++)
		log_ctx[i][0] = '\0';
}

/* 1 when fields (up to LF_END) has a member named key. */
static int fields_have(const struct log_field *fields, const char *key)
{
	for (const struct log_field *f = fields; f && f->type != LOG_FIELD_END; f++) {
		if (f->key && strcmp(f->key, key) == 0)
			return 1;
	}
	return 0;
}

int log_level_parse(const char *s, enum log_level *out)
{
	size_t i;

	if (!s)
		return ERR_INVALID;
	for (i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]); i++) {
		if (strcmp(s, log_level_names[i]) == 0) {
			*out = (enum log_level)i;
			return ERR_OK;
		}
	}
	return ERR_INVALID;
}

/*
 * The line being built. limit is where content must stop so that the
 * truncation marker, the closing brace, the newline and the NUL always fit;
 * that space is reserved up front, which is what keeps a cut line valid JSON.
 */
struct log_line {
	char *p;
	size_t len;
	size_t limit;
	int members;
	int cut;
};

static int line_put(struct log_line *l, const char *s, size_t n)
{
	if (n > l->limit - l->len)
		return -1;
	memcpy(l->p + l->len, s, n);
	l->len += n;
	return 0;
}

/*
 * The length of the valid UTF-8 sequence at s (1..4), or 0 when the bytes
 * there are not valid UTF-8 (overlong forms and surrogates included).
 */
static size_t utf8_seq_len(const unsigned char *s)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	/* A NUL stops this loop too, since it is not a continuation byte. */
	for (i = 1; i < n; i++) {
		unsigned char cc = s[i];

		if (cc < lo || cc > hi)
			return 0;
		lo = 0x80;
		hi = 0xbf;
	}
	return n;
}

/*
 * Append s as a quoted JSON string. Control characters become \u00XX and
 * bytes that are not valid UTF-8 become U+FFFD, so that any input gives a
 * line strict parsers accept. When the whole string does not fit and
 * may_cut is set, as much as fits is written (never half an escape or half
 * a character) and the string is closed; returns 1 then. Returns -1, with
 * nothing written, when not even the quotes fit or when may_cut is clear
 * and the string does not fit whole.
 */
static int line_put_str(struct log_line *l, const char *s, int may_cut)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t start = l->len;
	char esc[8];

	/* Keep room for the closing quote all along. */
	if (l->limit - l->len < 2)
		return -1;
	l->p[l->len++] = '"';
	l->limit--;
	while (*u) {
		const char *piece = (const char *)u;
		size_t in = 1, out = 1;

		if (*u == '"' || *u == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*u;
			piece = esc;
			out = 2;
		} else if (*u < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)*u);
			piece = esc;
			out = 6;
		} else if (*u >= 0x80) {
			in = utf8_seq_len(u);
			if (in == 0) {
				piece = "\\ufffd";
				in = 1;
				out = 6;
			} else {
				out = in;
			}
		}
		if (line_put(l, piece, out) < 0) {
			l->limit++;
			if (!may_cut) {
				l->len = start;
				return -1;
			}
			l->p[l->len++] = '"';
			return 1;
		}
		u += in;
	}
	l->limit++;
	l->p[l->len++] = '"';
	return 0;
}

/* Start a member: [,]"key": written whole or not at all. */
static int line_begin_member(struct log_line *l, const char *key)
{
	size_t start = l->len;

	if (l->members > 0 && line_put(l, ",", 1) < 0)
		return -1;
	if (line_put_str(l, key, 0) < 0 || line_put(l, ":", 1) < 0) {
		l->len = start;
		return -1;
	}
	l->members++;
	return 0;
}

/* One member with a string value; 0 whole, 1 value cut short, -1 dropped. */
static int line_member_str(struct log_line *l, const char *key, const char *val)
{
	size_t start = l->len;
	int rc;

	if (line_begin_member(l, key) < 0)
		return -1;
	if (!val)
		rc = line_put(l, "null", 4);
	else
		rc = line_put_str(l, val, 1);
	if (rc < 0) {
		l->len = start;
		l->members--;
	}
	return rc;
}

/* One member whose value is already JSON text; written whole or dropped. */
static int line_member_raw(struct log_line *l, const char *key, const char *val)
{
	size_t start = l->len;

	if (line_begin_member(l, key) < 0)
		return -1;
	if (line_put(l, val, strlen(val)) < 0) {
		l->len = start;
		l->members--;
		return -1;
	}
	return 0;
}

/* A double as JSON: the shortest of %.15g/%.17g that reads back the same. */
static void format_double(double d, char *out, size_t size)
{
	if (!isfinite(d)) {
		/* JSON has no NaN or infinity. */
		snprintf(out, size, "null");
		return;
	}
	snprintf(out, size, "%.15g", d);
	if (strtod(out, NULL) != d)
		snprintf(out, size, "%.17g", d);
}

static void format_ts(char out[96])
{
	struct timespec ts;
	struct tm tm;
	time_t sec;

	clock_gettime(CLOCK_REALTIME, &ts);
	sec = ts.tv_sec;
	gmtime_r(&sec, &tm);
	snprintf(out, 96, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
}

size_t log__format(char *buf, size_t size, enum log_level level, const char *msg,
                   const struct log_field *fields)
{
	/* The reserve: ",<marker>}\n" and the NUL. */
	const size_t reserve = 1 + (sizeof(log_cut_marker) - 1) + 3;
	struct log_line l;
	char ts[96], num[64];
	const char *lvl = "unknown";
	const struct log_field *f;

	if (size == 0)
		return 0;
	if (size < reserve + 2) {
		/* Too small for anything useful; still a valid (empty) object. */
		if (size >= 4) {
			memcpy(buf, "{}\n", 4);
			return 3;
		}
		buf[0] = '\0';
		return 0;
	}
	l.p = buf;
	l.len = 0;
	l.limit = size - reserve;
	l.members = 0;
	l.cut = 0;
	buf[l.len++] = '{';

	if ((unsigned)level < sizeof(log_level_names) / sizeof(log_level_names[0]))
		lvl = log_level_names[level];
	format_ts(ts);
	if (line_member_str(&l, "ts", ts) != 0 || line_member_str(&l, "level", lvl) != 0 ||
	    line_member_str(&l, "service", log_daemon) != 0 ||
	    line_member_str(&l, "msg", msg ? msg : "") != 0) {
		l.cut = 1;
		goto close;
	}
	/* The context first, so that a line cut short still says whose it is. */
	for (int i = 0; i < LOG_CTX_N; i++) {
		if (!log_ctx[i][0] || fields_have(fields, log_ctx_keys[i]))
			continue;
		if (line_member_str(&l, log_ctx_keys[i], log_ctx[i]) != 0) {
			l.cut = 1;
			goto close;
		}
	}
	for (f = fields; f && f->type != LOG_FIELD_END; f++) {
		int rc = 0;

		if (!f->key)
			continue;
		switch (f->type) {
		case LOG_FIELD_STR:
			rc = line_member_str(&l, f->key, f->v.s);
			break;
		case LOG_FIELD_INT:
			snprintf(num, sizeof(num), "%lld", f->v.i);
			rc = line_member_raw(&l, f->key, num);
			break;
		case LOG_FIELD_DBL:
			format_double(f->v.d, num, sizeof(num));
			rc = line_member_raw(&l, f->key, num);
			break;
		default:
			continue;
		}
		if (rc != 0) {
			/* Cut short or dropped: the line is full, later fields go too. */
			l.cut = 1;
			break;
		}
	}
close:
	/* The reserved space is released here and always suffices. */
	l.limit = size - 1;
	if (l.cut) {
		if (l.members > 0)
			buf[l.len++] = ',';
		memcpy(buf + l.len, log_cut_marker, sizeof(log_cut_marker) - 1);
		l.len += sizeof(log_cut_marker) - 1;
	}
	buf[l.len++] = '}';
	buf[l.len++] = '\n';
	buf[l.len] = '\0';
	return l.len;
}

void log__emit(enum log_level level, const char *msg, const struct log_field *fields)
{
	char line[LOG_LINE_MAX];
	size_t n = log__format(line, sizeof(line), level, msg, fields);
	size_t off = 0;

	/*
	 * One write(2) per line keeps lines from different threads whole; the
	 * loop only runs again on a signal or a short write.
	 */
	while (off < n) {
		ssize_t w = write(log_fd, line + off, n - off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		off += (size_t)w;
	}
}
