/* payment.c: opens the sealed card, vaults it and authorizes the order through the gateway. */
#include "payment.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "card.h"
#include "err.h"
#include "gateway.h"
#include "log.h"
#include "seal.h"
#include "vault.h"

struct payment {
	struct opener *opener;
	struct vault vault;
	struct gateway *gateway;
};

/* In-process retries of a transient gateway failure, before the loop's own. */
static const int retry_delays_ms[] = {50, 100, 200, 400, 800};
#define RETRIES (sizeof(retry_delays_ms) / sizeof(retry_delays_ms[0]))

static void pay_fini(void *state)
{
	struct payment *pay = state;

	if (!pay)
		return;
	opener_free(pay->opener);
	vault_release(&pay->vault);
	gateway_free(pay->gateway);
	sodium_memzero(pay, sizeof(*pay));
	free(pay);
}

static int pay_init(const struct config *cfg, void **state)
{
	uint8_t sk[SEAL_KEY_BYTES];
	struct payment *pay = calloc(1, sizeof(*pay));
	int rc = ERR_NOMEM;

	if (!pay)
		return ERR_NOMEM;
	if (seal_hex_decode(cfg->seal_secret_key, sk, sizeof(sk)) != ERR_OK) {
		log_error("cannot use ORDERS_SEAL_SECRET_KEY: it must be 64 hex digits");
		rc = ERR_INVALID;
		goto fail;
	}
	pay->opener = opener_new(sk);
	sodium_memzero(sk, sizeof(sk));
	if (!pay->opener)
		goto fail;
	rc = vault_init(&pay->vault, cfg->vault_key, cfg->fingerprint_key);
	if (rc)
		goto fail;
	rc = ERR_NOMEM;
	pay->gateway = gateway_new(cfg->pg_dsn, cfg->gateway_latency_ms);
	if (!pay->gateway)
		goto fail;
	*state = pay;
	return ERR_OK;
fail:
	pay_fini(pay);
	return rc;
}

static void pay_msg_free(void *msg)
{
	if (msg)
		orders__inventory_reserved__free_unpacked(msg, NULL);
}

static int pay_decode(void *state, struct consume_input *in)
{
	Orders__InventoryReserved *m;
	const char *why;

	(void)state;
	m = orders__inventory_reserved__unpack(NULL, in->len, in->body);
	if (!m) {
		log_error("cannot unpack inventory.reserved", LF_STR("message_id", in->message_id));
		return ERR_PARSE;
	}
	why = consume_envelope_problem(m->envelope);
	if (!why)
		why = consume_order_problem(m->order);
	if (!why)
		why = consume_card_problem(m->card);
	if (why) {
		log_error("cannot accept inventory.reserved", LF_STR("message_id", in->message_id),
		          LF_STR("reason", why));
		orders__inventory_reserved__free_unpacked(m, NULL);
		return ERR_INVALID;
	}
	in->msg = m;
	in->order_id = m->envelope->order_id;
	in->correlation_id = m->envelope->correlation_id;
	return ERR_OK;
}

/* ---- outgoing message ---------------------------------------------------- */

static int build_result(Orders__InventoryReserved *m, const struct consume_input *in,
                        int authorized, const char *code, const char *token, const char *auth_id,
                        struct consume_result *res)
{
	Orders__PaymentResult out = ORDERS__PAYMENT_RESULT__INIT;
	Orders__Envelope env = ORDERS__ENVELOPE__INIT;
	const char *key = authorized ? MQ_KEY_PAYMENT_AUTHORIZED : MQ_KEY_PAYMENT_DECLINED;
	int rc;

	proto_envelope_set(&env, (char *)in->out_message_id, m->envelope->order_id,
	                   in->processed_ms, m->envelope->correlation_id);
	out.envelope = &env;
	out.order = m->order;
	out.authorized = authorized ? 1 : 0;
	out.decline_code = (char *)code;
	out.token = (char *)token;
	out.brand = m->card->brand;
	out.last4 = m->card->last4;
	out.authorization_id = (char *)auth_id;
	rc = proto_pack(&out.base, &res->body, &res->len);
	if (rc)
		return rc == ERR_TOO_BIG ? ERR_INVALID : rc;
	res->exchange = MQ_EXCHANGE_ORDERS;
	snprintf(res->routing_key, sizeof(res->routing_key), "%s", key);
	return ERR_OK;
}

