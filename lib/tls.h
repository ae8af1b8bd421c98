/*
 * tls.h: TLS files as the daemons use them: a PEM file read whole, and a
 * CA bundle, a certificate and its key checked with OpenSSL at start, so
 * that a bad file stops start-up with a clear reason instead of failing
 * every connection later. Reasons name the file and what is wrong with it,
 * never its content.
 */
#ifndef ORDERS_TLS_H
#define ORDERS_TLS_H

#include <stddef.h>

/* A certificate chain or a key is a few KiB; a CA bundle some hundreds. */
#define TLS_FILE_MAX (1024 * 1024)

/*
 * tls_read_file - the whole of path, NUL-terminated, into *out (malloc'd,
 * the caller frees it, wiping it first when it holds a key) and its length
 * into *len. ERR_IO (cannot open or read), ERR_TOO_BIG (over max bytes),
 * ERR_INVALID (empty, or a NUL byte in it: no PEM file has one) or
 * ERR_NOMEM, each with a reason. Out-parameters are set only on success.
 * Thread-safe.
 */
int tls_read_file(const char *path, size_t max, char **out, size_t *len, char *reason, size_t size);

/*
 * tls_check_files - ca_file (NULL or "" for none) holds at least one
 * certificate; cert_file and key_file (both or neither) load, the key is
 * not encrypted (nothing could type its passphrase) and belongs to the
 * certificate. ERR_OK, or ERR_INVALID with a reason (ERR_NOMEM when
 * OpenSSL cannot allocate). Thread-safe.
 */
int tls_check_files(const char *ca_file, const char *cert_file, const char *key_file, char *reason,
                    size_t size);

#endif
