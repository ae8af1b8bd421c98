/* cache_url.c: ORDERS_REDIS_URL taken apart (redis:// and rediss://, user and password). */
#include "cache.h"

#include "err.h"
#include "seal.h"
#include "strnum.h"

#include <stdint.h>
#include <string.h>

#define CACHE_STR(x) #x
#define CACHE_XSTR(x) CACHE_STR(x)
#define CACHE_DEFAULT_HOST "127.0.0.1"
#define CACHE_DEFAULT_PORT 6379
/* Redis's own ceiling on "databases" is configurable; this only stops junk. */
#define CACHE_DB_MAX 65535

static int host_char_ok(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '.' || ch == '-' || ch == '_';
}

/* RFC 3986's unreserved and sub-delims: what user info may hold unencoded. */
static int userinfo_char_ok(char ch)
{
	return host_char_ok(ch) || (ch && strchr("~!$&'()*+,;=", ch));
}

/*
 * Percent-decode s[0..n) into out (max bytes and a NUL), ':' allowed
 * unencoded when colon_ok. NULL on success, else what is wrong.
 */
static const char *decode_userinfo(const char *s, size_t n, int colon_ok, char *out, size_t max,
                                   const char *too_long)
{
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		char ch = s[i];

		if (ch == '%') {
			char hex[3] = {0};
			uint8_t byte;

			if (i + 2 < n)
				memcpy(hex, s + i + 1, 2);
			if (seal_hex_decode(hex, &byte, 1) != ERR_OK)
				return "has a '%' that is not followed by two hex digits";
			ch = (char)byte;
			if (ch == '\0')
				return "has a %00 in its user or password";
			i += 2;
		} else if (!userinfo_char_ok(ch) && !(colon_ok && ch == ':')) {
			return "has a character in its user or password that must be "
			       "percent-encoded (%XX)";
		}
		if (o == max)
			return too_long;
		out[o++] = ch;
	}
	out[o] = '\0';
	return NULL;
}

/* "[user]:password" of s[0..n) into u; NULL on success, else what is wrong. */
static const char *parse_userinfo(const char *s, size_t n, struct cache_url *u)
{
	const char *colon = memchr(s, ':', n);
	const char *why;

	if (!colon)
		return "has user info without a ':' (write redis://[user]:password@host)";
	why = decode_userinfo(s, (size_t)(colon - s), 0, u->user, CACHE_USER_MAX,
	                      "has a user longer than " CACHE_XSTR(CACHE_USER_MAX) " bytes");
	if (why)
		return why;
	why = decode_userinfo(
	    colon + 1, n - (size_t)(colon + 1 - s), 1, u->password, CACHE_PASSWORD_MAX,
	    "has a password longer than " CACHE_XSTR(CACHE_PASSWORD_MAX) " bytes");
	if (why)
		return why;
	if (!u->password[0])
		return "has an empty password (leave out the user info for no AUTH)";
	return NULL;
}

/* The host (and port and db) part of a URL, after the user info. */
static const char *parse_hostpart(const char *p, struct cache_url *u)
{
	const char *start;
	size_t n;
	long v;

	if (*p == '[') {
		start = ++p;
		while (*p && *p != ']') {
			if (!host_char_ok(*p) && *p != ':')
				return "has a bad IPv6 address";
			p++;
		}
		if (*p != ']' || p == start)
			return "has a bad IPv6 address";
		n = (size_t)(p - start);
		p++;
	} else {
		start = p;
		while (host_char_ok(*p))
			p++;
		n = (size_t)(p - start);
	}
	if (n >= CACHE_HOST_MAX)
		return "has a host name longer than 255 characters";
	if (n == 0) {
		memcpy(u->host, CACHE_DEFAULT_HOST, sizeof(CACHE_DEFAULT_HOST));
	} else {
		memcpy(u->host, start, n);
		u->host[n] = '\0';
	}
	if (*p == ':') {
		start = ++p;
		while (*p && *p != '/')
			p++;
		if (strnum_parse(start, (size_t)(p - start), 9, 1, 65535, &v) != ERR_OK)
			return "has a port that is not a number from 1 to 65535";
		u->port = (int)v;
	}
	if (*p == '/') {
		start = ++p;
		while (*p >= '0' && *p <= '9')
			p++;
		/* "redis://host:port/" means db 0. */
		if (p > start) {
			if (strnum_parse(start, (size_t)(p - start), 9, 0, CACHE_DB_MAX, &v) !=
			    ERR_OK)
				return "has a database that is not a number from 0 to 65535";
			u->db = (int)v;
		}
	}
	if (*p)
		return "has something after host:port/db that is not understood (a query, a "
		       "fragment, a character a host name cannot have?)";
	return NULL;
}

int cache_url_parse(const char *url, struct cache_url *out, const char **why)
{
	struct cache_url u;
	const char *p, *at, *what;
	size_t n;

	memset(&u, 0, sizeof(u));
	u.port = CACHE_DEFAULT_PORT;
	if (!url) {
		what = "is not set";
		goto bad;
	}
	if (strncmp(url, "redis://", 8) == 0) {
		p = url + 8;
	} else if (strncmp(url, "rediss://", 9) == 0) {
		p = url + 9;
		u.tls = 1;
	} else {
		what = "must start with redis:// or rediss://";
		goto bad;
	}
	/* A user or password writes '@' (and '/') encoded, so the first '@' ends them. */
	n = strcspn(p, "@/");
	at = p[n] == '@' ? p + n : NULL;
	if (at) {
		what = parse_userinfo(p, n, &u);
		if (what)
			goto bad;
		p = at + 1;
	}
	what = parse_hostpart(p, &u);
	if (what)
		goto bad;
	*out = u;
	explicit_bzero(&u, sizeof(u));
	return ERR_OK;
bad:
	explicit_bzero(&u, sizeof(u));
	if (why)
		*why = what;
	return ERR_INVALID;
}
