/*
 * consume.h: the one consume loop every consumer daemon runs, and the
 * handler contract the daemons fill in.
 *
 * The loop takes deliveries in batches and does the work of a whole batch
 * in one PostgreSQL transaction, so that one commit (one fsync) covers many
 * messages: it waits for a first delivery, then takes what else the broker
 * has sent or sends within CONSUME_BATCH_WINDOW_MS, up to the batch size
 * (ORDERS_CONSUMER_BATCH, else the handler's batch, else
 * CONSUME_BATCH_DEFAULT; never more than ORDERS_PREFETCH). A batch of one is
 * the one-message transaction of old. For a batch:
 *
 *   1. Per delivery: message_id = the AMQP message_id property; empty,
 *      oversized or undecodable (handler->decode) -> poison. A delivery
 *      whose message_id is already in the batch ends the batch and starts
 *      the next one (it is then a replay of the first, published after it).
 *   2. BEGIN; handler->prepare() (optional) with every decoded delivery, to
 *      take the locks the batch needs in one global order. Then one
 *      INSERT INTO inbox (consumer, message_id, order_id, outcome) ... ON
 *      CONFLICT DO NOTHING RETURNING for every delivery, in delivery order,
 *      and one SELECT of the recorded outcomes of those that conflicted.
 *      A concurrent duplicate blocks on the unique key until the first
 *      transaction commits, then conflicts.
 *   3. Row inserted: handler->process() does the work on the same
 *      connection inside the transaction and fills a struct consume_result
 *      (an outcome text and at most two outgoing messages).
 *      No row (seen before): the loop reads the recorded outcome and
 *      handler->replay() rebuilds the same outgoing message from the input
 *      and the outcome, without touching any business table. (A message_id
 *      recorded for another order_id is poison.) The outgoing envelope's
 *      occurred_at_ms is the inbox row's time, so a replayed message is
 *      byte for byte the first one.
 *      A delivery that fails ends the attempt: everything is rolled back
 *      and the batch starts over without it (up to 3 times; no savepoints,
 *      which would cost two round trips and a subtransaction a message).
 *      It alone is settled by its error: poison (ERR_PARSE, ERR_INVALID)
 *      is dead-lettered, anything else requeued. Then handler->finish()
 *      (optional) with the deliveries process() handled, the inbox rows
 *      get their outcomes in one statement, and the batch commits.
 *      A failure of the batch as a whole (prepare, finish, the outcomes,
 *      COMMIT) rolls everything back; while PostgreSQL is unreachable the
 *      batch is held and retried in-process, so an outage does not burn
 *      deliveries; otherwise each delivery is retried in a transaction of
 *      its own at once, so that one bad message cannot fail the others.
 *   4. Every outgoing message of the batch is published (pipelined: all in
 *      flight together), with a message_id derived from the consumer name
 *      and the input message_id (so the next stage's inbox recognises a
 *      re-publication), and the second one, if any, with the id its hook
 *      chose. A delivery whose messages were not all confirmed is requeued;
 *      its redelivery takes the replay path and publishes them again.
 *   5. Settlement, once every confirm is in: poison is rejected without
 *      requeue (to <queue>.dlq), transient failures with requeue, and then
 *      the rest is acked in one basic.ack with multiple set (every lower
 *      tag is settled by then). After a transient failure the loop backs
 *      off (100 ms doubling to 1 s, reset on success, so one failing message
 *      delays the others by at most a second); the quorum queue's delivery
 *      limit eventually parks a message that never succeeds in <queue>.dlq.
 *   6. SIGTERM or SIGINT: the current batch is finished, everything is
 *      closed and consume_main() returns 0.
 *
 * Deadlocks: batches hold the row locks of many messages at once, so every
 * handler whose batches could lock the same rows in different orders takes
 * them up front in prepare(), in the same global order as everyone else
 * (orders by id, then products by SKU in byte order).
 *
 * Periodic work: a handler with a tick hook has it called every tick_ms
 * (at most; the wait for a delivery is cut short to keep to it), between
 * batches and while idle, once PostgreSQL answers and the publisher is
 * connected. It gets the loop's connection outside any transaction (it runs
 * its own) and the publisher; no delivery is in progress meanwhile.
 *
 * Outcome texts are short, stored in inbox.outcome and logged: they must
 * never contain card data.
 *
 * Logging: while the loop works on one delivery (decode, process,
 * replay, its log lines), its thread has the log context (log.h) set to
 * its message_id, and, once decode() has run, its correlation_id as
 * "request_id" and its order_id: every line the hooks write about it
 * carries them. prepare(), finish() and the tick hook run with no context;
 * they set one per order they work on.
 *
 * The hooks run on the loop's thread only (their state needs no locking).
 * decode, msg_free, process and replay are required; init, fini, prepare,
 * finish and tick are optional; process() may run more than once for one
 * delivery (a failed batch is retried), and so may replay().
 *
 * Metrics: orders_messages_total{consumer,outcome} (outcome: processed,
 * replayed, poison, retried), orders_message_processing_seconds
 * {consumer} (per message, from taking it to settling it),
 * orders_consumer_batch_size{consumer} (deliveries per batch),
 * orders_message_redeliveries_total{consumer} (deliveries
 * flagged redelivered), orders_messages_dead_lettered_total{consumer,
 * reason} (reason: rejected, poison rejected without requeue, or
 * delivery_limit, a retry on the last delivery the limit allows), the
 * queue gauges (ops.h) and the process families (metrics_process). /readyz:
 * PostgreSQL answered the last query or ping, and the publisher and the
 * consumer are connected.
 */
