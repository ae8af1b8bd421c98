/*
 * fuzz.h: what the libFuzzer targets share. A broken invariant aborts with
 * its reason, so that libFuzzer saves the input that broke it; log lines
 * are formatted as always but written to /dev/null; an input can be split
 * into NUL-separated fields; and every contract error a parser gives is
 * held to the same rules. Header-only: each target is one translation unit.
 * Not thread-safe (libFuzzer runs one input at a time).
 */
#ifndef ORDERS_FUZZ_H
#define ORDERS_FUZZ_H

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "err.h"
#include "log.h"
#include "parse.h"

/* libFuzzer's entry points. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fixed "now" (2026-06-15T12:00:00Z), so that an input means the same on every run. */
#define FUZZ_NOW ((time_t)1781524800)
#define FUZZ_NOW_MS ((int64_t)FUZZ_NOW * 1000)

static void fuzz_fail(const char *what, const char *file, int line) __attribute__((noreturn));

static void fuzz_fail(const char *what, const char *file, int line)
{
	fprintf(stderr, "fuzz: invariant broken at %s:%d: %s\n", file, line, what);
	abort();
}

/* FUZZ_CHECK - abort when cond is false (also with NDEBUG, unlike assert). */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fuzz_fail(#cond, __FILE__, __LINE__);                                      \
	} while (0)

/* fuzz_quiet_logs - every level formatted (the formatter sees the input too), nothing
 * shown; FUZZ_LOGS=1 shows the lines on stderr, to see why an input was refused. */
static inline void fuzz_quiet_logs(void)
{
	int fd = getenv("FUZZ_LOGS") ? 2 : open("/dev/null", O_WRONLY | O_CLOEXEC);

	log_init("orders-fuzz", LOG_DEBUG);
	if (fd >= 0)
		log_set_fd(fd);
}

/* FUZZ_QUIET_INITIALIZE - LLVMFuzzerInitialize for a target that needs nothing else. */
#define FUZZ_QUIET_INITIALIZE                                                                      \
	int LLVMFuzzerInitialize(int *argc, char ***argv)                                          \
	{                                                                                          \
		(void)argc;                                                                        \
		(void)argv;                                                                        \
		fuzz_quiet_logs();                                                                 \
		return 0;                                                                          \
	}

/* fuzz_utf8 - 1 when s is text jansson takes as a JSON string (valid UTF-8). */
static inline int fuzz_utf8(const char *s)
{
	json_t *j = json_string(s);
	int ok = j != NULL;

	json_decref(j);
	return ok;
}

#define FUZZ_FIELDS_MAX 16

/* An input cut at its NUL bytes; f[i] is NULL for a field the input does not reach. */
struct fuzz_fields {
	char *buf;
	const char *f[FUZZ_FIELDS_MAX];
};

/* fuzz_fields_split - the first n (<= FUZZ_FIELDS_MAX) fields of data; release with free(ff->buf).
 */
static inline void fuzz_fields_split(struct fuzz_fields *ff, const uint8_t *data, size_t size,
                                     size_t n)
{
	size_t i = 0, k;

	memset(ff, 0, sizeof(*ff));
	ff->buf = malloc(size + 1);
	FUZZ_CHECK(ff->buf);
	memcpy(ff->buf, data, size);
	ff->buf[size] = '\0';
	for (k = 0; k < n && i <= size; k++) {
		ff->f[k] = ff->buf + i;
		i += strlen(ff->buf + i) + 1;
	}
}

/* fuzz_json_cstr - a copy of data as a NUL-terminated string (free it). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	FUZZ_CHECK(s);
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/*
 * fuzz_check_error - what every contract error must be: a status and code
 * the contract has, a message and field that are not cut short and that
 * JSON can carry (else respond_error would answer 500 instead), never a
 * field for malformed_json, and one for every other code when
 * field_required (the body parsers always know the field at fault).
 */
static inline void fuzz_check_error(const struct api_error *e, int field_required)
{
	static const char *const codes[] = {"malformed_json", "validation_error", "empty_cart",
	                                    "invalid_card", "cart_not_found"};
	size_t i = 0;
	json_t *doc;

	FUZZ_CHECK(e->status == 400 || e->status == 404 || e->status == 422);
	FUZZ_CHECK(e->code);
	while (i < sizeof(codes) / sizeof(codes[0]) && strcmp(codes[i], e->code) != 0)
		i++;
	FUZZ_CHECK(i < sizeof(codes) / sizeof(codes[0]));
	FUZZ_CHECK((e->status == 400) == (strcmp(e->code, "malformed_json") == 0));
	FUZZ_CHECK(e->message[0] && strlen(e->message) < sizeof(e->message) - 1);
	FUZZ_CHECK(strlen(e->field) < sizeof(e->field) - 1);
	if (e->status == 400)
		FUZZ_CHECK(!e->field[0]);
	else if (field_required)
		FUZZ_CHECK(e->field[0]);
	doc = json_pack("{s:{s:s, s:s, s:s}}", "error", "code", e->code, "message", e->message,
	                "field", e->field);
	FUZZ_CHECK(doc);
	json_decref(doc);
}

#endif
