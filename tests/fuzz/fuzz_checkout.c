/*
 * fuzz_checkout.c: POST /v1/checkouts's body (the input) through
 * body_parse() and checkout_parse(), and for an accepted items checkout
 * through what the handler makes of it next: the pending view Redis keeps
 * (checkout_snapshot) and the checkout.requested message (checkout_message),
 * which every consumer along the flow must accept (flow.h).
 */
#include <inttypes.h>

#include <sodium.h>

#include "card.h"
#include "config.h"
#include "flow.h"
#include "fuzz.h"
#include "ids.h"
#include "parse.h"
#include "seal.h"

static struct api api;
static struct apikey key;
static struct request req;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* The development defaults of the sealing and order id keys. */
	static const char seal_pk[] =
	    "05638a2115cf33b298907f2fe5719403e168290d2a3d9ee35944da3e711ef249";
	static const char order_id_key[] =
	    "a69bbf245efef7d23420bb343b1007bf608d25e790662c8b6874a651c315a8da";
	uint8_t pk[SEAL_KEY_BYTES];

	(void)argc;
	(void)argv;
	FUZZ_CHECK(seal_init() == ERR_OK);
	fuzz_quiet_logs();
	FUZZ_CHECK(seal_hex_decode(seal_pk, pk, sizeof(pk)) == ERR_OK);
	FUZZ_CHECK(seal_hex_decode(order_id_key, api.order_id_key, 32) == ERR_OK);
	api.sealer = sealer_new(pk);
	FUZZ_CHECK(api.sealer);
	snprintf(key.client_id, sizeof(key.client_id), "key_0123456789ab");
	key.role = ROLE_CLIENT;
	req.api = &api;
	req.key = &key;
	snprintf(req.request_id, sizeof(req.request_id), "fuzz-request");
	memset(req.idem_hash, 'a', 32);
	ids_uuid_derived(api.order_id_key, key.client_id, "fuzz-key", req.order_id);
	return 0;
}

/* 1 when s occurs in what the client sent other than the card itself (a
 * customer id of card digits, a sku, a member name): then it may show up. */
static int sent_elsewhere(json_t *root, const char *s)
{
	json_t *copy = json_deep_copy(root);
	json_t *card = json_object_get(json_object_get(copy, "payment"), "card");
	char *text;
	int found;

	json_object_del(card, "number");
	json_object_del(card, "cvc");
	text = json_dumps(copy, JSON_COMPACT);
	FUZZ_CHECK(text);
	found = strstr(text, s) != NULL;
	free(text);
	json_decref(copy);
	return found;
}

/* The card number sent, when it is long enough to be told apart. */
static const char *sent_number(json_t *root)
{
	json_t *card = json_object_get(json_object_get(root, "payment"), "card");
	const char *n = json_string_value(json_object_get(card, "number"));

	return n && strlen(n) >= 12 && !sent_elsewhere(root, n) ? n : NULL;
}

static int mem_has(const uint8_t *hay, size_t len, const char *needle)
{
	size_t n = strlen(needle);

	for (size_t i = 0; n && i + n <= len; i++)
		if (memcmp(hay + i, needle, n) == 0)
			return 1;
	return 0;
}

/* What an accepted checkout holds: every value within the contract's limits. */
static void check_accepted(const struct checkout *co)
{
	static const char *const required[] = {"name", "line1", "city", "postal_code", "country"};
	size_t i, n;

	n = strlen(co->customer_id);
	FUZZ_CHECK(n >= 1 && n <= 128 && fuzz_utf8(co->customer_id));
	FUZZ_CHECK(!co->customer_email[0] ||
	           (strlen(co->customer_email) <= 254 && strchr(co->customer_email, '@')));
	FUZZ_CHECK(json_is_object(co->shipping));
	for (i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		const char *v = json_string_value(json_object_get(co->shipping, required[i]));

		FUZZ_CHECK(v && strlen(v) >= 1 && strlen(v) <= 200);
	}
	FUZZ_CHECK(card_validate(&co->card, 2026, 6) == CARD_OK);
	if (co->cart_id[0]) {
		FUZZ_CHECK(ids_uuid_valid(co->cart_id) && co->nlines == 0);
		return;
	}
	FUZZ_CHECK(valid_currency(co->currency));
	FUZZ_CHECK(co->nlines >= 1 && co->nlines <= CHECKOUT_MAX_LINES);
	for (i = 0; i < co->nlines; i++) {
		FUZZ_CHECK(valid_sku(co->lines[i].sku) && strlen(co->lines[i].sku) <= 64);
		FUZZ_CHECK(co->lines[i].quantity >= 1 &&
		           co->lines[i].quantity <= CHECKOUT_MAX_QUANTITY);
	}
}

