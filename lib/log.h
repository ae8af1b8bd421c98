/*
 * log.h: structured logging, one JSON object a line on stdout.
 *
 *   log_info("order accepted", LF_STR("order_id", id), LF_INT("lines", n));
 *
 * Each line carries "ts" (RFC 3339, UTC, ms), "level", "service" (the
 * daemon, e.g. "orders-api"), "msg", the calling thread's log context
 * (below) and the fields given. The level is checked before any argument is
 * formatted. Card data cannot be logged: struct card (card.h) has no field
 * helper.
 * Thread-safe: a line is written with one write(2).
 *
 * The log context: whoever handles one request or one message sets its ids
 * once per thread (log_context_set) and clears them when done, and every
 * line the thread writes meanwhile carries "request_id", "message_id" and
 * "order_id" (those that are set), without each call naming them. A field
 * given explicitly in a call wins over the context's field of the same key:
 * a line never has a key twice.
 */
#ifndef ORDERS_LOG_H
#define ORDERS_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

enum log_field_type { LOG_FIELD_END = 0, LOG_FIELD_STR, LOG_FIELD_INT, LOG_FIELD_DBL };

struct log_field {
	const char *key;
	enum log_field_type type;
	union {
		const char *s;
		long long i;
		double d;
	} v;
};

#define LF_STR(k, x) ((struct log_field){.key = (k), .type = LOG_FIELD_STR, .v.s = (x)})
#define LF_INT(k, x) ((struct log_field){.key = (k), .type = LOG_FIELD_INT, .v.i = (long long)(x)})
#define LF_DBL(k, x) ((struct log_field){.key = (k), .type = LOG_FIELD_DBL, .v.d = (double)(x)})
#define LF_END ((struct log_field){.key = 0, .type = LOG_FIELD_END, .v.i = 0})

extern enum log_level log__level;

/* log_init - name the daemon for every line and set the minimum level. */
void log_init(const char *daemon, enum log_level level);

/*
 * log_set_fd - write the lines to fd instead of stdout: a command-line tool
 * keeps stdout for its output and logs to stderr (2). Call it before any
 * thread starts, like log_init.
 */
void log_set_fd(int fd);

/* log_level_parse - "debug", "info", "warn", "error"; ERR_INVALID otherwise. */
int log_level_parse(const char *s, enum log_level *out);

/* The longest id the log context keeps; a longer one is cut to this. */
#define LOG_CONTEXT_ID_MAX 128

/*
 * log_context_set - from now on, every line this thread writes carries
 * request_id, message_id and order_id, until the next log_context_set or
 * log_context_clear on this thread. NULL or "" leaves that field out. The
 * strings are copied (cut at LOG_CONTEXT_ID_MAX bytes), so they need not
 * outlive the call. Replaces the whole context. Per thread: it never
 * affects another thread's lines, and needs no locking.
 */
void log_context_set(const char *request_id, const char *message_id, const char *order_id);

/* log_context_clear - this thread's lines carry no context fields any more. */
void log_context_clear(void);

/*
 * struct log_throttle - keeps the lines about one ongoing condition (a
 * dependency down and retried every few seconds) to one per period, each
 * saying how many were held back, and lets the recovery be said once.
 * Zero-initialise; one owner (a thread, or the caller's lock).
 */
struct log_throttle {
	long long last_ms; /* CLOCK_MONOTONIC ms of the last line let through; 0: none */
	long suppressed;   /* lines held back since */
};

/* log_throttle_due - the condition happened again: 1 when a line is due (the
 * first, or every_s seconds or more after the last one let through), with
 * *suppressed set to the lines held back since; 0 when this one is held
 * back (and counted). */
int log_throttle_due(struct log_throttle *t, int every_s, long *suppressed);

/* log_throttle_clear - the condition is over: 1 when a line about it was let
 * through (so its end is worth a line), with *suppressed set to the lines
 * held back since that one; 0 when it was not active. Resets t. */
int log_throttle_clear(struct log_throttle *t, long *suppressed);

/* Internal: format and write one line. fields ends with LF_END. */
void log__emit(enum log_level level, const char *msg, const struct log_field *fields);

/* log__format - the line log__emit writes, into buf (always NUL-terminated,
 * ends with '\n'; cut short with the JSON still valid when too long).
 * Returns the length. Exposed for tests. */
size_t log__format(char *buf, size_t size, enum log_level level, const char *msg,
                   const struct log_field *fields);

#define LOG__(lvl, msg, ...)                                                                       \
	do {                                                                                       \
		if ((lvl) >= log__level)                                                           \
			log__emit((lvl), (msg), (const struct log_field[]){__VA_ARGS__});          \
	} while (0)

#define log_debug(...) LOG__(LOG_DEBUG, __VA_ARGS__, LF_END)
#define log_info(...) LOG__(LOG_INFO, __VA_ARGS__, LF_END)
#define log_warn(...) LOG__(LOG_WARN, __VA_ARGS__, LF_END)
#define log_error(...) LOG__(LOG_ERROR, __VA_ARGS__, LF_END)
/* log_at - a line at a level chosen at run time. */
#define log_at(lvl, ...) LOG__((lvl), __VA_ARGS__, LF_END)

#endif