/* ---- processing ---------------------------------------------------------- */

/*
 * Lock the order row for the whole transaction and read its status, and
 * whether its reservation has run out (*expired = 1). The expiry is checked
 * against the clock (not the transaction's start, which may be long past
 * after waiting for the lock) and after the lock: pay_prepare has taken it
 * already, right after BEGIN, so this statement waits for nothing and reads
 * the clock with the row ours. The expiry sweeper takes the same lock, so
 * an order is either charged in time or expired, never both.
 */
static int lock_order(struct db *db, const char *order_id, char *status, size_t len, int *expired)
{
	static const struct db_stmt st = {
	    "payment.lock_order", "SELECT o.status, EXISTS (SELECT 1 FROM reservations r "
	                          "WHERE r.order_id = o.order_id AND r.state = 'held' "
	                          "AND r.expires_at <= clock_timestamp()) "
	                          "FROM orders o WHERE o.order_id = $1::uuid FOR UPDATE OF o"};
	PGresult *r = NULL;
	int rc;

	rc = consume_db_rc(db_exec_stmt(db, &st, 1, &order_id, &r));
	if (rc)
		return rc;
	if (PQntuples(r) != 1) {
		/* inventory-consumer commits the order before announcing it. */
		PQclear(r);
		log_error("cannot find order to charge", LF_STR("order_id", order_id));
		return ERR_DB;
	}
	snprintf(status, len, "%s", PQgetvalue(r, 0, 0));
	*expired = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
	PQclear(r);
	return ERR_OK;
}

/*
 * Open the sealed card into *card. Anything that does not open or decode is
 * poison: it will not open any better next time.
 */
static int open_card(struct payment *pay, const struct consume_input *in,
                     const Orders__SealedCard *sc, struct card *card)
{
	uint8_t plain[CARD_RECORD_MAX];
	size_t n = sc->ciphertext.len - SEAL_MAC_BYTES;
	char last4[5];
	int rc;

	rc = opener_open(pay->opener, sc->sender_public_key.data, sc->nonce.data,
	                 sc->ciphertext.data, sc->ciphertext.len, plain);
	if (rc) {
		log_error("cannot open sealed card", LF_STR("message_id", in->message_id),
		          LF_STR("order_id", in->order_id), LF_STR("error", err_str(rc)));
		return ERR_INVALID;
	}
	rc = card_decode((const char *)plain, n, card);
	sodium_memzero(plain, sizeof(plain));
	if (rc) {
		log_error("cannot decode opened card record", LF_STR("message_id", in->message_id),
		          LF_STR("order_id", in->order_id));
		return ERR_INVALID;
	}
	/* The clear brand and last4 travel on; they must be this card's. */
	card_last4(card->number, last4);
	if (strcmp(card_brand(card->number), sc->brand) != 0 || strcmp(last4, sc->last4) != 0) {
		log_error("cannot accept sealed card: its clear brand or last4 does not match",
		          LF_STR("message_id", in->message_id), LF_STR("order_id", in->order_id));
		card_wipe(card);
		return ERR_INVALID;
	}
	return ERR_OK;
}

/*
 * Sleep between gateway retries. A stop request does not cut it short: the
 * delays add up to 1.55 s, so the message in hand is finished and acked on
 * SIGTERM, as the consume loop promises, rather than given up and requeued.
 */
