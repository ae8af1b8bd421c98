/* tls.c: PEM files read whole, and certificates and keys checked before the daemons use them. */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "err.h"

int tls_read_file(const char *path, size_t max, char **out, size_t *len, char *reason, size_t size)
{
	struct stat st;
	char ebuf[128];
	char *data = NULL;
	size_t want, got = 0;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(reason, size, "cannot open '%s': %s", path,
		         strerror_r(errno, ebuf, sizeof(ebuf)));
		return ERR_IO;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(reason, size, "'%s' is not a regular file", path);
		rc = ERR_IO;
		goto out;
	}
	if ((unsigned long long)st.st_size > max) {
		snprintf(reason, size, "'%s' is larger than %zu bytes", path, max);
		rc = ERR_TOO_BIG;
		goto out;
	}
	want = (size_t)st.st_size;
	data = malloc(want + 1);
	if (!data) {
		snprintf(reason, size, "out of memory");
		rc = ERR_NOMEM;
		goto out;
	}
	while (got < want) {
		ssize_t n = read(fd, data + got, want - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(reason, size, "cannot read '%s': %s", path,
			         strerror_r(errno, ebuf, sizeof(ebuf)));
			rc = ERR_IO;
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got == 0 || memchr(data, '\0', got)) {
		snprintf(reason, size, "'%s' is %s", path, got ? "not a PEM file" : "empty");
		rc = ERR_INVALID;
		goto out;
	}
	data[got] = '\0';
	*out = data;
	*len = got;
	data = NULL;
	rc = ERR_OK;
out:
	if (data) {
		/* Whatever it was, it may have been a key. */
		explicit_bzero(data, want);
		free(data);
	}
	close(fd);
	return rc;
}

/* 1 when path is unset or can be read; else 0 with the system's reason (OpenSSL's is "system lib").
 */
static int readable(const char *path, char *reason, size_t size)
{
	char ebuf[128];

	if (!path || !*path || access(path, R_OK) == 0)
		return 1;
	snprintf(reason, size, "cannot read '%s': %s", path, strerror_r(errno, ebuf, sizeof(ebuf)));
	return 0;
}

/* A key with a passphrase would make OpenSSL ask the terminal for it: refuse instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)arg;
	return -1;
}

/* The reason OpenSSL gives first (the cause; later ones say where it surfaced). */
static void openssl_reason(char *reason, size_t size, const char *what, const char *path)
{
	unsigned long e = ERR_peek_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	snprintf(reason, size, "%s '%s': %s", what, path, r ? r : "not a valid PEM file");
	ERR_clear_error();
}

/* The private key in path, or NULL with a reason. */
static EVP_PKEY *read_key(const char *path, char *reason, size_t size)
{
	EVP_PKEY *key = NULL;
	BIO *b = BIO_new_file(path, "r");

	if (b)
		key = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
	if (!key) {
		unsigned long e = ERR_peek_last_error();

		/* Whatever else went wrong, this one says why. */
		if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_BAD_PASSWORD_READ) {
			snprintf(
			    reason, size,
			    "cannot load the key '%s': it is encrypted, which is not supported",
			    path);
			ERR_clear_error();
		} else {
			/* OpenSSL 3 says "unsupported" for a file without a key in it. */
			e = ERR_peek_error();
			snprintf(reason, size,
			         "cannot load the key '%s': no PEM private key in it (%s)", path,
			         e && ERR_reason_error_string(e) ? ERR_reason_error_string(e)
			                                         : "?");
			ERR_clear_error();
		}
	}
	BIO_free(b);
	return key;
}

int tls_check_files(const char *ca_file, const char *cert_file, const char *key_file, char *reason,
                    size_t size)
{
	int has_cert = cert_file && *cert_file, has_key = key_file && *key_file;
	EVP_PKEY *key = NULL;
	SSL_CTX *ctx;
	int rc = ERR_INVALID;

	if (has_cert != has_key) {
		snprintf(reason, size, "a certificate needs its key, and a key its certificate");
		return ERR_INVALID;
	}
	if (!readable(ca_file, reason, size) || !readable(cert_file, reason, size) ||
	    !readable(key_file, reason, size))
		return ERR_INVALID;
	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_method());
	if (!ctx) {
		snprintf(reason, size, "out of memory");
		ERR_clear_error();
		return ERR_NOMEM;
	}
	if (ca_file && *ca_file && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		openssl_reason(reason, size, "cannot load the CA file", ca_file);
		goto out;
	}
	if (!has_cert) {
		rc = ERR_OK;
		goto out;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		openssl_reason(reason, size, "cannot load the certificate", cert_file);
		goto out;
	}
	key = read_key(key_file, reason, size);
	if (!key)
		goto out;
	/* Loading both into the context would drop a mismatched one silently. */
	if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), key) != 1) {
		snprintf(reason, size, "the key '%s' does not belong to the certificate '%s'",
		         key_file, cert_file);
		ERR_clear_error();
		goto out;
	}
	rc = ERR_OK;
out:
	EVP_PKEY_free(key);
	SSL_CTX_free(ctx);
	return rc;
}
