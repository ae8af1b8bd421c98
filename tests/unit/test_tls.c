/* test_tls.c: PEM files read whole, and CA, certificate and key checks (files made here). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "err.h"
#include "tls.h"

static char dir[64];

/* path of name in the test's directory (one of four rotating buffers). */
static const char *at(const char *name)
{
	static char bufs[4][128];
	static int next;
	char *b = bufs[next++ % 4];

	snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
	return b;
}

static void write_file(const char *name, const void *data, size_t len)
{
	FILE *f = fopen(at(name), "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* A P-256 key in <name>.key (encrypted with pass when given) and a self-signed <name>.pem. */
static void make_pair(const char *name, const char *pass)
{
	char file[64];
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	FILE *f;

	assert_non_null(k);
	assert_non_null(x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                           (const unsigned char *)name, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_set_pubkey(x, k);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	snprintf(file, sizeof(file), "%s.key", name);
	f = fopen(at(file), "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, k, pass ? EVP_aes_256_cbc() : NULL,
	                                      (unsigned char *)pass, pass ? (int)strlen(pass) : 0,
	                                      NULL, NULL),
	                 1);
	fclose(f);
	snprintf(file, sizeof(file), "%s.pem", name);
	f = fopen(at(file), "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, x), 1);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(k);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_tls.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	make_pair("a", NULL);
	make_pair("b", NULL);
	make_pair("locked", "secret");
	return 0;
}

static int teardown(void **state)
{
	static const char *const names[] = {"a.key",      "a.pem", "b.key", "b.pem", "locked.key",
	                                    "locked.pem", "empty", "nul",   "big",   "text"};

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		unlink(at(names[i]));
	rmdir(dir);
	return 0;
}

static void test_read_file(void **state)
{
	char reason[256] = "", *data = (char *)"untouched";
	size_t len = 7;
	static char big[2048];

	(void)state;
	assert_int_equal(
	    tls_read_file(at("a.pem"), TLS_FILE_MAX, &data, &len, reason, sizeof(reason)), ERR_OK);
	assert_true(len > 100);
	assert_int_equal(strlen(data), len);
	assert_non_null(strstr(data, "-----BEGIN CERTIFICATE-----"));
	free(data);

	data = (char *)"untouched";
	len = 7;
	assert_int_equal(
	    tls_read_file(at("missing"), TLS_FILE_MAX, &data, &len, reason, sizeof(reason)),
	    ERR_IO);
	assert_non_null(strstr(reason, "missing': No such file"));
	assert_string_equal(data, "untouched");
	assert_int_equal(len, 7);
	write_file("empty", "", 0);
	assert_int_equal(
	    tls_read_file(at("empty"), TLS_FILE_MAX, &data, &len, reason, sizeof(reason)),
	    ERR_INVALID);
	assert_non_null(strstr(reason, "is empty"));
	write_file("nul", "ab\0cd", 5);
	assert_int_equal(
	    tls_read_file(at("nul"), TLS_FILE_MAX, &data, &len, reason, sizeof(reason)),
	    ERR_INVALID);
	assert_non_null(strstr(reason, "not a PEM file"));
	memset(big, 'x', sizeof(big));
	write_file("big", big, sizeof(big));
	assert_int_equal(tls_read_file(at("big"), 2047, &data, &len, reason, sizeof(reason)),
	                 ERR_TOO_BIG);
	assert_int_equal(tls_read_file(at("big"), 2048, &data, &len, reason, sizeof(reason)),
	                 ERR_OK);
	assert_int_equal(len, 2048);
	free(data);
	assert_int_equal(tls_read_file(dir, TLS_FILE_MAX, &data, &len, reason, sizeof(reason)),
	                 ERR_IO);
	assert_non_null(strstr(reason, "not a regular file"));
}

static void expect_refused(const char *ca, const char *cert, const char *key, const char *want)
{
	char reason[512] = "";

	assert_int_equal(tls_check_files(ca, cert, key, reason, sizeof(reason)), ERR_INVALID);
	if (!strstr(reason, want))
		fail_msg("expected '%s' in '%s'", want, reason);
	/* A reason names files, never their content. */
	assert_null(strstr(reason, "-----BEGIN"));
}

static void test_check_files(void **state)
{
	char reason[512] = "";

	(void)state;
	assert_int_equal(tls_check_files(NULL, NULL, NULL, reason, sizeof(reason)), ERR_OK);
	assert_int_equal(tls_check_files("", "", "", reason, sizeof(reason)), ERR_OK);
	assert_int_equal(
	    tls_check_files(at("a.pem"), at("b.pem"), at("b.key"), reason, sizeof(reason)), ERR_OK);
	assert_int_equal(tls_check_files(NULL, at("a.pem"), at("a.key"), reason, sizeof(reason)),
	                 ERR_OK);

	expect_refused(at("missing.pem"), NULL, NULL, "cannot read '");
	expect_refused(at("a.key"), NULL, NULL, "cannot load the CA file");
	expect_refused(NULL, at("a.pem"), NULL, "needs its key");
	expect_refused(NULL, NULL, at("a.key"), "needs its key");
	expect_refused(NULL, at("a.pem"), at("b.key"), "does not belong to the certificate");
	expect_refused(NULL, at("a.key"), at("a.key"), "cannot load the certificate");
	expect_refused(NULL, at("a.pem"), at("a.pem"), "no PEM private key");
	expect_refused(NULL, at("locked.pem"), at("locked.key"), "encrypted");
	expect_refused(NULL, at("a.pem"), at("missing.key"), "No such file");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_read_file),
	    cmocka_unit_test(test_check_files),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
