/* client.c: orders-bench's keep-alive HTTP client: epoll threads, closed or open loop. */
#include "client.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#define REQ_MAX 2048
#define RESP_MAX 4096
/* Connections of one thread that may be connecting at once, so that a burst of
 * 10,000 SYNs does not overflow the server's accept queue. */
#define CONNECT_WINDOW 256
#define CONNECT_TRIES 3
#define EVENTS 256

enum conn_state { C_DEAD, C_CONNECTING, C_IDLE, C_BUSY };

struct conn {
	int fd;
	enum conn_state state;
	int tries;    /* connect attempts in a row */
	int want_out; /* EPOLLOUT is in the interest set */
	long req;     /* request in flight, or -1 */
	double due;   /* when the request was due: scheduled (open loop) or sent (closed) */
	double sent;  /* when its first byte was written */
	size_t out_len, out_off;
	size_t in_len;
	long body_at;    /* offset of the body once the head is in, else -1 */
	long body_len;   /* Content-Length, -1 when chunked or unknown */
	int status;      /* of the response being read */
	int close_after; /* the server said Connection: close */
	int queued;      /* in the idle ring (maybe from before a reconnect) */
	uint32_t gen;    /* bumped at every open, so stale epoll events are known */
	char out[REQ_MAX];
	char in[RESP_MAX];
};

struct worker {
	struct bench *b;
	int index;
	pthread_t thread;
	int joined; /* the thread has ended and been joined (or never started) */
	int epfd;
	struct conn *conns;
	int nconns;
	int *ring; /* idle connections, longest idle first */
	int ring_head, ring_len;
	long next_j; /* open loop: this thread's next request is index*T + next_j*T */
	long in_flight;
	int connecting;
	int live;         /* connections not given up on, counted at each sweep */
	int next_connect; /* the first connection not yet opened */
	struct stats st;
	atomic_long p_sent, p_answered, p_ok, p_errors, p_non2xx; /* for the progress line */
	double last_sweep;
};

/* splitmix64's finaliser: a request's choices follow from its index alone. */
static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double unit(uint64_t h)
{
	return (double)(h >> 11) * 0x1p-53;
}

/*
 * The key request i uses: its own, or with probability repeat_ratio an earlier
 * request's (which may itself repeat one). A repeat carries the same body, so
 * the API answers it as a replay (or 409 while the first is in flight).
 */
long client_key_of(const struct options *o, long i)
{
	while (i > 0) {
		uint64_t h = mix(o->seed ^ ((uint64_t)i * 0x2545f4914f6cdd1dULL));

		if (unit(h) >= o->repeat_ratio)
			break;
		i = (long)(mix(h) % (uint64_t)i);
	}
	return i;
}

void client_key_text(const struct options *o, long k, char *out, size_t len)
{
	snprintf(out, len, "%s-%08ld", o->prefix, k);
}

static int build_body(const struct options *o, long k, char *body, size_t len)
{
	uint64_t h = mix(o->seed * 31 + (uint64_t)k);
	unsigned pick = (unsigned)(h % (o->card_total ? o->card_total : 1));
	const char *card = o->cards[0].number;
	char items[320];
	int a = (int)(mix(h + 1) % (uint64_t)o->nskus), b = (int)(mix(h + 2) % (uint64_t)o->nskus);

	for (int c = 0; c < o->ncards; c++) {
		if (pick < o->cards[c].weight) {
			card = o->cards[c].number;
			break;
		}
		pick -= o->cards[c].weight;
	}
	if (b != a && (int)(mix(h + 3) % 100) < o->two_line_pct)
		snprintf(items, sizeof(items),
		         "{\"sku\":\"%s\",\"quantity\":%d},{\"sku\":\"%s\",\"quantity\":%d}",
		         o->skus[a], 1 + (int)(h % 2), o->skus[b], 1 + (int)((h >> 8) % 2));
	else
		snprintf(items, sizeof(items), "{\"sku\":\"%s\",\"quantity\":%d}", o->skus[a],
		         1 + (int)(h % 2));
	return snprintf(body, len,
	                "{\"items\":[%s],\"currency\":\"USD\","
	                "\"customer\":{\"id\":\"bench-%ld\",\"email\":\"b%ld@example.com\"},"
	                "\"shipping_address\":{\"name\":\"Bench Buyer\",\"line1\":\"1 Main St\","
	                "\"city\":\"Springfield\",\"postal_code\":\"12345\",\"country\":\"US\"},"
	                "\"payment\":{\"card\":{\"number\":\"%s\",\"exp_month\":12,"
	                "\"exp_year\":2030,\"cvc\":\"123\"}}}",
	                items, k % 1000, k % 1000, card);
}