#ifndef ORDERS_CONSUME_H
#define ORDERS_CONSUME_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "db.h"
#include "ids.h"
#include "mq.h"
#include "proto.h"
#include "buf.h"

#define CONSUME_OUTCOME_MAX 256
/* Deliveries per batch: the default, and the most ORDERS_CONSUMER_BATCH may ask. */
#define CONSUME_BATCH_DEFAULT 50
#define CONSUME_BATCH_MAX 1000
/* How long a batch waits for more deliveries after its first, at most. */
#define CONSUME_BATCH_WINDOW_MS 2

/* One delivery as the hooks see it. Everything is borrowed from the loop. */
struct consume_input {
	const char *message_id; /* the AMQP message_id, never empty */
	const char *routing_key;
	const uint8_t *body;
	size_t len; /* at most PROTO_MAX_MESSAGE */
	/* The message_id the outgoing message must carry in its envelope. */
	char out_message_id[IDS_UUID_LEN + 1];
	/*
	 * When the inbox row was written (Unix ms, the transaction's now()):
	 * the same on the first run and on every replay, so use it as the
	 * outgoing envelope's occurred_at_ms and the replayed message is
	 * identical. Set before process() and replay() are called.
	 */
	int64_t processed_ms;
	void *msg;            /* set by decode(), freed with msg_free() */
	const char *order_id; /* set by decode(): a valid UUID inside msg */
	/* Set by decode(): the envelope's correlation_id (the HTTP request id
	 * that started the flow) inside msg; NULL or "" when it has none. */
	const char *correlation_id;
};

/*
 * A second outgoing message, beside the first (say work for another queue
 * beside an event). Its message_id is the hook's to set, deterministic like
 * everything else it builds (the same on every replay; consume_derived_id()
 * makes one). exchange NULL means there is none; body is malloc'd and freed
 * by the loop.
 */
struct consume_extra {
	char message_id[IDS_UUID_LEN + 1];
	const char *exchange; /* a static string, e.g. MQ_EXCHANGE_ORDERS */
	char routing_key[MQ_KEY_MAX];
	uint8_t *body;
	size_t len;
};

/*
 * What process() or replay() produce. outcome is required; exchange NULL
 * means there is nothing to publish. body is malloc'd and freed by the loop.
 * Messages to the exchange MQ_EXCHANGE_ORDERS are work for a queue and are
 * published mandatory (one no queue takes is an error); others are not.
 */
struct consume_result {
	char outcome[CONSUME_OUTCOME_MAX];
	/* Set by the loop, not the hooks: */
	char message_id[IDS_UUID_LEN + 1]; /* the outgoing message's id */
	char order_id[IDS_UUID_LEN + 1];   /* the input's order id, for logs */
	int replayed;                      /* 1 when replay() made it */
	/* Set by process() or replay(): */
	const char *exchange; /* a static string, e.g. MQ_EXCHANGE_ORDERS */
	char routing_key[MQ_KEY_MAX];
	uint8_t *body;
	size_t len;
	struct consume_extra extra; /* optional; published after the first */
};

struct consume_handler {
	/* "inventory": the inbox consumer name, the metric label and the
	 * daemon name "orders-inventory" in every log line. */
	const char *name;
	const char *queue; /* the work queue to consume */
	int default_port;  /* ops port when ORDERS_METRICS_PORT is 0 */
	/* The secrets the handler uses (enum config_need): production refuses
	 * to start while one of them is left at its development default. */
	unsigned needs;

	/* init - optional: make *state from the configuration (keys, extra
	 * connections). An error stops the daemon before it consumes. */
	int (*init)(const struct config *cfg, void **state);
	/* fini - optional: free what init made. */
	void (*fini)(void *state);

