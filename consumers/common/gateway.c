/* gateway.c: the simulated payment provider, with a ledger that survives our rollbacks. */
#include "gateway.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consume.h"
#include "db.h"
#include "err.h"

/* How many transient failures the retry test card gives per idempotency key. */
#define FLAKY_FAILURES 2

struct gateway {
	char *dsn;
	struct db *db;
	int latency_ms;
};

struct gateway *gateway_new(const char *dsn, int latency_ms)
{
	struct gateway *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->dsn = strdup(dsn ? dsn : "");
	if (!g->dsn) {
		free(g);
		return NULL;
	}
	g->latency_ms = latency_ms > 0 ? latency_ms : 0;
	return g;
}

void gateway_free(struct gateway *g)
{
	if (!g)
		return;
	db_free(g->db);
	free(g->dsn);
	free(g);
}

/* Every database failure on the provider's side looks transient to us. */
static int gw_rc(int rc)
{
	return rc == ERR_OK ? ERR_OK : ERR_UNAVAILABLE;
}

/* The recorded charge for key: ERR_OK and *found = 1 with out filled, or *found = 0. */
static int lookup(struct gateway *g, const char *key, struct gateway_result *out, int *found)
{
	static const char sql[] = "SELECT approved AND voided_at IS NULL, "
	                          "coalesce(decline_code, CASE WHEN voided_at IS NOT NULL "
	                          "THEN 'authorization_voided' END, ''), authorization_id "
	                          "FROM gateway_charges WHERE idempotency_key = $1";
	PGresult *r = NULL;
	int rc;

	rc = db_exec(g->db, sql, 1, &key, &r);
	if (rc)
		return gw_rc(rc);
	*found = PQntuples(r) == 1;
	if (*found) {
		memset(out, 0, sizeof(*out));
		out->approved = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
		snprintf(out->decline_code, sizeof(out->decline_code), "%s", PQgetvalue(r, 0, 1));
		snprintf(out->authorization_id, sizeof(out->authorization_id), "%s",
		         PQgetvalue(r, 0, 2));
	}
	PQclear(r);
	return ERR_OK;
}

/* Connect on first use, and answer after the configured latency. */
static int gw_ready(struct gateway *g)
{
	if (g->latency_ms > 0)
		consume_sleep_ms(g->latency_ms);
	if (!g->db) {
		g->db = db_new(g->dsn);
		if (!g->db)
			return ERR_UNAVAILABLE;
	}
	return ERR_OK;
}

/* Count one more attempt for key; the new count into *attempts. */
static int count_attempt(struct gateway *g, const char *key, long *attempts)
{
	static const char sql[] =
	    "INSERT INTO gateway_attempts (idempotency_key, attempts) VALUES ($1, 1) "
	    "ON CONFLICT (idempotency_key) DO UPDATE "
	    "SET attempts = gateway_attempts.attempts + 1 RETURNING attempts";
	PGresult *r = NULL;
	int rc;

	rc = db_exec(g->db, sql, 1, &key, &r);
	if (rc)
		return gw_rc(rc);
	*attempts = PQntuples(r) == 1 ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : 0;
	PQclear(r);
	return ERR_OK;
}

int gateway_charge(struct gateway *g, const char *idempotency_key, const struct card *card,
                   int64_t amount_cents, const char *currency, struct gateway_result *out)
{
	static const char insert_sql[] =
	    "INSERT INTO gateway_charges (idempotency_key, amount_cents, currency, approved, "
	    "decline_code, authorization_id) "
	    "VALUES ($1, $2::bigint, $3, $4::boolean, NULLIF($5, ''), $6) "
	    "ON CONFLICT DO NOTHING";
	struct gateway_result res;
	uint8_t rnd[12];
	char amount[24];
	const char *p[6];
	const char *decline = "";
	long attempts = 0;
	int rc, found = 0;

	rc = gw_ready(g);
	if (rc)
		return rc;
	rc = lookup(g, idempotency_key, out, &found);
	if (rc || found)
		return rc;

	if (strcmp(card->number, "4000000000000002") == 0) {
		decline = "card_declined";
	} else if (strcmp(card->number, "4000000000009995") == 0) {
		decline = "insufficient_funds";
	} else if (strcmp(card->number, "4000000000000119") == 0) {
		rc = count_attempt(g, idempotency_key, &attempts);
		if (rc)
			return rc;
		if (attempts <= FLAKY_FAILURES)
			return ERR_UNAVAILABLE;
	}

	memset(&res, 0, sizeof(res));
	res.approved = decline[0] == '\0';
	snprintf(res.decline_code, sizeof(res.decline_code), "%s", decline);
	randombytes_buf(rnd, sizeof(rnd));
	memcpy(res.authorization_id, "auth_", 5);
	sodium_bin2hex(res.authorization_id + 5, sizeof(res.authorization_id) - 5, rnd,
	               sizeof(rnd));
	snprintf(amount, sizeof(amount), "%" PRId64, amount_cents);
	p[0] = idempotency_key;
	p[1] = amount;
	p[2] = currency;
	p[3] = res.approved ? "true" : "false";
	p[4] = res.decline_code;
	p[5] = res.authorization_id;
	rc = db_exec(g->db, insert_sql, 6, p, NULL);
	if (rc)
		return gw_rc(rc);
	/* Whoever wrote first wins; everyone answers with the stored row. */
	rc = lookup(g, idempotency_key, out, &found);
	if (rc)
		return rc;
	return found ? ERR_OK : ERR_UNAVAILABLE;
}

int gateway_void(struct gateway *g, const char *idempotency_key, int *voided)
{
	static const char sql[] = "UPDATE gateway_charges SET voided_at = now() "
	                          "WHERE idempotency_key = $1 AND approved AND voided_at IS NULL "
	                          "RETURNING 1";
	PGresult *r = NULL;
	int rc;

	rc = gw_ready(g);
	if (rc)
		return rc;
	rc = db_exec(g->db, sql, 1, &idempotency_key, &r);
	if (rc)
		return gw_rc(rc);
	if (voided)
		*voided = PQntuples(r) == 1;
	PQclear(r);
	return ERR_OK;
}