/* The whole request i into c->out. */
static int build_request(const struct bench *b, struct conn *c, long i)
{
	const struct options *o = &b->o;
	char body[1024], key[FOLLOW_KEY_MAX];
	long k = client_key_of(o, i);
	int blen = build_body(o, k, body, sizeof(body)), n;

	client_key_text(o, k, key, sizeof(key));
	if (blen < 0 || (size_t)blen >= sizeof(body))
		return -1;
	n = snprintf(c->out, sizeof(c->out),
	             "POST /v1/checkouts HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
	             "Authorization: %s\r\nContent-Type: application/json\r\n"
	             "Idempotency-Key: %s\r\nContent-Length: %d\r\n\r\n%s",
	             o->port, o->auth, key, blen, body);
	if (n < 0 || (size_t)n >= sizeof(c->out))
		return -1;
	c->out_len = (size_t)n;
	c->out_off = 0;
	return 0;
}

/* ---- connections ------------------------------------------------------------- */

static void idle_push(struct worker *w, int ci)
{
	struct conn *c = &w->conns[ci];

	/* Still queued from before a reconnect: that place in the ring serves. */
	if (c->queued)
		return;
	c->queued = 1;
	w->ring[(w->ring_head + w->ring_len) % w->nconns] = ci;
	w->ring_len++;
}

/* The connection idle the longest, so that every connection gets used in turn. */
static int idle_pop(struct worker *w)
{
	while (w->ring_len > 0) {
		int ci = w->ring[w->ring_head];

		w->ring_head = (w->ring_head + 1) % w->nconns;
		w->ring_len--;
		w->conns[ci].queued = 0;
		/* Closed while it waited (and not back yet): skip it. */
		if (w->conns[ci].state == C_IDLE)
			return ci;
	}
	return -1;
}

static void set_events(struct worker *w, int ci, int want_out)
{
	struct epoll_event ev;
	struct conn *c = &w->conns[ci];

	if (c->want_out == want_out)
		return;
	ev.events = EPOLLIN | EPOLLRDHUP | (want_out ? EPOLLOUT : 0);
	ev.data.u64 = (uint64_t)c->gen << 32 | (uint32_t)ci;
	epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
	c->want_out = want_out;
}

static int conn_open(struct worker *w, int ci)
{
	struct conn *c = &w->conns[ci];
	struct sockaddr_in addr;
	struct epoll_event ev;
	int one = 1;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		goto fail;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)w->b->o.port);
	addr.sin_addr = w->b->o.host;
	if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS)
		goto fail;
	c->gen++;
	ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
	ev.data.u64 = (uint64_t)c->gen << 32 | (uint32_t)ci;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
		goto fail;
	c->want_out = 1;
	c->state = C_CONNECTING;
	c->req = -1;
	c->sent = util_now();
	w->connecting++;
	return 0;
fail:
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = C_DEAD;
	return -1;
}

static void conn_close(struct worker *w, int ci)
{
	struct conn *c = &w->conns[ci];

	if (c->state == C_CONNECTING)
		w->connecting--;
	if (c->fd >= 0) {
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->state = C_DEAD;
}

/* Open it again after a close; give up after CONNECT_TRIES failures in a row. */
static void conn_reopen(struct worker *w, int ci)
{
	struct conn *c = &w->conns[ci];

	while (c->tries < CONNECT_TRIES) {
		c->tries++;
		if (conn_open(w, ci) == 0)
			return;
	}
	w->st.connect_errors++;
	atomic_fetch_add(&w->p_errors, 1);
}

/* ---- requests ---------------------------------------------------------------- */

static uint32_t micros(double s)
{
	double us = s * 1e6;

	return us < 0 ? 0 : us > 4e9 ? 4000000000u : (uint32_t)us;
}

static void record_latency(struct worker *w, double done, const struct conn *c)
{
	w->b->lat[c->req] = micros(done - c->due);
	w->b->svc[c->req] = micros(done - c->sent);
}

static void request_failed(struct worker *w, int ci, int timeout)
{
	struct conn *c = &w->conns[ci];

	if (timeout)
		w->st.timeouts++;
	else
		w->st.sock_errors++;
	atomic_fetch_add(&w->p_errors, 1);
	c->req = -1;
	w->in_flight--;
	conn_close(w, ci);
	c->tries = 0;
	conn_reopen(w, ci);
}

static int send_some(struct worker *w, int ci)
{
	struct conn *c = &w->conns[ci];

	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			set_events(w, ci, 1);
			return 0;
		}
		if (n <= 0)
			return -1;
		c->out_off += (size_t)n;
	}
	set_events(w, ci, 0);
	return 0;
}

