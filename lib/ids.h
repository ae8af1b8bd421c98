/* ids.h: UUIDs (lowercase, 36 chars) and other identifiers. Thread-safe. */
#ifndef ORDERS_IDS_H
#define ORDERS_IDS_H

#include <stddef.h>
#include <stdint.h>

#define IDS_UUID_LEN 36

/* ids_uuid4 - a random version-4 UUID into out[37]. The bits come from a
 * per-thread ChaCha20 stream keyed once from the system's generator, so
 * that an id costs no system call; a forked child keys a stream of its own. */
void ids_uuid4(char out[IDS_UUID_LEN + 1]);

/*
 * ids_uuid_derived - a deterministic UUID (version 8 layout, RFC 9562) from a
 * keyed BLAKE2b of (part1, part2). The same key and parts always give the
 * same id; without the key the id reveals nothing. Used for order ids (from
 * client id and Idempotency-Key) and for outcome message ids (from the input
 * message id and the consumer name). key is 32 bytes.
 */
void ids_uuid_derived(const uint8_t key[32], const char *part1, const char *part2,
                      char out[IDS_UUID_LEN + 1]);

/* ids_uuid_valid - 1 when s is a lowercase canonical UUID. */
int ids_uuid_valid(const char *s);

/* ids_token - "tok_" + 24 random lowercase hex digits into out[29]. */
void ids_token(char out[29]);

/* ids_now_ms - wall clock, Unix epoch milliseconds. */
int64_t ids_now_ms(void);

/* ids_rfc3339 - ms since epoch as "2026-11-27T08:00:00.123Z" into out[25]. */
void ids_rfc3339(int64_t ms, char out[25]);

#endif
