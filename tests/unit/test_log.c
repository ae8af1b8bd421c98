/* test_log.c: log lines are valid, bounded JSON with the right members. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Parse a formatted line; fails the test when it is not a JSON object. */
static json_t *parse_line(const char *line, size_t len)
{
	json_error_t e;
	json_t *j;

	assert_true(len > 0);
	assert_int_equal(strlen(line), len);
	assert_int_equal(line[len - 1], '\n');
	j = json_loads(line, 0, &e);
	if (!j)
		fail_msg("not JSON (%s): %s", e.text, line);
	assert_true(json_is_object(j));
	return j;
}

static const char *get_str(json_t *j, const char *key)
{
	json_t *v = json_object_get(j, key);

	assert_non_null(v);
	assert_true(json_is_string(v));
	return json_string_value(v);
}

static void test_default_level(void **state)
{
	(void)state;
	/* Runs before any log_init(). */
	assert_int_equal(log__level, LOG_INFO);
}

static void test_basic_members(void **state)
{
	char line[8192];
	struct log_field f[] = {LF_STR("order_id", "o-1"), LF_INT("lines", 3),
	                        LF_INT("min", LLONG_MIN),  LF_INT("max", LLONG_MAX),
	                        LF_DBL("ratio", 0.1),      LF_DBL("half", -2.5),
	                        LF_STR("none", NULL),      LF_END};
	const char *ts;
	size_t n;
	json_t *j;

	(void)state;
	log_init("orders-api", LOG_INFO);
	n = log__format(line, sizeof(line), LOG_WARN, "order accepted", f);
	j = parse_line(line, n);
	assert_int_equal(line[0], '{');
	assert_non_null(strstr(line, "{\"ts\":\""));
	ts = get_str(j, "ts");
	assert_int_equal(strlen(ts), 24);
	assert_int_equal(ts[4], '-');
	assert_int_equal(ts[10], 'T');
	assert_int_equal(ts[19], '.');
	assert_int_equal(ts[23], 'Z');
	assert_string_equal(get_str(j, "level"), "warn");
	assert_string_equal(get_str(j, "service"), "orders-api");
	assert_string_equal(get_str(j, "msg"), "order accepted");
	assert_string_equal(get_str(j, "order_id"), "o-1");
	assert_int_equal(json_integer_value(json_object_get(j, "lines")), 3);
	assert_true(json_integer_value(json_object_get(j, "min")) == LLONG_MIN);
	assert_true(json_integer_value(json_object_get(j, "max")) == LLONG_MAX);
	assert_true(json_real_value(json_object_get(j, "ratio")) == 0.1);
	assert_true(json_real_value(json_object_get(j, "half")) == -2.5);
	assert_true(json_is_null(json_object_get(j, "none")));
	assert_null(json_object_get(j, "truncated"));
	assert_non_null(strstr(line, "\"ratio\":0.1,"));
	json_decref(j);
}

static void test_levels_named(void **state)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	struct log_field f[] = {LF_END};
	char line[512];
	int i;

	(void)state;
	for (i = LOG_DEBUG; i <= LOG_ERROR; i++) {
		size_t n = log__format(line, sizeof(line), (enum log_level)i, "m", f);
		json_t *j = parse_line(line, n);

		assert_string_equal(get_str(j, "level"), names[i]);
		json_decref(j);
	}
}

static void test_non_finite_doubles(void **state)
{
	struct log_field f[] = {LF_DBL("nan", 0.0 / 0.0), LF_DBL("inf", 1.0 / 0.0),
	                        LF_DBL("big", 1e300), LF_END};
	char line[512];
	size_t n;
	json_t *j;

	(void)state;
	n = log__format(line, sizeof(line), LOG_INFO, "m", f);
	j = parse_line(line, n);
	assert_true(json_is_null(json_object_get(j, "nan")));
	assert_true(json_is_null(json_object_get(j, "inf")));
	assert_true(json_real_value(json_object_get(j, "big")) == 1e300);
	json_decref(j);
}

