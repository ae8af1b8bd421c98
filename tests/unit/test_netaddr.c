/* test_netaddr.c: addresses, network lists, and the client behind trusted proxies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "err.h"
#include "netaddr.h"

static struct netaddr addr(const char *s)
{
	struct netaddr a;

	if (netaddr_parse(s, strlen(s), &a) != ERR_OK)
		fail_msg("'%s' does not parse", s);
	return a;
}

static void expect_text(const struct netaddr *a, const char *want)
{
	char text[NETADDR_TEXT_MAX];

	netaddr_format(a, text);
	assert_string_equal(text, want);
}

static void test_parse(void **state)
{
	static const char *const bad[] = {"",         "1.2.3",      "1.2.3.4.5",   "256.1.1.1",
	                                  "1.2.3.4 ", " 1.2.3.4",   "::g",         "[1.2.3.4]",
	                                  "[::1",     "1.2.3.4:80", "example.org", "[]"};
	struct netaddr a, b;

	(void)state;
	a = addr("192.0.2.7");
	expect_text(&a, "192.0.2.7");
	a = addr("2001:db8::1");
	expect_text(&a, "2001:db8::1");
	b = addr("[2001:db8::1]");
	assert_memory_equal(&a, &b, sizeof(a));
	/* IPv4 and its mapped IPv6 form are one address. */
	a = addr("10.1.2.3");
	b = addr("::ffff:10.1.2.3");
	assert_memory_equal(&a, &b, sizeof(a));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (netaddr_parse(bad[i], strlen(bad[i]), &a) == ERR_OK)
			fail_msg("'%s' parsed", bad[i]);
	/* Only n bytes count, and an embedded NUL is refused. */
	assert_int_equal(netaddr_parse("10.0.0.1xyz", 8, &a), ERR_OK);
	expect_text(&a, "10.0.0.1");
	assert_int_equal(netaddr_parse("10.0\0.0.1", 9, &a), ERR_INVALID);
	assert_int_equal(netaddr_parse(NULL, 0, &a), ERR_INVALID);
}

static void test_sockaddr(void **state)
{
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
	struct sockaddr other;
	struct netaddr a;

	(void)state;
	memset(&in4, 0, sizeof(in4));
	in4.sin_family = AF_INET;
	inet_pton(AF_INET, "203.0.113.9", &in4.sin_addr);
	assert_int_equal(netaddr_from_sockaddr((struct sockaddr *)&in4, &a), ERR_OK);
	expect_text(&a, "203.0.113.9");
	memset(&in6, 0, sizeof(in6));
	in6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8::5", &in6.sin6_addr);
	assert_int_equal(netaddr_from_sockaddr((struct sockaddr *)&in6, &a), ERR_OK);
	expect_text(&a, "2001:db8::5");
	memset(&other, 0, sizeof(other));
	other.sa_family = AF_UNIX;
	assert_int_equal(netaddr_from_sockaddr(&other, &a), ERR_INVALID);
	assert_int_equal(netaddr_from_sockaddr(NULL, &a), ERR_INVALID);
}

static void test_nets(void **state)
{
	struct netaddr_net nets[NETADDR_NETS_MAX];
	const char *what = NULL;
	struct netaddr a;
	size_t n = 99;

	(void)state;
	assert_int_equal(netaddr_nets_parse("", nets, NETADDR_NETS_MAX, &n, &what), ERR_OK);
	assert_int_equal(n, 0);
	a = addr("10.0.0.1");
	assert_false(netaddr_in_nets(&a, nets, n));

	assert_int_equal(netaddr_nets_parse("10.0.0.0/16, 192.0.2.7 ,2001:db8::/32,0.0.0.0/0", nets,
	                                    NETADDR_NETS_MAX, &n, &what),
	                 ERR_OK);
	assert_int_equal(n, 4);
	/* Without the catch-all. */
	n = 3;
	a = addr("10.0.255.255");
	assert_true(netaddr_in_nets(&a, nets, n));
	a = addr("10.1.0.0");
	assert_false(netaddr_in_nets(&a, nets, n));
	a = addr("192.0.2.7");
	assert_true(netaddr_in_nets(&a, nets, n));
	a = addr("192.0.2.8");
	assert_false(netaddr_in_nets(&a, nets, n));
	a = addr("2001:db8:ffff::1");
	assert_true(netaddr_in_nets(&a, nets, n));
	a = addr("2001:db9::1");
	assert_false(netaddr_in_nets(&a, nets, n));
	/* 0.0.0.0/0 is every IPv4 address, and no IPv6 one. */
	a = addr("203.0.113.1");
	assert_true(netaddr_in_nets(&a, nets + 3, 1));
	a = addr("2001:db8::1");
	assert_false(netaddr_in_nets(&a, nets + 3, 1));
	/* Odd prefixes match bit by bit. */
	assert_int_equal(netaddr_nets_parse("172.16.0.0/12", nets, 1, &n, &what), ERR_OK);
	a = addr("172.31.255.1");
	assert_true(netaddr_in_nets(&a, nets, n));
	a = addr("172.32.0.1");
	assert_false(netaddr_in_nets(&a, nets, n));
}

