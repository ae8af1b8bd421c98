/* fuzz_amqp_url.c: libFuzzer target for ORDERS_AMQP_URL as lib/mq parses it at every connect. */
#include "fuzz.h"
#include "mq.h"
#include "mq_internal.h"

FUZZ_QUIET_INITIALIZE

struct seen {
	size_t n;
};

/* Each entry names a host, a user, a password and a port that a socket can
 * take, and a vhost: "" became "/", the default vhost. */
static void entry(void *arg, const struct amqp_connection_info *e)
{
	struct seen *s = arg;

	s->n++;
	FUZZ_CHECK(s->n <= MQ_URLS_MAX);
	FUZZ_CHECK(e->host && e->vhost && e->user && e->password);
	FUZZ_CHECK(e->port >= 0 && e->port <= 65535);
	FUZZ_CHECK(e->vhost[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_cstr(data, size);
	struct seen s = {0};
	size_t commas = 0;
	int rc = mq__url_each(text, entry, &s);

	for (const char *p = text; (p = strchr(p, ',')) != NULL; p++)
		commas++;
	if (rc == ERR_OK)
		/* One entry per comma-separated part, none skipped. */
		FUZZ_CHECK(s.n == commas + 1);
	else
		FUZZ_CHECK(s.n == 0 && (rc == ERR_INVALID || rc == ERR_NOMEM));
	free(text);
	return 0;
}
