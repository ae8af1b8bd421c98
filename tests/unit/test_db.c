/* test_db.c: how lib/db classifies PostgreSQL's SQLSTATEs (no server needed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "db.h"
#include "err.h"

/*
 * What each class makes a consumer do (consumers/common/consume.c):
 * ERR_UNAVAILABLE holds the batch while PostgreSQL does not answer a ping,
 * then requeues; ERR_TIMEOUT and ERR_DB requeue, and the queue dead-letters
 * the message at its delivery limit; ERR_CONFLICT and ERR_INVALID reach the
 * loop as ERR_DB (consume_db_rc). Only a real outage may be ERR_UNAVAILABLE.
 */
static void test_sqlstates(void **state)
{
	static const struct {
		const char *state;
		int rc;
	} cases[] = {
	    {"23505", ERR_CONFLICT},    /* unique_violation */
	    {"23514", ERR_INVALID},     /* check_violation */
	    {"40001", ERR_TIMEOUT},     /* serialization_failure */
	    {"40P01", ERR_TIMEOUT},     /* deadlock_detected */
	    {"08000", ERR_UNAVAILABLE}, /* connection_exception */
	    {"08003", ERR_UNAVAILABLE}, /* connection_does_not_exist */
	    {"08006", ERR_UNAVAILABLE}, /* connection_failure */
	    {"57P01", ERR_UNAVAILABLE}, /* admin_shutdown */
	    {"57P02", ERR_UNAVAILABLE}, /* crash_shutdown */
	    {"57P03", ERR_UNAVAILABLE}, /* cannot_connect_now */
	    {"08P01", ERR_DB},          /* protocol_violation: a wrong parameter count */
	    {"42601", ERR_DB},          /* syntax_error */
	    {"42P01", ERR_DB},          /* undefined_table */
	    {"23502", ERR_DB},          /* not_null_violation */
	    {"57014", ERR_DB},          /* query_canceled */
	    {"", ERR_DB},
	};
	size_t i;
	(void)state;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (db_sqlstate_err(cases[i].state) != cases[i].rc)
			fail_msg("sqlstate '%s': %s, want %s", cases[i].state,
			         err_str(db_sqlstate_err(cases[i].state)), err_str(cases[i].rc));
	}
	assert_int_equal(db_sqlstate_err(NULL), ERR_DB);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sqlstates),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