static void test_bad_nets(void **state)
{
	static const char *const bad[] = {
	    "10.0.0.0/33",   "10.0.0.1/8",     "10.0.0.0/", "10.0.0.0/x",
	    "10.0.0.0/1000", ",10.0.0.1",      "10.0.0.1,", "10.0.0.1,,1.2.3.4",
	    "nope",          "2001:db8::/129", " , "};
	struct netaddr_net nets[2];
	const char *what;
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		what = NULL;
		if (netaddr_nets_parse(bad[i], nets, 2, &n, &what) != ERR_INVALID)
			fail_msg("'%s' was taken", bad[i]);
		assert_non_null(what);
	}
	assert_int_equal(netaddr_nets_parse("1.1.1.1,2.2.2.2,3.3.3.3", nets, 2, &n, &what),
	                 ERR_INVALID);
	assert_string_equal(what, "has too many entries");
}

static void expect_client(const char *peer, const char *const *xff, size_t nxff,
                          const char *trusted, const char *want)
{
	struct netaddr_net nets[NETADDR_NETS_MAX];
	struct netaddr p = addr(peer), got;
	const char *what;
	size_t n;

	assert_int_equal(netaddr_nets_parse(trusted, nets, NETADDR_NETS_MAX, &n, &what), ERR_OK);
	netaddr_client(&p, xff, nxff, nets, n, &got);
	expect_text(&got, want);
}

static void test_client(void **state)
{
	static const char *const one[] = {"203.0.113.5"};
	static const char *const spoofed[] = {"1.1.1.1, 203.0.113.5"};
	static const char *const chain[] = {"1.1.1.1, 203.0.113.5, 10.0.1.9"};
	static const char *const split[] = {"1.1.1.1", "203.0.113.5", "10.0.1.9 "};
	static const char *const garbage[] = {"1.1.1.1, bogus, 10.0.1.9"};
	static const char *const all_trusted[] = {"10.0.3.3, 10.0.1.9"};
	static const char *const v6[] = {"[2001:db8::7]"};
	static const char *const empty[] = {""};

	(void)state;
	/* No trusted proxies: the peer, whatever the header says. */
	expect_client("198.51.100.1", spoofed, 1, "", "198.51.100.1");
	/* A peer that is not trusted: its header is not believed. */
	expect_client("198.51.100.1", spoofed, 1, "10.0.0.0/16", "198.51.100.1");
	/* A trusted proxy: the rightmost untrusted entry, not what the client wrote. */
	expect_client("10.0.0.2", one, 1, "10.0.0.0/16", "203.0.113.5");
	expect_client("10.0.0.2", spoofed, 1, "10.0.0.0/16", "203.0.113.5");
	expect_client("10.0.0.2", chain, 1, "10.0.0.0/16", "203.0.113.5");
	/* Several header fields are one list, in order. */
	expect_client("10.0.0.2", split, 3, "10.0.0.0/16", "203.0.113.5");
	/* Garbage stops the walk at the last trusted hop. */
	expect_client("10.0.0.2", garbage, 1, "10.0.0.0/16", "10.0.1.9");
	/* Only trusted hops, or no header: the leftmost, or the peer. */
	expect_client("10.0.0.2", all_trusted, 1, "10.0.0.0/16", "10.0.3.3");
	expect_client("10.0.0.2", NULL, 0, "10.0.0.0/16", "10.0.0.2");
	expect_client("10.0.0.2", empty, 1, "10.0.0.0/16", "10.0.0.2");
	expect_client("10.0.0.2", v6, 1, "10.0.0.0/16", "2001:db8::7");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse),  cmocka_unit_test(test_sockaddr),
	    cmocka_unit_test(test_nets),   cmocka_unit_test(test_bad_nets),
	    cmocka_unit_test(test_client),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
