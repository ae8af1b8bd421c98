/* ids.c: random and derived UUIDs, tokens and timestamps. */
#include "ids.h"

#include <pthread.h>
#include <sodium.h>
#include <string.h>
#include <time.h>

static const char ids_hex[] = "0123456789abcdef";

/*
 * Random bytes for ids without a system call each: randombytes_buf() is a
 * getrandom(2) per call, which was one syscall in four on the API's
 * /healthz path (every response gets a fresh request id). Each thread
 * keeps a ChaCha20 stream under a key drawn from randombytes_buf() once,
 * and hands out its bytes in order, each byte once. A forked child gets
 * the parent thread's state: the fork handler makes it draw a key of its
 * own, so parent and child never give out the same bytes.
 */
#define IDS_STREAM_BYTES 512

struct ids_stream {
	uint8_t key[crypto_stream_chacha20_KEYBYTES];
	uint64_t nonce;
	uint8_t buf[IDS_STREAM_BYTES];
	size_t used; /* bytes of buf handed out; IDS_STREAM_BYTES when empty */
	int keyed;
};

static _Thread_local struct ids_stream ids_stream = {.used = IDS_STREAM_BYTES};
static pthread_once_t ids_atfork_once = PTHREAD_ONCE_INIT;

/* In a forked child, the one thread there: forget the parent's stream. */
static void ids_stream_forget(void)
{
	sodium_memzero(&ids_stream, sizeof(ids_stream));
	ids_stream.used = IDS_STREAM_BYTES;
}

static void ids_atfork_register(void)
{
	pthread_atfork(NULL, NULL, ids_stream_forget);
}

/* n (at most IDS_STREAM_BYTES) unpredictable bytes into out. */
static void ids_random(uint8_t *out, size_t n)
{
	struct ids_stream *s = &ids_stream;
	uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];

	if (IDS_STREAM_BYTES - s->used < n) {
		if (!s->keyed) {
			pthread_once(&ids_atfork_once, ids_atfork_register);
			randombytes_buf(s->key, sizeof(s->key));
			s->nonce = 0;
			s->keyed = 1;
		}
		/* A counter nonce: never the same (key, nonce) twice. */
		memset(nonce, 0, sizeof(nonce));
		for (size_t i = 0; i < sizeof(s->nonce) && i < sizeof(nonce); i++)
			nonce[i] = (uint8_t)(s->nonce >> (8 * i));
		s->nonce++;
		crypto_stream_chacha20(s->buf, sizeof(s->buf), nonce, s->key);
		s->used = 0;
	}
	memcpy(out, s->buf + s->used, n);
	/* Handed out: not left behind for whoever reads this memory later. */
	sodium_memzero(s->buf + s->used, n);
	s->used += n;
}

/* Write 16 bytes in the canonical 8-4-4-4-12 layout. */
static void uuid_format(const uint8_t b[16], char out[IDS_UUID_LEN + 1])
{
	size_t i, o = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = ids_hex[b[i] >> 4];
		out[o++] = ids_hex[b[i] & 0x0f];
	}
	out[o] = '\0';
}

/* The RFC 9562 version nibble and the 10xx variant bits. */
static void uuid_stamp(uint8_t b[16], unsigned version)
{
	b[6] = (uint8_t)((b[6] & 0x0f) | (version << 4));
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
}

void ids_uuid4(char out[IDS_UUID_LEN + 1])
{
	uint8_t b[16];

	ids_random(b, sizeof(b));
	uuid_stamp(b, 4);
	uuid_format(b, out);
}

void ids_uuid_derived(const uint8_t key[32], const char *part1, const char *part2,
                      char out[IDS_UUID_LEN + 1])
{
	crypto_generichash_state st;
	uint8_t h[32];
	static const unsigned char sep = '\0';

	/*
	 * The NUL between the parts keeps ("ab", "c") and ("a", "bc") apart:
	 * neither part can contain a NUL, so the input splits one way only.
	 */
	crypto_generichash_init(&st, key, 32, sizeof(h));
	crypto_generichash_update(&st, (const unsigned char *)part1, strlen(part1));
	crypto_generichash_update(&st, &sep, 1);
	crypto_generichash_update(&st, (const unsigned char *)part2, strlen(part2));
	crypto_generichash_final(&st, h, sizeof(h));
	uuid_stamp(h, 8);
	uuid_format(h, out);
}

int ids_uuid_valid(const char *s)
{
	size_t i;

	if (!s)
		return 0;
	for (i = 0; i < IDS_UUID_LEN; i++) {
		char c = s[i];

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return 0;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			/* A NUL (short string) fails here too. */
			return 0;
		}
	}
	return s[IDS_UUID_LEN] == '\0';
}

void ids_token(char out[29])
{
	uint8_t b[12];
	size_t i;

	randombytes_buf(b, sizeof(b));
	memcpy(out, "tok_", 4);
	for (i = 0; i < sizeof(b); i++) {
		out[4 + 2 * i] = ids_hex[b[i] >> 4];
		out[5 + 2 * i] = ids_hex[b[i] & 0x0f];
	}
	out[28] = '\0';
}

int64_t ids_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put_digits(char *p, unsigned v, int n)
{
	while (n-- > 0) {
		p[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

void ids_rfc3339(int64_t ms, char out[25])
{
	/* Years 0000..9999 fit the fixed width; clamp anything outside. */
	const int64_t min_ms = -62167219200000LL; /* 0000-01-01T00:00:00.000Z */
	const int64_t max_ms = 253402300799999LL; /* 9999-12-31T23:59:59.999Z */
	struct tm tm;
	time_t sec;
	int64_t msec;

	if (ms < min_ms)
		ms = min_ms;
	if (ms > max_ms)
		ms = max_ms;
	/* Floor division, so that -1 ms is 1969-12-31T23:59:59.999Z. */
	sec = (time_t)(ms / 1000);
	msec = ms % 1000;
	if (msec < 0) {
		msec += 1000;
		sec--;
	}
	memset(&tm, 0, sizeof(tm));
	gmtime_r(&sec, &tm);
	put_digits(out, (unsigned)(tm.tm_year + 1900), 4);
	out[4] = '-';
	put_digits(out + 5, (unsigned)(tm.tm_mon + 1), 2);
	out[7] = '-';
	put_digits(out + 8, (unsigned)tm.tm_mday, 2);
	out[10] = 'T';
	put_digits(out + 11, (unsigned)tm.tm_hour, 2);
	out[13] = ':';
	put_digits(out + 14, (unsigned)tm.tm_min, 2);
	out[16] = ':';
	put_digits(out + 17, (unsigned)tm.tm_sec, 2);
	out[19] = '.';
	put_digits(out + 20, (unsigned)msec, 3);
	out[23] = 'Z';
	out[24] = '\0';
}
