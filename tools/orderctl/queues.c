/* queues.c: orderctl queues: depth and consumers of every queue, and KEDA's replica count. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "mq.h"
#include "mq_admin.h"
#include "orderctl.h"

/* What deploy/k8s gives KEDA's rabbitmq scaler (mode QueueLength, value 100). */
#define KEDA_TARGET 100
#define KEDA_MIN 1
#define KEDA_MAX 20

#define ROWS (2 * MQ_WORK_QUEUES)

struct row {
	char name[MQ_KEY_MAX + 8];
	int dead_letter;
	int rc; /* of the passive declare */
	long ready, consumers, desired;
};

/*
 * keda_desired - what the HPA that KEDA drives asks for with an AverageValue
 * target: ceil(ready / target), kept within [min, max]. With min 0 an empty
 * queue scales to zero, as KEDA does below its activation value.
 */
static long keda_desired(long ready, long target, long min, long max)
{
	long n = ready <= 0 ? 0 : ready / target + (ready % target != 0);

	if (n < min)
		n = min;
	if (n > max)
		n = max;
	return n;
}

static int print_json(const struct row *rows, long target, long min, long max)
{
	json_t *root = json_object(), *list = json_array();
	int rc = CTL_FAIL;

	if (!root || !list)
		goto out;
	json_object_set_new(root, "source", json_string("amqp passive declare"));
	json_object_set_new(root, "unacked_counted", json_false());
	json_object_set_new(root, "target", json_integer(target));
	json_object_set_new(root, "min", json_integer(min));
	json_object_set_new(root, "max", json_integer(max));
	for (int i = 0; i < ROWS; i++) {
		const struct row *r = &rows[i];
		json_t *q = json_object();

		if (!q)
			goto out;
		json_object_set_new(q, "queue", json_string(r->name));
		json_object_set_new(q, "dead_letter", json_boolean(r->dead_letter));
		json_object_set_new(q, "missing", json_boolean(r->rc == ERR_NOT_FOUND));
		json_object_set_new(q, "ready", r->rc ? json_null() : json_integer(r->ready));
		json_object_set_new(q, "consumers",
		                    r->rc ? json_null() : json_integer(r->consumers));
		json_object_set_new(q, "desired_replicas",
		                    r->rc || r->dead_letter ? json_null()
		                                            : json_integer(r->desired));
		json_array_append_new(list, q);
	}
	json_object_set(root, "queues", list);
	if (json_dumpf(root, stdout, JSON_COMPACT) == 0 && fputc('\n', stdout) != EOF)
		rc = CTL_OK;
out:
	json_decref(list);
	json_decref(root);
	return rc == CTL_OK ? CTL_OK : ctl_fail("cannot write the output");
}

static void print_text(const struct row *rows, long target, long min, long max)
{
	printf(
	    "# ready: messages ready for delivery, from an AMQP passive declare; deliveries not\n"
	    "# yet acknowledged are not counted (KEDA's rabbitmq scaler in amqp mode sees the "
	    "same)\n"
	    "# desired: KEDA queue length, ceil(ready / %ld) within [%ld, %ld]; a .dlq is not "
	    "scaled\n",
	    target, min, max);
	printf("%-24s %8s %10s %8s\n", "QUEUE", "READY", "CONSUMERS", "DESIRED");
	for (int i = 0; i < ROWS; i++) {
		const struct row *r = &rows[i];

		if (r->rc == ERR_NOT_FOUND) {
			printf("%-24s %8s %10s %8s\n", r->name, "missing", "-", "-");
		} else if (r->rc) {
			printf("%-24s %8s %10s %8s\n", r->name, "error", "-", "-");
		} else if (r->dead_letter) {
			printf("%-24s %8ld %10ld %8s\n", r->name, r->ready, r->consumers, "-");
		} else {
			printf("%-24s %8ld %10ld %8ld\n", r->name, r->ready, r->consumers,
			       r->desired);
		}
	}
}

int ctl_queues(struct ctl *c, int argc, char **argv)
{
	long target = KEDA_TARGET, min = KEDA_MIN, max = KEDA_MAX;
	struct row rows[ROWS];
	char reason[MQ_ADMIN_REASON_MAX];
	struct mq_admin *a;
	int json = 0, bad = 0, rc;

	for (int i = 1; i < argc; i++) {
		rc = CTL_OK;
		if (!strcmp(argv[i], "--json"))
			json = 1;
		else if (!strcmp(argv[i], "--target"))
			rc = ctl_long_arg(argc, argv, &i, 1, CTL_LONG_MAX_ARG, &target);
		else if (!strcmp(argv[i], "--min"))
			rc = ctl_long_arg(argc, argv, &i, 0, CTL_LONG_MAX_ARG, &min);
		else if (!strcmp(argv[i], "--max"))
			rc = ctl_long_arg(argc, argv, &i, 1, CTL_LONG_MAX_ARG, &max);
		else
			return ctl_usage("queues: unknown argument '%s'", argv[i]);
		if (rc)
			return rc;
	}
	if (min > max)
		return ctl_usage("queues: --min %ld is above --max %ld", min, max);

	a = mq_admin_new(c->cfg.amqp_url, reason, sizeof(reason));
	if (!a)
		return ctl_fail("cannot connect to rabbitmq: %s", reason);
	for (int i = 0; i < ROWS; i++) {
		struct row *r = &rows[i];

		memset(r, 0, sizeof(*r));
		r->dead_letter = i % 2;
		snprintf(r->name, sizeof(r->name), "%s%s", mq_work_queues[i / 2],
		         r->dead_letter ? ".dlq" : "");
		r->rc = mq_admin_queue_stats(a, r->name, &r->ready, &r->consumers);
		if (r->rc == ERR_OK) {
			r->desired = keda_desired(r->ready, target, min, max);
			continue;
		}
		bad++;
		if (r->rc == ERR_NOT_FOUND)
			ctl_fail("queue '%s' does not exist (have the daemons ever started?)",
			         r->name);
		else
			ctl_fail("cannot read queue '%s': %s", r->name, mq_admin_last_error(a));
	}
	mq_admin_free(a);
	if (json) {
		rc = print_json(rows, target, min, max);
	} else {
		print_text(rows, target, min, max);
		rc = fflush(stdout) == 0 ? CTL_OK : ctl_fail("cannot write the output");
	}
	return rc ? rc : bad ? CTL_FAIL : CTL_OK;
}
