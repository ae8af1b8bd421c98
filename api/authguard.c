/* authguard.c: a limit on failed authentications per client address (floods of bad keys). */
#include "api.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "err.h"
#include "log.h"

/* X-Forwarded-For header fields looked at; a proxy chain sends one. */
#define XFF_MAX 8

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct xff_values {
	const char *v[XFF_MAX];
	size_t n;
};

static enum MHD_Result collect_xff(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
	struct xff_values *x = cls;
	(void)kind;

	if (key && value && strcasecmp(key, "X-Forwarded-For") == 0) {
		/* Past the last slot, the later fields (nearer to us) win. */
		if (x->n == XFF_MAX) {
			memmove(x->v, x->v + 1, (XFF_MAX - 1) * sizeof(x->v[0]));
			x->n--;
		}
		x->v[x->n++] = value;
	}
	return MHD_YES;
}

/* The request's client address (ORDERS_TRUSTED_PROXIES applied); 0 if unknown. */
static int client_of(struct request *r)
{
	const union MHD_ConnectionInfo *info;
	struct xff_values x = {.n = 0};
	struct netaddr peer;

	if (r->have_client)
		return 1;
	info = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (!info || netaddr_from_sockaddr(info->client_addr, &peer) != ERR_OK)
		return 0;
	if (r->api->ntrusted)
		MHD_get_connection_values(r->conn, MHD_HEADER_KIND, collect_xff, &x);
	netaddr_client(&peer, x.v, x.n, r->api->trusted, r->api->ntrusted, &r->client);
	r->have_client = 1;
	return 1;
}

int auth_blocked(struct request *r)
{
	struct addrlimit *l = r->api->auth_failures;
	int64_t now;

	if (!l)
		return 0;
	/* The address is worked out only while some address is over. */
	now = wall_ms();
	return addrlimit_busy(l, now) && client_of(r) && addrlimit_over(l, &r->client, now);
}

/* At most one line a second about addresses going over, whatever a flood does. */
static void log_crossing(struct request *r)
{
	static _Atomic int64_t last_s;
	char text[NETADDR_TEXT_MAX];
	int64_t now = (int64_t)time(NULL);

	if (atomic_exchange(&last_s, now) == now)
		return;
	netaddr_format(&r->client, text);
	log_warn("client over the failed-authentication limit; refusing it until the next second",
	         LF_STR("request_id", r->request_id), LF_STR("client", text),
	         LF_INT("limit_per_s", r->api->cfg.auth_failure_limit));
}

enum MHD_Result auth_failed(struct request *r)
{
	static const char *const unauthorized[] = {"unauthorized"};
	static const char *const limited[] = {"rate_limited"};
	struct addrlimit *l = r->api->auth_failures;
	const char *headers[] = {"Retry-After", NULL, NULL};
	int64_t now = wall_ms();
	char retry[16];
	int crossed = 0;

	if (!r->auth_blocked && l && client_of(r) && addrlimit_add(l, &r->client, now, &crossed))
		r->auth_blocked = 1;
	if (!r->auth_blocked) {
		metric_add(r->api->m_auth_failures, unauthorized, 1);
		return respond_error(r, 401, "unauthorized",
		                     "missing or unknown API key; send Authorization: Bearer <key>",
		                     NULL);
	}
	if (crossed)
		log_crossing(r);
	metric_add(r->api->m_auth_failures, limited, 1);
	snprintf(retry, sizeof(retry), "%d", addrlimit_retry_after(now));
	headers[1] = retry;
	return respond_obj(r, 429,
	                   json_pack("{s:{s:s, s:s}}", "error", "code", "rate_limited", "message",
	                             "too many requests without a valid API key from this "
	                             "address; retry after the number of seconds in Retry-After"),
	                   headers);
}