	/*
	 * decode - unpack and validate in->body (for in->routing_key), set
	 * in->msg and in->order_id (a lowercase UUID). ERR_PARSE or
	 * ERR_INVALID for a message that can never be processed.
	 */
	int (*decode)(void *state, struct consume_input *in);
	/* msg_free - free in->msg; called with NULL too. */
	void (*msg_free)(void *msg);

	/*
	 * process - do the work with db, inside the loop's transaction (use
	 * savepoints for partial rollbacks, never COMMIT or ROLLBACK), and fill
	 * res. Other messages of the batch may have been processed before in
	 * the same transaction; when one fails later, the batch starts over
	 * and process() runs again for this one (so must anything it does
	 * outside the database be idempotent, as for a redelivery). Returns ERR_OK,
	 * ERR_PARSE/ERR_INVALID (poison) or a transient error (ERR_UNAVAILABLE, ERR_TIMEOUT,
	 * ERR_DB, ...). Map db_exec()'s ERR_INVALID/ERR_CONFLICT through consume_db_rc() so that a
	 * database refusal is not mistaken for poison. A handler with a finish hook may leave
	 * res->outcome empty for finish() to fill. Statements that run for every message are
	 * best run with db_exec_stmt() (named "<handler name>.<what>"; the loop's own are
	 * "consume.*"): the connection prepares each once.
	 */
	int (*process)(void *state, struct db *db, const struct consume_input *in,
	               struct consume_result *res);

	/*
	 * prepare - optional: called once per batch right after BEGIN with the
	 * n decoded inputs (delivery order; replays among them, not yet known
	 * as such), to lock what the batch will lock, in the global order (see
	 * Deadlocks above). An error fails the batch (each message is then
	 * retried alone).
	 */
	int (*prepare)(void *state, struct db *db, const struct consume_input *const *in, size_t n);

	/*
	 * finish - optional: called once per batch after the last process(),
	 * before the inbox outcomes are written and the batch commits, with the
	 * n deliveries process() handled in this transaction (not replays, not
	 * failures), in delivery order (n >= 1). It completes their results: an
	 * outcome process() left empty must be filled here. For work that must
	 * come last in the transaction (rows whose order must follow commit
	 * order). An error fails the batch (each message is then retried alone).
	 */
	int (*finish)(void *state, struct db *db, const struct consume_input *const *in,
	              struct consume_result *const *res, size_t n);

	/* Deliveries per batch when ORDERS_CONSUMER_BATCH is 0: 0 means
	 * CONSUME_BATCH_DEFAULT, 1 one transaction per message (say, for a
	 * handler that waits on a slow remote service per message). */
	int batch;

	/*
	 * replay - rebuild into res the outgoing message process() produced
	 * for this input and outcome (res->outcome is already set). No
	 * database access. ERR_PARSE for an outcome it does not know.
	 */
	int (*replay)(void *state, const struct consume_input *in, const char *outcome,
	              struct consume_result *res);

	/*
	 * tick - optional periodic work, every tick_ms (> 0 when tick is
	 * set): db is not in a transaction, so the hook opens and ends its
	 * own (BEGIN ... COMMIT or ROLLBACK, never left open), and may publish
	 * with mq_publish_sync(pub, ...). It logs its own failures; an error
	 * return only makes the loop check PostgreSQL before going on.
	 */
	int (*tick)(void *state, struct db *db, struct mq_publisher *pub);
	int tick_ms;
};

/*
 * consume_main - the whole daemon: configuration, logging, metrics, the ops
 * endpoints, PostgreSQL, the publisher, handler init, the loop until
 * SIGTERM/SIGINT, and the release of everything. Returns the process exit
 * status: 0 after a clean stop, 2 on a bad configuration, 1 when start-up
 * fails otherwise.
 */
int consume_main(const struct consume_handler *h, int argc, char **argv);

/*
 * consume__deliver - steps 1-3 for one delivery on db without RabbitMQ:
 * check and decode it, then process it in the inbox transaction or replay
 * its recorded outcome. On ERR_OK res holds the outcome and the message to
 * publish (release it with consume_result_release); res->order_id is set
 * whenever decoding got that far. Errors as the hooks give them; poison is
 * logged. Leaves the calling thread's log context set to the delivery (see
 * above) for the caller's own lines about it; the caller clears it. Used by
 * the loop, and by tests to drive a handler directly.
 */
int consume__deliver(const struct consume_handler *h, void *state, struct db *db,
                     const struct mq_delivery *d, struct consume_result *res);

/*
 * consume__deliver_batch - steps 1-3 for n deliveries (1..CONSUME_BATCH_MAX,
 * distinct message ids) in one transaction, as the loop does, without its
 * holding and retrying: rcs[i] and res[i] for d[i] as consume__deliver()
 * gives them. Returns ERR_OK once the batch committed (each rcs[i] says
 * what became of its delivery), ERR_INVALID for bad arguments, else the
 * batch's own error: nothing was committed, every res[i] is empty but for
 * its order_id, every rcs[i] that error. Clears the log context. For tests.
 */