static void start_request(struct worker *w, int ci, long i, double due)
{
	struct conn *c = &w->conns[ci];

	if (build_request(w->b, c, i) != 0) {
		fprintf(stderr, "orders-bench: request %ld does not fit %d bytes\n", i, REQ_MAX);
		atomic_store(&w->b->stop, 1);
		return;
	}
	c->state = C_BUSY;
	c->req = i;
	c->due = due;
	c->sent = util_now();
	c->in_len = 0;
	c->body_at = -1;
	c->body_len = -1;
	c->status = 0;
	c->close_after = 0;
	w->in_flight++;
	w->st.sent++;
	atomic_fetch_add(&w->p_sent, 1);
	if (send_some(w, ci) != 0)
		request_failed(w, ci, 0);
}

/* The key's first 202 names its order; a later 202 naming another is a duplicate. */
static void note_accepted(struct worker *w, long i, const char *body, size_t len)
{
	struct bench *b = w->b;
	long k = client_key_of(&b->o, i);
	const char *p = memmem(body, len, "\"order_id\":\"", 12);
	char id[FOLLOW_ID_LEN + 1] = "";
	pthread_mutex_t *lock = &b->key_locks[k % KEY_LOCKS];

	if (p && (size_t)(p - body) + 12 + FOLLOW_ID_LEN <= len) {
		memcpy(id, p + 12, FOLLOW_ID_LEN);
		id[FOLLOW_ID_LEN] = '\0';
	}
	pthread_mutex_lock(lock);
	if (!b->keys[k].accepted) {
		b->keys[k].accepted = 1;
		memcpy(b->keys[k].order_id, id, sizeof(id));
	} else if (strcmp(b->keys[k].order_id, id) != 0) {
		w->st.dup_answers++;
	}
	pthread_mutex_unlock(lock);
}

/* Parse the head once it is in: status, Content-Length, Connection: close. */
static int parse_head(struct conn *c)
{
	char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4), *line;

	if (!end)
		return c->in_len >= sizeof(c->in) - 1 ? -1 : 0;
	*end = '\0';
	if (strncmp(c->in, "HTTP/1.", 7) != 0 || strlen(c->in) < 12)
		return -1;
	c->status = atoi(c->in + 9);
	if (c->status < 100 || c->status >= STATUS_MAX)
		return -1;
	for (line = strstr(c->in, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
		const char *h = line + 2;

		if (strncasecmp(h, "content-length:", 15) == 0)
			c->body_len = strtol(h + 15, NULL, 10);
		else if (strncasecmp(h, "connection:", 11) == 0 && strcasestr(h + 11, "close"))
			c->close_after = 1;
	}
	c->body_at = end + 4 - c->in;
	return 0;
}

/* 1 once the whole response is in. A chunked body is complete at its last chunk. */
static int response_complete(const struct conn *c)
{
	size_t have = c->in_len - (size_t)c->body_at;

	if (c->status == 204 || c->status == 304 || c->status < 200)
		return 1;
	if (c->body_len >= 0)
		return have >= (size_t)c->body_len;
	return have >= 5 && memcmp(c->in + c->in_len - 5, "0\r\n\r\n", 5) == 0;
}