/* Prices as the catalog could have them (0 to 10^12 cents), then the total as priced. */
static void price(struct checkout *co)
{
	co->total = 0;
	for (size_t i = 0; i < co->nlines; i++) {
		co->lines[i].unit_price = (int64_t)strlen(co->lines[i].sku) * INT64_C(15625000000);
		co->total += co->lines[i].unit_price * co->lines[i].quantity;
	}
}

/* The pending view: "<client_id> <json>", the JSON saying what was accepted. */
static void check_snapshot(const struct checkout *co, const char *number)
{
	char *snap = checkout_snapshot(&req, co, FUZZ_NOW_MS);
	json_t *doc, *items;
	size_t n = strlen(key.client_id);

	FUZZ_CHECK(snap);
	FUZZ_CHECK(strncmp(snap, key.client_id, n) == 0 && snap[n] == ' ');
	doc = json_loads(snap + n + 1, JSON_REJECT_DUPLICATES, NULL);
	FUZZ_CHECK(doc);
	FUZZ_CHECK(
	    strcmp(json_string_value(json_object_get(doc, "customer_id")), co->customer_id) == 0);
	FUZZ_CHECK(strcmp(json_string_value(json_object_get(doc, "order_id")), req.order_id) == 0);
	FUZZ_CHECK(json_integer_value(json_object_get(doc, "total_cents")) == co->total);
	items = json_object_get(doc, "items");
	FUZZ_CHECK(json_array_size(items) == co->nlines);
	for (size_t i = 0; i < co->nlines; i++) {
		json_t *it = json_array_get(items, i);

		FUZZ_CHECK(
		    strcmp(json_string_value(json_object_get(it, "sku")), co->lines[i].sku) == 0);
		FUZZ_CHECK(json_integer_value(json_object_get(it, "quantity")) ==
		           co->lines[i].quantity);
	}
	FUZZ_CHECK(!number || !strstr(snap, number));
	json_decref(doc);
	free(snap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct checkout *co = calloc(1, sizeof(*co));
	char message_id[IDS_UUID_LEN + 1];
	const char *number;
	struct api_error e;
	uint8_t *msg = NULL;
	size_t len = 0;
	json_t *root;

	FUZZ_CHECK(co);
	root = body_parse((const char *)data, size, &e);
	if (!root) {
		fuzz_check_error(&e, 1);
		free(co);
		return 0;
	}
	co->root = root;
	number = sent_number(root);
	if (checkout_parse(root, FUZZ_NOW, co, &e) != ERR_OK) {
		fuzz_check_error(&e, 1);
		FUZZ_CHECK(e.status == 422 || strcmp(e.code, "cart_not_found") == 0);
		/* Error texts never quote a card number. */
		FUZZ_CHECK(!number || (!strstr(e.message, number) && !strstr(e.field, number)));
	} else {
		check_accepted(co);
		if (!co->cart_id[0]) {
			price(co);
			check_snapshot(co, number);
			FUZZ_CHECK(checkout_message(&req, co, "fuzz-key", FUZZ_NOW_MS, message_id,
			                            &msg, &len) == ERR_OK);
			/* The card travels sealed only. */
			FUZZ_CHECK(!number || !mem_has(msg, len, number));
			FUZZ_CHECK(flow_deliver(MQ_KEY_CHECKOUT_REQUESTED, msg, len, 0) == ERR_OK);
			free(msg);
		}
	}
	card_wipe(&co->card);
	json_decref(root);
	free(co);
	return 0;
}