static void test_escaping(void **state)
{
	const char *nasty = "q\"b\\s/\n\t\x01\x1f\x7f caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
	struct log_field f[] = {LF_STR("v", nasty), LF_STR("k\"ey\n", "x"), LF_END};
	char line[1024];
	size_t n;
	json_t *j;

	(void)state;
	n = log__format(line, sizeof(line), LOG_INFO, "say \"hi\"\r\n", f);
	j = parse_line(line, n);
	assert_string_equal(get_str(j, "msg"), "say \"hi\"\r\n");
	assert_string_equal(get_str(j, "v"), nasty);
	assert_string_equal(get_str(j, "k\"ey\n"), "x");
	/* Control characters are written as \u00XX, never raw. */
	assert_non_null(strstr(line, "\\u0001"));
	assert_non_null(strstr(line, "\\u001f"));
	assert_non_null(strstr(line, "\\u000a"));
	assert_non_null(strstr(line, "\\u000d"));
	assert_non_null(strstr(line, "\\\"hi\\\""));
	assert_non_null(strstr(line, "b\\\\s"));
	for (size_t i = 0; i < n - 1; i++)
		assert_true((unsigned char)line[i] >= 0x20);
	json_decref(j);
}

static void test_invalid_utf8_replaced(void **state)
{
	/* A lone continuation byte, a truncated sequence, an overlong form, a surrogate. */
	struct log_field f[] = {LF_STR("v", "a\x80"
	                                    "b\xc3"
	                                    "c\xc0\xaf"
	                                    "d\xed\xa0\x80"
	                                    "e\xff"),
	                        LF_END};
	char line[512];
	size_t n;
	json_t *j;
	const char *v;

	(void)state;
	n = log__format(line, sizeof(line), LOG_INFO, "m", f);
	j = parse_line(line, n);
	v = get_str(j, "v");
	assert_non_null(strstr(v, "a\xef\xbf\xbd"
	                          "b\xef\xbf\xbd"
	                          "c"));
	assert_non_null(strstr(v, "e\xef\xbf\xbd"));
	json_decref(j);
}

static void test_long_value_truncated(void **state)
{
	char line[8192];
	char *big = malloc(20001);
	struct log_field f[3];
	const char *v;
	size_t n;
	json_t *j;

	(void)state;
	assert_non_null(big);
	memset(big, 'a', 20000);
	big[20000] = '\0';
	f[0] = LF_STR("reason", big);
	f[1] = LF_INT("after", 7);
	f[2] = LF_END;
	n = log__format(line, sizeof(line), LOG_ERROR, "cannot connect", f);
	assert_true(n < sizeof(line));
	assert_true(n > 8000);
	j = parse_line(line, n);
	v = get_str(j, "reason");
	assert_true(strlen(v) > 7900);
	assert_memory_equal(v, big, strlen(v));
	assert_true(json_is_true(json_object_get(j, "truncated")));
	/* Fields after the cut are dropped, never half-written. */
	assert_null(json_object_get(j, "after"));
	assert_string_equal(get_str(j, "msg"), "cannot connect");
	json_decref(j);
	free(big);
}

static void test_every_size_gives_valid_json(void **state)
{
	/* Multi-byte characters and escapes at every possible cut point. */
	const char *val = "\xc3\xa9\"\x01\xe2\x82\xac\\x\xf0\x9f\x98\x80\n";
	char valbuf[400] = "";
	struct log_field f[4];
	char line[700];
	size_t size;

	(void)state;
	while (strlen(valbuf) + strlen(val) < sizeof(valbuf))
		strcat(valbuf, val);
	f[0] = LF_STR("a", valbuf);
	f[1] = LF_INT("n", 12345);
	f[2] = LF_STR("b", valbuf);
	f[3] = LF_END;
	for (size = 0; size <= sizeof(line); size++) {
		char *out = malloc(size ? size : 1);
		size_t n;

		assert_non_null(out);
		n = log__format(out, size, LOG_INFO, "m\xc3\xa9s\"sage", f);
		if (size == 0) {
			assert_int_equal(n, 0);
		} else {
			assert_true(n < size);
			assert_int_equal(out[n], '\0');
		}
		if (size >= 4) {
			json_t *j = parse_line(out, n);

			json_decref(j);
		}
		free(out);
	}
}