static void finish_response(struct worker *w, int ci, double now)
{
	struct conn *c = &w->conns[ci];

	record_latency(w, now, c);
	w->st.answered++;
	w->st.status[c->status]++;
	atomic_fetch_add(&w->p_answered, 1);
	if (c->status >= 200 && c->status < 300) {
		w->st.ok++;
		atomic_fetch_add(&w->p_ok, 1);
	} else {
		w->st.non2xx++;
		atomic_fetch_add(&w->p_non2xx, 1);
	}
	if (c->status == 202) {
		w->st.accepted++;
		note_accepted(w, c->req, c->in + c->body_at, c->in_len - (size_t)c->body_at);
	}
	c->req = -1;
	w->in_flight--;
	if (c->close_after) {
		conn_close(w, ci);
		c->tries = 0;
		conn_reopen(w, ci);
		return;
	}
	c->state = C_IDLE;
	idle_push(w, ci);
}

static void on_readable(struct worker *w, int ci, double now)
{
	struct conn *c = &w->conns[ci];

	for (;;) {
		ssize_t n;

		if (c->state != C_BUSY) {
			char junk[64];

			/* An idle connection: only a close (or junk) can come. */
			n = recv(c->fd, junk, sizeof(junk), 0);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			if (n != 0)
				w->st.sock_errors++;
			else
				w->st.idle_closes++;
			conn_close(w, ci);
			c->tries = 0;
			conn_reopen(w, ci);
			return;
		}
		/* Our API's answers are small; a larger one is a fault here. */
		if (c->in_len >= sizeof(c->in) - 1) {
			request_failed(w, ci, 0);
			return;
		}
		n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - 1 - c->in_len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			request_failed(w, ci, 0);
			return;
		}
		c->in_len += (size_t)n;
		if (c->body_at < 0 && parse_head(c) != 0) {
			request_failed(w, ci, 0);
			return;
		}
		if (c->body_at >= 0 && response_complete(c)) {
			finish_response(w, ci, now);
			return;
		}
	}
}

static void on_connected(struct worker *w, int ci)
{
	struct conn *c = &w->conns[ci];
	int err = 0;
	socklen_t len = sizeof(err);

	w->connecting--;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
		c->state = C_DEAD;
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
		conn_reopen(w, ci);
		return;
	}
	c->tries = 0;
	c->state = C_IDLE;
	set_events(w, ci, 0);
	idle_push(w, ci);
}