static void retry_sleep_ms(int ms)
{
	struct timespec ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int charge(struct payment *pay, const struct consume_input *in, const struct card *card,
                  const Orders__Order *o, struct gateway_result *gr, int *attempts)
{
	size_t i;
	int rc;

	for (i = 0;; i++) {
		rc = gateway_charge(pay->gateway, in->order_id, card, o->total_cents, o->currency,
		                    gr);
		*attempts = (int)i + 1;
		if (rc == ERR_OK)
			return ERR_OK;
		if (i == RETRIES)
			break;
		log_warn("payment gateway failed, retrying", LF_STR("message_id", in->message_id),
		         LF_STR("order_id", in->order_id), LF_STR("error", err_str(rc)),
		         LF_INT("retry_in_ms", retry_delays_ms[i]));
		retry_sleep_ms(retry_delays_ms[i]);
	}
	log_error("cannot authorize payment: gateway unavailable",
	          LF_STR("message_id", in->message_id), LF_STR("order_id", in->order_id),
	          LF_INT("attempts", *attempts));
	return ERR_UNAVAILABLE;
}

static int record_payment(struct db *db, const char *order_id, const Orders__Order *o,
                          const Orders__SealedCard *sc, const char *token,
                          const struct gateway_result *gr, int attempts)
{
	static const struct db_stmt st = {
	    "payment.record_payment",
	    "WITH pay AS (INSERT INTO payments (order_id, token, amount_cents, currency, "
	    "authorized, decline_code, authorization_id, attempts) "
	    "VALUES ($1::uuid, $2, $3::bigint, $4, $5::boolean, NULLIF($6, ''), NULLIF($7, ''), "
	    "$8::int) ON CONFLICT DO NOTHING) "
	    "UPDATE orders SET payment_token = $2, card_brand = $9, card_last4 = $10, "
	    "updated_at = now() WHERE order_id = $1::uuid"};
	char amount[24], tries[16];
	const char *p[10];

	snprintf(amount, sizeof(amount), "%" PRId64, (int64_t)o->total_cents);
	snprintf(tries, sizeof(tries), "%d", attempts);
	p[0] = order_id;
	p[1] = token;
	p[2] = amount;
	p[3] = o->currency;
	p[4] = gr->approved ? "true" : "false";
	p[5] = gr->decline_code;
	p[6] = gr->authorization_id;
	p[7] = tries;
	p[8] = sc->brand;
	p[9] = sc->last4;
	return consume_db_rc(db_exec_stmt(db, &st, 10, p, NULL));
}

static void utc_year_month(int *year, int *month)
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	*year = tm.tm_year + 1900;
	*month = tm.tm_mon + 1;
}

static int pay_process(void *state, struct db *db, const struct consume_input *in,
                       struct consume_result *res)
{
	struct payment *pay = state;
	Orders__InventoryReserved *m = in->msg;
	struct gateway_result gr;
	struct card card;
	enum card_problem problem;
	char status[32], token[VAULT_TOKEN_LEN + 1] = "";
	int rc, year, month, attempts = 0, expired = 0;

