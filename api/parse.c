/* parse.c: the contract's errors, JSON request bodies and unknown members, as pure functions. */
#include "parse.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

int api_error_set(struct api_error *e, unsigned int status, const char *code, const char *field,
                  const char *fmt, ...)
{
	va_list ap;

	e->status = status;
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	snprintf(e->field, sizeof(e->field), "%s", field ? field : "");
	return ERR_INVALID;
}

json_t *body_parse(const char *data, size_t len, struct api_error *e)
{
	json_error_t jerr;
	json_t *root;

	/* Without JSON_ALLOW_NUL, jansson refuses "\u0000" in strings: every
	 * string the handlers see ends at its first NUL. */
	root = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		api_error_set(e, 400, "malformed_json", NULL, "the request body is not valid JSON");
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		api_error_set(e, 400, "malformed_json", NULL,
		              "the request body must be a JSON object");
		return NULL;
	}
	return root;
}

/* How many bytes of s, at most max, end on a UTF-8 character boundary. */
static size_t utf8_prefix(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);

	if (n <= max)
		return n;
	n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	return n;
}

int fields_only(json_t *obj, const char *path, const char *const *allowed, struct api_error *e)
{
	const char *bad;
	char field[160];
	int n;

	if (json_only_fields(obj, allowed, &bad) == ERR_OK)
		return ERR_OK;
	/* A member's name is valid UTF-8 (jansson checked it) but may be long,
	 * or empty: then the path names it [""], as a field is never empty. */
	n = (int)utf8_prefix(bad, 64);
	if (n == 0)
		snprintf(field, sizeof(field), "%s[\"\"]", path);
	else
		snprintf(field, sizeof(field), "%s%s%.*s", path, *path ? "." : "", n, bad);
	return api_error_set(e, 422, "validation_error", field, "unknown field '%.*s'", n, bad);
}

int query_arg_error(const char *name, struct api_error *e)
{
	char shown[128];
	size_t i, o = 0;

	/* The query string is not checked as UTF-8: the name is shown with its
	 * bytes other than printable ASCII (and '%') percent-encoded, cut short
	 * after 64 bytes (or when the field is full), and as [""] when it is
	 * empty, so that the field is always text JSON can carry and never empty. */
	for (i = 0; name[i] && i < 64 && o + 3 < sizeof(shown); i++) {
		unsigned char c = (unsigned char)name[i];

		if (c > ' ' && c <= '~' && c != '%')
			shown[o++] = (char)c;
		else
			o += (size_t)snprintf(shown + o, sizeof(shown) - o, "%%%02X", c);
	}
	shown[o] = '\0';
	if (!o)
		snprintf(shown, sizeof(shown), "[\"\"]");
	return api_error_set(e, 422, "validation_error", shown, "unknown query parameter '%s'",
	                     shown);
}