static void on_event(struct worker *w, const struct epoll_event *ev, double now)
{
	int ci = (int)(uint32_t)ev->data.u64;
	struct conn *c = &w->conns[ci];

	/* Meant for a socket this connection has closed in the same batch. */
	if ((uint32_t)(ev->data.u64 >> 32) != c->gen || c->state == C_DEAD)
		return;
	if (c->state == C_CONNECTING) {
		if (ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			on_connected(w, ci);
		return;
	}
	if (c->state == C_BUSY && (ev->events & EPOLLOUT) && c->out_off < c->out_len) {
		if (send_some(w, ci) != 0) {
			request_failed(w, ci, 0);
			return;
		}
	}
	if (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		on_readable(w, ci, now);
}

/* Requests in flight past the timeout fail; their connections are replaced. */
static void sweep_timeouts(struct worker *w, double now)
{
	double limit = w->b->o.timeout_ms / 1000.0;

	if (now - w->last_sweep < 0.1)
		return;
	w->last_sweep = now;
	w->live = 0;
	for (int ci = 0; ci < w->nconns; ci++) {
		struct conn *c = &w->conns[ci];

		w->live += c->state != C_DEAD;
		if (c->state == C_BUSY && now - c->sent > limit) {
			request_failed(w, ci, 1);
		} else if (c->state == C_CONNECTING && now - c->sent > limit) {
			conn_close(w, ci);
			conn_reopen(w, ci);
		}
	}
}

/* ---- the worker loop ------------------------------------------------------------- */

static int poll_events(struct worker *w, int timeout_ms)
{
	struct epoll_event evs[EVENTS];
	int n = epoll_wait(w->epfd, evs, EVENTS, timeout_ms);
	double now = util_now();

	for (int k = 0; k < n; k++)
		on_event(w, &evs[k], now);
	return n < 0 && errno != EINTR ? -1 : 0;
}

/* Open every connection, CONNECT_WINDOW at a time. */
static void open_all(struct worker *w)
{
	while (!atomic_load(&w->b->stop)) {
		while (w->next_connect < w->nconns && w->connecting < CONNECT_WINDOW) {
			w->conns[w->next_connect].tries = 0;
			conn_reopen(w, w->next_connect);
			w->next_connect++;
		}
		if (w->next_connect == w->nconns && w->connecting == 0)
			break;
		if (poll_events(w, 100) != 0)
			break;
	}
}

/* The due time of this worker's next request in the open loop; < 0 when none is left. */
static double next_due(const struct worker *w, long *index)
{
	const struct options *o = &w->b->o;
	long i = w->next_j * o->threads + w->index;

	if (i >= o->count)
		return -1;
	*index = i;
	return w->b->t0 + (double)i / o->rate;
}

static void dispatch_open(struct worker *w, double now)
{
	long i;
	double due;

	while ((due = next_due(w, &i)) >= 0 && due <= now && due - w->b->t0 < w->b->o.duration_s) {
		int ci = idle_pop(w);

		if (ci < 0)
			return; /* late: its latency counts from due all the same */
		w->next_j++;
		start_request(w, ci, i, due);
	}
}

/* 1 once --duration has passed: no new checkout starts. */
static int out_of_time(const struct bench *b)
{
	return util_now() - b->t0 >= b->o.duration_s;
}

static void dispatch_closed(struct worker *w)
{
	int ci;

	if (out_of_time(w->b))
		return;
	while ((ci = idle_pop(w)) >= 0) {
		long i = atomic_fetch_add(&w->b->next, 1);

		if (i >= w->b->o.count) {
			idle_push(w, ci);
			return;
		}
		start_request(w, ci, i, util_now());
	}
}

static int worker_done(const struct worker *w)
{
	long i;

	if (w->in_flight > 0)
		return 0;
	if (out_of_time(w->b))
		return 1;
	if (w->b->o.rate > 0)
		return next_due(w, &i) < 0;
	return atomic_load(&w->b->next) >= w->b->o.count;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;

	open_all(w);
	for (int ci = 0; ci < w->nconns; ci++)
		w->live += w->conns[ci].state == C_IDLE;
	if (w->live == 0 && w->nconns > 0)
		fprintf(stderr, "orders-bench: thread %d could not open any connection\n",
		        w->index);
	atomic_fetch_add(&b->connected, 1);
	while (!atomic_load(&b->go) && !atomic_load(&b->stop))
		util_sleep(0.001);
	while (!atomic_load(&b->stop)) {
		double now = util_now();
		int timeout_ms = 50;
		long i;

		if (b->o.rate > 0) {
			double due;

			dispatch_open(w, now);
			due = next_due(w, &i);
			if (due >= 0 && w->ring_len > 0) {
				double wait = (due - util_now()) * 1000.0;

				timeout_ms = wait <= 0 ? 0 : wait < 50 ? (int)ceil(wait) : 50;
			}
		} else {
			dispatch_closed(w);
		}
		if (worker_done(w))
			break;
		/* Every connection gone for good: nothing can finish any more. */
		if (w->live == 0)
			break;
		if (poll_events(w, timeout_ms) != 0)
			break;
		sweep_timeouts(w, util_now());
	}
	for (int ci = 0; ci < w->nconns; ci++)
		conn_close(w, ci);
	return NULL;
}

/* ---- the run -------------------------------------------------------------------- */

/* Room for C connections: the soft limit up to the hard one, and past it as root. */
static void raise_fd_limit(int conns)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)conns + 256;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
		struct rlimit more = {want, want};

		if (setrlimit(RLIMIT_NOFILE, &more) == 0)
			return;
	}
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want)
		fprintf(stderr, "orders-bench: only %ld file descriptors for %d connections\n",
		        (long)rl.rlim_cur, conns);
}

static int start_workers(struct bench *b)
{
	const struct options *o = &b->o;

	b->workers = calloc((size_t)o->threads, sizeof(*b->workers));
	if (!b->workers)
		return -1;
	for (int t = 0; t < o->threads; t++) {
		b->workers[t].joined = 1;
		b->workers[t].epfd = -1;
	}
	for (int t = 0; t < o->threads; t++) {
		struct worker *w = &b->workers[t];

		w->b = b;
		w->index = t;
		w->nconns = o->conns / o->threads + (t < o->conns % o->threads);
		w->conns = calloc((size_t)w->nconns, sizeof(*w->conns));
		w->ring = calloc((size_t)w->nconns, sizeof(*w->ring));
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		if (!w->conns || !w->ring || w->epfd < 0)
			return -1;
		for (int ci = 0; ci < w->nconns; ci++) {
			w->conns[ci].fd = -1;
			w->conns[ci].req = -1;
		}
		if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
			return -1;
		w->joined = 0;
	}
	return 0;
}