int consume__deliver_batch(const struct consume_handler *h, void *state, struct db *db,
                           const struct mq_delivery *d, size_t n, struct consume_result *res,
                           int *rcs);

/* consume_result_release - free res->body and res->extra.body, and empty res. */
void consume_result_release(struct consume_result *res);

/* ---- helpers for handlers ----------------------------------------------- */

/* consume_db_rc - a db_exec() or db_exec_stmt() error as a transient one:
 * ERR_INVALID (a check violation) and ERR_CONFLICT become ERR_DB; the rest
 * pass through. */
int consume_db_rc(int rc);

/* consume_utf8_ok - 1 when s is valid UTF-8 (PostgreSQL refuses anything
 * else in text, which would otherwise look like a transient failure). */
int consume_utf8_ok(const char *s);

/* consume_sku_ok - 1 when s matches ^[A-Za-z0-9._-]{1,64}$. */
int consume_sku_ok(const char *s);

/* consume_currency_ok - 1 when s is three upper-case ASCII letters. */
int consume_currency_ok(const char *s);

/*
 * consume_sleep_ms - sleep, waking early once a stop has been requested.
 * Returns 1 when the daemon is stopping.
 */
int consume_sleep_ms(int ms);

/* consume_stopping - 1 once SIGTERM or SIGINT has arrived. */
int consume_stopping(void);

/*
 * consume_field - the n-th (from 0) ':'-separated field of an outcome text
 * into out (size outlen; may be empty). ERR_NOT_FOUND when there are fewer
 * fields, ERR_TOO_BIG when it does not fit. Outcome fields never contain
 * ':' themselves (ids, tokens, codes, SKUs).
 */
int consume_field(const char *outcome, int n, char *out, size_t outlen);

/*
 * consume_envelope_problem / consume_order_problem - NULL when the envelope
 * (present, message_id, order_id a lowercase UUID, UTF-8 texts) or the order
 * (1..100 lines, SKU pattern, quantity 1..999, prices and total >= 0,
 * currency ^[A-Z]{3}$, cart_id empty or a lowercase UUID, UTF-8 texts) is
 * acceptable, else a short reason for the log (never any input text). A
 * problem makes the message poison.
 */
const char *consume_envelope_problem(const Orders__Envelope *env);
const char *consume_order_problem(const Orders__Order *o);

/*
 * consume_card_problem - NULL when the sealed card is present and shaped as
 * payment-consumer opens it (a 32-byte sender key, a 24-byte nonce, a
 * ciphertext that can hold a card record, a brand of at most 16 characters
 * and 4 last digits), else a short reason. Whoever passes the card on checks
 * it too, so that a card that can never be opened is refused first.
 */
const char *consume_card_problem(const Orders__SealedCard *sc);

/*
 * consume_pg_array_add - append s to a PostgreSQL array literal in b as one
 * double-quoted element, with a comma before it unless first. The caller
 * writes the braces. Errors from buf_append (ERR_TOO_BIG, ERR_NOMEM).
 */
int consume_pg_array_add(struct buf *b, const char *s, int first);

/*
 * consume_pg_array - the PostgreSQL array literal of the n strings v (a
 * text[], each element quoted) into b, which it initialises with room for
 * them: release it with buf_release() whatever the result. ERR_NOMEM.
 */
int consume_pg_array(struct buf *b, const char *const *v, size_t n);

/*
 * consume_lock_all - run st, a statement that locks rows (or takes
 * advisory locks) by $1, a text[] made of the n keys, in a global order;
 * for prepare() hooks, e.g. "SELECT 1 FROM orders WHERE order_id = ANY
 * ($1::uuid[]) ORDER BY order_id FOR UPDATE". Keys may repeat. ERR_NOMEM,
 * or db_exec_stmt()'s errors through consume_db_rc().
 */
int consume_lock_all(struct db *db, const struct db_stmt *st, const char *const *keys, size_t n);

/* consume_field_count - how many ':'-separated fields outcome has. */
int consume_field_count(const char *outcome);

/*
 * consume_derived_id - a message id derived from (what, id) with the key
 * the loop derives its outgoing ids with: the same parts always give the
 * same id, and they never meet the loop's own (a consumer name and an
 * input message id) as long as what is no consumer name. For messages
 * that stand for one fact, e.g. ("order.cart_checked_out", order id), so
 * that every path that publishes the fact publishes the same message.
 */
void consume_derived_id(const char *what, const char *id, char out[IDS_UUID_LEN + 1]);

#endif
