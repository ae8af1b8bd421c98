/* netaddr.c: IPv4/IPv6 addresses, network lists and the client behind trusted proxies. */
#include "netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static int is_space(char c)
{
	return c == ' ' || c == '\t';
}

int netaddr_parse(const char *s, size_t n, struct netaddr *out)
{
	char text[NETADDR_TEXT_MAX];
	struct in_addr a4;
	struct in6_addr a6;

	if (!s)
		return ERR_INVALID;
	if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
		if (memchr(s, '.', n) && !memchr(s, ':', n))
			return ERR_INVALID; /* brackets are for IPv6 only */
	}
	if (n == 0 || n >= sizeof(text) || memchr(s, '\0', n))
		return ERR_INVALID;
	memcpy(text, s, n);
	text[n] = '\0';
	if (inet_pton(AF_INET, text, &a4) == 1) {
		memcpy(out->b, v4_mapped, sizeof(v4_mapped));
		memcpy(out->b + 12, &a4, 4);
		return ERR_OK;
	}
	if (inet_pton(AF_INET6, text, &a6) == 1) {
		memcpy(out->b, &a6, NETADDR_BYTES);
		return ERR_OK;
	}
	return ERR_INVALID;
}

int netaddr_from_sockaddr(const struct sockaddr *sa, struct netaddr *out)
{
	if (!sa)
		return ERR_INVALID;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

		memcpy(out->b, v4_mapped, sizeof(v4_mapped));
		memcpy(out->b + 12, &in->sin_addr, 4);
		return ERR_OK;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;

		memcpy(out->b, &in6->sin6_addr, NETADDR_BYTES);
		return ERR_OK;
	}
	return ERR_INVALID;
}

static int is_v4(const struct netaddr *a)
{
	return memcmp(a->b, v4_mapped, sizeof(v4_mapped)) == 0;
}

/* Whether the first bits bits of a and b are equal. */
static int prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned whole = bits / 8, rest = bits % 8;

	if (memcmp(a, b, whole) != 0)
		return 0;
	if (!rest)
		return 1;
	return ((a[whole] ^ b[whole]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

/* One entry "addr" or "addr/prefix" (already trimmed). NULL, or what is wrong. */
static const char *parse_net(const char *s, size_t n, struct netaddr_net *out)
{
	const char *slash = memchr(s, '/', n);
	size_t alen = slash ? (size_t)(slash - s) : n;
	unsigned max, prefix;

	if (netaddr_parse(s, alen, &out->addr) != ERR_OK)
		return "must be a comma-separated list of IPv4 or IPv6 addresses or CIDR networks";
	max = is_v4(&out->addr) ? 32 : 128;
	prefix = max;
	if (slash) {
		const char *p = slash + 1, *end = s + n;

		if (p == end || end - p > 3)
			return "has a CIDR prefix that is not a number of bits";
		for (prefix = 0; p < end; p++) {
			if (*p < '0' || *p > '9')
				return "has a CIDR prefix that is not a number of bits";
			prefix = prefix * 10 + (unsigned)(*p - '0');
		}
		if (prefix > max)
			return "has a CIDR prefix longer than its address";
	}
	out->prefix = max == 32 ? 96 + prefix : prefix;
	/* 10.0.0.1/8 is more likely a typing error than a network. */
	for (unsigned bit = out->prefix; bit < 128; bit++)
		if (out->addr.b[bit / 8] & (0x80 >> (bit % 8)))
			return "has a CIDR network with host bits set";
	return NULL;
}

int netaddr_nets_parse(const char *list, struct netaddr_net *nets, size_t max, size_t *n,
                       const char **what)
{
	const char *p = list;
	size_t count = 0;

	if (!list)
		return ERR_INVALID;
	while (*p) {
		const char *start, *end, *next = strchr(p, ',');
		const char *bad;

		end = next ? next : p + strlen(p);
		start = p;
		while (start < end && is_space(*start))
			start++;
		while (end > start && is_space(end[-1]))
			end--;
		if (start == end) {
			*what = "has an empty entry";
			return ERR_INVALID;
		}
		if (count == max) {
			*what = "has too many entries";
			return ERR_INVALID;
		}
		bad = parse_net(start, (size_t)(end - start), &nets[count]);
		if (bad) {
			*what = bad;
			return ERR_INVALID;
		}
		count++;
		if (!next)
			break;
		p = next + 1;
		if (!*p) {
			*what = "has an empty entry";
			return ERR_INVALID;
		}
	}
	*n = count;
	return ERR_OK;
}

int netaddr_in_nets(const struct netaddr *a, const struct netaddr_net *nets, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (prefix_equal(a->b, nets[i].addr.b, nets[i].prefix))
			return 1;
	return 0;
}

void netaddr_client(const struct netaddr *peer, const char *const *xff, size_t nxff,
                    const struct netaddr_net *trusted, size_t ntrusted, struct netaddr *out)
{
	*out = *peer;
	if (!ntrusted || !netaddr_in_nets(peer, trusted, ntrusted))
		return;
	/* From the right: each trusted hop wrote the address to its left. */
	for (size_t v = nxff; v-- > 0;) {
		const char *s = xff[v];
		size_t end = s ? strlen(s) : 0;

		while (end > 0) {
			size_t start = end, a, b;
			struct netaddr hop;

			while (start > 0 && s[start - 1] != ',')
				start--;
			for (a = start; a < end && is_space(s[a]); a++)
				;
			for (b = end; b > a && is_space(s[b - 1]); b--)
				;
			if (netaddr_parse(s + a, b - a, &hop) != ERR_OK)
				return;
			*out = hop;
			if (!netaddr_in_nets(&hop, trusted, ntrusted))
				return;
			if (start == 0)
				break;
			end = start - 1;
		}
	}
}

void netaddr_format(const struct netaddr *a, char out[NETADDR_TEXT_MAX])
{
	if (is_v4(a))
		inet_ntop(AF_INET, a->b + 12, out, NETADDR_TEXT_MAX);
	else
		inet_ntop(AF_INET6, a->b, out, NETADDR_TEXT_MAX);
}