void client_stats(const struct bench *b, struct stats *s)
{
	memset(s, 0, sizeof(*s));
	for (int t = 0; t < b->o.threads; t++) {
		const struct stats *ws = &b->workers[t].st;

		s->sent += ws->sent;
		s->answered += ws->answered;
		s->ok += ws->ok;
		s->accepted += ws->accepted;
		s->non2xx += ws->non2xx;
		s->sock_errors += ws->sock_errors;
		s->timeouts += ws->timeouts;
		s->connect_errors += ws->connect_errors;
		s->idle_closes += ws->idle_closes;
		s->dup_answers += ws->dup_answers;
		for (int k = 0; k < STATUS_MAX; k++)
			s->status[k] += ws->status[k];
	}
}

static void progress(struct bench *b, FILE *out, double now, long *last_ok)
{
	long sent = 0, answered = 0, ok = 0, errors = 0, non2xx = 0;

	for (int t = 0; t < b->o.threads; t++) {
		struct worker *w = &b->workers[t];

		sent += atomic_load(&w->p_sent);
		answered += atomic_load(&w->p_answered);
		ok += atomic_load(&w->p_ok);
		errors += atomic_load(&w->p_errors);
		non2xx += atomic_load(&w->p_non2xx);
	}
	fprintf(out,
	        "orders-bench: %4.0fs sent %ld, 2xx %ld (%ld/s), non-2xx %ld, socket errors %ld, "
	        "in flight %ld\n",
	        now - b->t0, sent, ok, ok - *last_ok, non2xx, errors, sent - answered - errors);
	fflush(out);
	*last_ok = ok;
}

int client_run(struct bench *b, FILE *out)
{
	const struct options *o = &b->o;
	double last;
	long last_ok = 0;
	int done;

	raise_fd_limit(o->conns);
	b->keys = calloc((size_t)o->count, sizeof(*b->keys));
	b->lat = malloc((size_t)o->count * sizeof(*b->lat));
	b->svc = malloc((size_t)o->count * sizeof(*b->svc));
	if (!b->keys || !b->lat || !b->svc) {
		fprintf(stderr, "orders-bench: out of memory\n");
		return -1;
	}
	memset(b->lat, 0xff, (size_t)o->count * sizeof(*b->lat));
	memset(b->svc, 0xff, (size_t)o->count * sizeof(*b->svc));
	for (int k = 0; k < KEY_LOCKS; k++)
		pthread_mutex_init(&b->key_locks[k], NULL);
	fprintf(out, "orders-bench: opening %d connections to port %d\n", o->conns, o->port);
	if (start_workers(b) != 0) {
		fprintf(stderr, "orders-bench: cannot start the threads\n");
		atomic_store(&b->stop, 1);
		goto join;
	}
	while (atomic_load(&b->connected) < o->threads)
		util_sleep(0.01);
	b->t0 = util_now() + 0.01;
	atomic_store(&b->go, 1);
join:
	last = b->t0;
	do {
		double now;

		util_sleep(0.05);
		now = util_now();
		done = 1;
		for (int t = 0; t < o->threads && b->workers; t++) {
			struct worker *w = &b->workers[t];

			if (!w->joined && pthread_tryjoin_np(w->thread, NULL) == 0)
				w->joined = 1;
			done &= w->joined;
		}
		if (!done && !atomic_load(&b->stop) && now - last >= 1.0) {
			last += 1.0;
			progress(b, out, now, &last_ok);
		}
	} while (!done);
	return atomic_load(&b->stop) ? -1 : 0;
}

void client_release(struct bench *b)
{
	for (int t = 0; b->workers && t < b->o.threads; t++) {
		if (b->workers[t].epfd >= 0)
			close(b->workers[t].epfd);
		free(b->workers[t].conns);
		free(b->workers[t].ring);
	}
	free(b->workers);
	free(b->keys);
	free(b->lat);
	free(b->svc);
	b->workers = NULL;
	b->keys = NULL;
	b->lat = b->svc = NULL;
}
