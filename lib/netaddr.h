/*
 * netaddr.h: client addresses: IPv4 and IPv6 addresses, lists of networks
 * (ORDERS_TRUSTED_PROXIES) and the client behind trusted proxies
 * (X-Forwarded-For).
 *
 * An address is kept as 16 bytes, IPv4 as its IPv4-mapped IPv6 form
 * (::ffff:a.b.c.d), so that one table holds both kinds. Every function is
 * pure and thread-safe.
 */
#ifndef ORDERS_NETADDR_H
#define ORDERS_NETADDR_H

#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#define NETADDR_BYTES 16
/* The most networks a list may hold. */
#define NETADDR_NETS_MAX 32
/* Text of the longest address, with its NUL (INET6_ADDRSTRLEN). */
#define NETADDR_TEXT_MAX 46

struct netaddr {
	uint8_t b[NETADDR_BYTES];
};

/* An address and the number of leading bits that must match (0..128). */
struct netaddr_net {
	struct netaddr addr;
	unsigned prefix;
};

/*
 * netaddr_parse - the n bytes of s as an IPv4 ("192.0.2.1") or IPv6
 * ("2001:db8::1", also in brackets) address. ERR_OK, or ERR_INVALID for
 * anything else; *out is set only on success.
 */
int netaddr_parse(const char *s, size_t n, struct netaddr *out);

/* netaddr_from_sockaddr - the address of an AF_INET or AF_INET6 socket
 * address; ERR_INVALID for other families or NULL. */
int netaddr_from_sockaddr(const struct sockaddr *sa, struct netaddr *out);

/*
 * netaddr_nets_parse - a comma-separated list of addresses and CIDR
 * networks ("10.0.0.0/16, 192.0.2.7, 2001:db8::/32"; spaces around the
 * entries are allowed, "" is the empty list) into nets (room for max).
 * ERR_OK with *n set; ERR_INVALID with *what saying what is wrong (static
 * text) for a bad entry, or more than max entries; a prefix longer than the
 * address or with host bits set is refused rather than guessed at.
 */
int netaddr_nets_parse(const char *list, struct netaddr_net *nets, size_t max, size_t *n,
                       const char **what);

/* netaddr_in_nets - 1 when a lies in one of the n networks, else 0. */
int netaddr_in_nets(const struct netaddr *a, const struct netaddr_net *nets, size_t n);

/*
 * netaddr_client - the address of the client a request came from. When the
 * peer (the connection's other end) is not among the trusted networks, or
 * there are none, that is the peer itself. Otherwise the request came
 * through trusted proxies, each of which appended the address it received
 * it from to X-Forwarded-For: the client is the rightmost address of the
 * header's values (xff, nxff of them, in the order they arrived) that is not
 * a trusted proxy. Entries left of it are the client's own words and are
 * never used. When the walk meets an entry that is not an address, or runs
 * out, the last trusted hop it passed is taken.
 */
void netaddr_client(const struct netaddr *peer, const char *const *xff, size_t nxff,
                    const struct netaddr_net *trusted, size_t ntrusted, struct netaddr *out);

/* netaddr_format - a as text ("192.0.2.1" for IPv4-mapped addresses) into
 * out, which has room for NETADDR_TEXT_MAX bytes. */
void netaddr_format(const struct netaddr *a, char out[NETADDR_TEXT_MAX]);

#endif