static void test_level_parse(void **state)
{
	enum log_level l = LOG_ERROR;

	(void)state;
	assert_int_equal(log_level_parse("debug", &l), ERR_OK);
	assert_int_equal(l, LOG_DEBUG);
	assert_int_equal(log_level_parse("info", &l), ERR_OK);
	assert_int_equal(l, LOG_INFO);
	assert_int_equal(log_level_parse("warn", &l), ERR_OK);
	assert_int_equal(l, LOG_WARN);
	assert_int_equal(log_level_parse("error", &l), ERR_OK);
	assert_int_equal(l, LOG_ERROR);
	assert_int_equal(log_level_parse("INFO", &l), ERR_INVALID);
	assert_int_equal(log_level_parse("warning", &l), ERR_INVALID);
	assert_int_equal(log_level_parse("", &l), ERR_INVALID);
	assert_int_equal(log_level_parse(NULL, &l), ERR_INVALID);
	assert_int_equal(l, LOG_ERROR); /* untouched on error */
}

/* Run log calls with stdout redirected to a pipe; returns what was written. */
static size_t capture(char *out, size_t size, void (*fn)(void))
{
	int p[2], saved;
	ssize_t r;
	size_t n = 0;

	fflush(stdout);
	assert_int_equal(pipe(p), 0);
	saved = dup(STDOUT_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(p[1], STDOUT_FILENO) >= 0);
	fn();
	assert_true(dup2(saved, STDOUT_FILENO) >= 0);
	close(saved);
	close(p[1]);
	while (n + 1 < size && (r = read(p[0], out + n, size - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(p[0]);
	return n;
}

static void emit_some(void)
{
	log_init("orders-inventory", LOG_INFO);
	log_debug("hidden", LF_STR("x", "y"));
	log_info("shown", LF_STR("sku", "A-1"), LF_INT("qty", 2));
	log_error("also shown");
}

static void test_emit_to_stdout(void **state)
{
	char out[16384];
	char *second, *end;
	json_t *j;

	(void)state;
	assert_true(capture(out, sizeof(out), emit_some) > 0);
	/* Exactly two lines: debug is below the level. */
	second = strchr(out, '\n');
	assert_non_null(second);
	*second++ = '\0';
	end = strchr(second, '\n');
	assert_non_null(end);
	assert_int_equal(end[1], '\0');

	j = json_loads(out, 0, NULL);
	assert_non_null(j);
	assert_string_equal(get_str(j, "msg"), "shown");
	assert_string_equal(get_str(j, "level"), "info");
	assert_string_equal(get_str(j, "service"), "orders-inventory");
	assert_string_equal(get_str(j, "sku"), "A-1");
	assert_int_equal(json_integer_value(json_object_get(j, "qty")), 2);
	json_decref(j);

	j = json_loads(second, 0, NULL);
	assert_non_null(j);
	assert_string_equal(get_str(j, "msg"), "also shown");
	assert_string_equal(get_str(j, "level"), "error");
	json_decref(j);
}

static void emit_debug_on(void)
{
	log_init("d", LOG_DEBUG);
	log_debug("now visible");
	log_init("d", LOG_INFO);
}

static void test_debug_level(void **state)
{
	char out[4096];

	(void)state;
	capture(out, sizeof(out), emit_debug_on);
	assert_non_null(strstr(out, "\"level\":\"debug\""));
	assert_non_null(strstr(out, "now visible"));
}

/* Format one line with fields, parse it refusing duplicate keys. */
static json_t *format_strict(char *line, size_t size, const struct log_field *fields)
{
	json_error_t e;
	size_t n = log__format(line, size, LOG_INFO, "handling", fields);
	json_t *j;

	assert_true(n > 0);
	j = json_loads(line, JSON_REJECT_DUPLICATES, &e);
	if (!j)
		fail_msg("not JSON without duplicate keys (%s): %s", e.text, line);
	return j;
}

/* How often needle occurs in s. */
static int count_of(const char *s, const char *needle)
{
	int n = 0;

	while ((s = strstr(s, needle)) != NULL) {
		n++;
		s += strlen(needle);
	}
	return n;
}

static void test_context_fields(void **state)
{
	char line[8192];
	struct log_field f[] = {LF_STR("sku", "A-1"), LF_END};
	json_t *j;

	(void)state;
	log_init("orders-api", LOG_INFO);
	log_context_set("req-1", "msg-1", "ord-1");
	j = format_strict(line, sizeof(line), f);
	assert_string_equal(get_str(j, "request_id"), "req-1");
	assert_string_equal(get_str(j, "message_id"), "msg-1");
	assert_string_equal(get_str(j, "order_id"), "ord-1");
	assert_string_equal(get_str(j, "sku"), "A-1");
	json_decref(j);

	/* NULL and "" leave a field out; set replaces the whole context. */
	log_context_set("req-2", NULL, "");
	j = format_strict(line, sizeof(line), f);
	assert_string_equal(get_str(j, "request_id"), "req-2");
	assert_null(json_object_get(j, "message_id"));
	assert_null(json_object_get(j, "order_id"));
	json_decref(j);

	log_context_clear();
	j = format_strict(line, sizeof(line), f);
	assert_null(json_object_get(j, "request_id"));
	assert_null(json_object_get(j, "message_id"));
	assert_null(json_object_get(j, "order_id"));
	json_decref(j);
}

static void test_context_explicit_wins(void **state)
{
	char line[8192];
	struct log_field f[] = {LF_STR("request_id", "explicit"), LF_STR("order_id", NULL),
	                        LF_INT("n", 1), LF_END};
	json_t *j;

	(void)state;
	log_context_set("from-context", "m-1", "o-1");
	j = format_strict(line, sizeof(line), f);
	assert_string_equal(get_str(j, "request_id"), "explicit");
	/* An explicit null still wins: the call said what it meant. */
	assert_true(json_is_null(json_object_get(j, "order_id")));
	assert_string_equal(get_str(j, "message_id"), "m-1");
	assert_int_equal(count_of(line, "\"request_id\""), 1);
	assert_int_equal(count_of(line, "\"order_id\""), 1);
	assert_null(strstr(line, "from-context"));
	json_decref(j);
	log_context_clear();
}

static void test_context_copied_and_cut(void **state)
{
	char line[8192], id[300];
	json_t *j;

	(void)state;
	memset(id, 'r', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	log_context_set(id, "m", "o");
	/* The caller's buffer may change or go away: the context kept a copy. */
	memset(id, 'x', 10);
	j = format_strict(line, sizeof(line), NULL);
	assert_int_equal(strlen(get_str(j, "request_id")), LOG_CONTEXT_ID_MAX);
	assert_int_equal(get_str(j, "request_id")[0], 'r');
	json_decref(j);

	/* Cut short with the context in it, the line is still valid JSON. */
	for (size_t size = 1; size < 400; size++) {
		size_t n = log__format(line, size, LOG_INFO, "handling", NULL);

		if (size >= 4) {
			json_t *k = json_loads(line, JSON_REJECT_DUPLICATES, NULL);

			if (!k)
				fail_msg("size %zu: not JSON: %s", size, line);
			json_decref(k);
		}
		assert_true(n < size);
	}
	log_context_clear();
}

static void *other_thread(void *arg)
{
	char *line = arg;

	/* This thread never set a context: it must not see the other's. */
	log__format(line, 8192, LOG_INFO, "elsewhere", NULL);
	log_context_set("thread-req", NULL, NULL);
	return NULL;
}

static void test_context_per_thread(void **state)
{
	char line[8192], theirs[8192];
	pthread_t t;
	json_t *j;

	(void)state;
	log_context_set("main-req", NULL, "main-order");
	assert_int_equal(pthread_create(&t, NULL, other_thread, theirs), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	j = json_loads(theirs, JSON_REJECT_DUPLICATES, NULL);
	assert_non_null(j);
	assert_null(json_object_get(j, "request_id"));
	assert_null(json_object_get(j, "order_id"));
	json_decref(j);
	/* Nor did the other thread's set change this one's. */
	j = format_strict(line, sizeof(line), NULL);
	assert_string_equal(get_str(j, "request_id"), "main-req");
	assert_string_equal(get_str(j, "order_id"), "main-order");
	json_decref(j);
	log_context_clear();
}

static void emit_with_context(void)
{
	log_init("orders-order", LOG_INFO);
	log_context_set("req-9", "msg-9", "ord-9");
	log_info("message processed", LF_STR("outcome", "noop"));
	log_context_clear();
	log_info("idle");
}

static void test_context_emitted(void **state)
{
	char out[16384];
	char *second;
	json_t *j;

	(void)state;
	assert_true(capture(out, sizeof(out), emit_with_context) > 0);
	second = strchr(out, '\n');
	assert_non_null(second);
	*second++ = '\0';
	j = json_loads(out, JSON_REJECT_DUPLICATES, NULL);
	assert_non_null(j);
	assert_string_equal(get_str(j, "request_id"), "req-9");
	assert_string_equal(get_str(j, "message_id"), "msg-9");
	assert_string_equal(get_str(j, "order_id"), "ord-9");
	assert_string_equal(get_str(j, "outcome"), "noop");
	json_decref(j);
	j = json_loads(second, 0, NULL);
	assert_non_null(j);
	assert_string_equal(get_str(j, "msg"), "idle");
	assert_null(json_object_get(j, "request_id"));
	json_decref(j);
}

/* One line per period about an ongoing condition, the rest counted; its end said once. */
static void test_throttle(void **state)
{
	struct log_throttle t = {0};
	long n = -1;
	int i;
	(void)state;

	assert_int_equal(log_throttle_clear(&t, &n), 0); /* nothing to recover from */
	assert_int_equal(log_throttle_due(&t, 60, &n), 1);
	assert_int_equal(n, 0);
	for (i = 0; i < 5; i++)
		assert_int_equal(log_throttle_due(&t, 60, &n), 0);
	assert_int_equal(log_throttle_clear(&t, &n), 1);
	assert_int_equal(n, 5);
	/* Over: the next occurrence is a new condition, said at once. */
	assert_int_equal(log_throttle_clear(&t, &n), 0);
	assert_int_equal(log_throttle_due(&t, 60, &n), 1);
	assert_int_equal(n, 0);
	assert_int_equal(log_throttle_due(&t, 60, &n), 0);
	assert_int_equal(log_throttle_due(&t, 60, &n), 0);
	/* Once the period has passed, a line again, with the count. */
	usleep(1100 * 1000);
	assert_int_equal(log_throttle_due(&t, 1, &n), 1);
	assert_int_equal(n, 2);
	assert_int_equal(log_throttle_due(&t, 1, &n), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_default_level),
	    cmocka_unit_test(test_basic_members),
	    cmocka_unit_test(test_levels_named),
	    cmocka_unit_test(test_non_finite_doubles),
	    cmocka_unit_test(test_escaping),
	    cmocka_unit_test(test_invalid_utf8_replaced),
	    cmocka_unit_test(test_long_value_truncated),
	    cmocka_unit_test(test_every_size_gives_valid_json),
	    cmocka_unit_test(test_level_parse),
	    cmocka_unit_test(test_emit_to_stdout),
	    cmocka_unit_test(test_debug_level),
	    cmocka_unit_test(test_context_fields),
	    cmocka_unit_test(test_context_explicit_wins),
	    cmocka_unit_test(test_context_copied_and_cut),
	    cmocka_unit_test(test_context_per_thread),
	    cmocka_unit_test(test_context_emitted),
	    cmocka_unit_test(test_throttle),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