	memset(&card, 0, sizeof(card));
	memset(&gr, 0, sizeof(gr));
	rc = lock_order(db, in->order_id, status, sizeof(status), &expired);
	if (rc)
		goto out;
	if (strcmp(status, "reserved") != 0) {
		/* Expired (or otherwise final) meanwhile: never charge it now. */
		log_warn("order is no longer reserved, not charging it",
		         LF_STR("message_id", in->message_id), LF_STR("order_id", in->order_id),
		         LF_STR("status", status));
		snprintf(res->outcome, sizeof(res->outcome), "noop:%s", status);
		/*
		 * An earlier attempt whose session died may have been authorized
		 * after the order ended: this redelivery is where that shows, so
		 * void it here (a primary-key lookup at the gateway).
		 */
		if (strcmp(status, "confirmed") != 0) {
			int voided = 0;

			rc = gateway_void(pay->gateway, in->order_id, &voided);
			if (!rc && voided)
				log_warn("voided the authorization of an order that ended unpaid",
				         LF_STR("message_id", in->message_id),
				         LF_STR("order_id", in->order_id),
				         LF_STR("status", status));
		}
		goto out;
	}
	if (expired) {
		/*
		 * Too late to pay, even if the sweeper has not come by yet: it
		 * will expire the order, release the stock and void any
		 * authorization an earlier, interrupted attempt left behind.
		 */
		log_warn("reservation has expired, not charging the order",
		         LF_STR("message_id", in->message_id), LF_STR("order_id", in->order_id));
		snprintf(res->outcome, sizeof(res->outcome), "noop:expired");
		goto out;
	}
	rc = open_card(pay, in, m->card, &card);
	if (rc)
		goto out;
	utc_year_month(&year, &month);
	problem = card_validate(&card, year, month);
	if (problem != CARD_OK) {
		card_wipe(&card);
		log_info("card is not valid, declining", LF_STR("message_id", in->message_id),
		         LF_STR("order_id", in->order_id),
		         LF_STR("reason", card_problem_str(problem)));
		snprintf(res->outcome, sizeof(res->outcome), "declined:invalid_card:");
		rc = build_result(m, in, 0, "invalid_card", "", "", res);
		goto out;
	}
	rc = charge(pay, in, &card, m->order, &gr, &attempts);
	if (rc)
		goto out;
	rc = vault_store(&pay->vault, db, &card, token);
	/* Nothing needs the number or the CVC any more. */
	card_wipe(&card);
	if (rc)
		goto out;
	rc = record_payment(db, in->order_id, m->order, m->card, token, &gr, attempts);
	if (rc)
		goto out;
	if (gr.approved) {
		snprintf(res->outcome, sizeof(res->outcome), "authorized:%s:%s",
		         gr.authorization_id, token);
		rc = build_result(m, in, 1, "", token, gr.authorization_id, res);
	} else {
		snprintf(res->outcome, sizeof(res->outcome), "declined:%s:%s", gr.decline_code,
		         token);
		rc = build_result(m, in, 0, gr.decline_code, token, "", res);
	}
out:
	card_wipe(&card);
	return rc;
}

/*
 * Lock the orders up front, right after BEGIN: in order id order, the order
 * everyone locks several orders in, against deadlocks when batched
 * (ORDERS_CONSUMER_BATCH > 1); and, batched or not, before lock_order reads
 * the clock for the reservation's expiry.
 */
static int pay_prepare(void *state, struct db *db, const struct consume_input *const *in, size_t n)
{
	static const struct db_stmt st = {"payment.lock_orders",
	                                  "SELECT 1 FROM orders WHERE order_id = ANY ($1::uuid[]) "
	                                  "ORDER BY order_id FOR UPDATE"};
	const char *ids[CONSUME_BATCH_MAX];
	size_t i;

	(void)state;
	for (i = 0; i < n && i < CONSUME_BATCH_MAX; i++)
		ids[i] = in[i]->order_id;
	return consume_lock_all(db, &st, ids, i);
}

static int pay_replay(void *state, const struct consume_input *in, const char *outcome,
                      struct consume_result *res)
{
	Orders__InventoryReserved *m = in->msg;
	char a[GATEWAY_CODE_MAX], token[VAULT_TOKEN_LEN + 1];

	(void)state;
	if (strncmp(outcome, "noop:", 5) == 0)
		return ERR_OK;
	if (consume_field_count(outcome) != 3 || consume_field(outcome, 1, a, sizeof(a)) ||
	    consume_field(outcome, 2, token, sizeof(token)))
		return ERR_PARSE;
	if (strncmp(outcome, "authorized:", 11) == 0)
		return build_result(m, in, 1, "", token, a, res);
	if (strncmp(outcome, "declined:", 9) == 0)
		return build_result(m, in, 0, a, token, "", res);
	return ERR_PARSE;
}

const struct consume_handler payment_handler = {
    .name = "payment",
    .queue = MQ_QUEUE_PAYMENT,
    .default_port = 9102,
    .needs = CONFIG_NEED_SEAL_SECRET | CONFIG_NEED_VAULT | CONFIG_NEED_FINGERPRINT,
    .init = pay_init,
    .fini = pay_fini,
    .decode = pay_decode,
    .msg_free = pay_msg_free,
    .process = pay_process,
    .replay = pay_replay,
    .prepare = pay_prepare,
    /*
     * Each authorization waits for the gateway, outside PostgreSQL: a
     * batch would only add its messages' waits up before any is acked.
     * Throughput comes from more consumers instead.
     */
    .batch = 1,
};
