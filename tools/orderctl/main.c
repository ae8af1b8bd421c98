/* main.c: orderctl, the operators' tool: configuration, commands, help, and the migrate command. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "mq.h"
#include "orderctl.h"

#ifndef ORDERCTL_SOURCE_DIR
#define ORDERCTL_SOURCE_DIR ""
#endif

static const char usage_text[] =
    "usage: orderctl COMMAND [ARGS]\n"
    "\n"
    "Reads the daemons' ORDERS_* environment (ORDERS_AMQP_URL, ORDERS_PG_DSN, ...);\n"
    "locally: . .local/env; build/tools/orderctl queues\n"
    "\n"
    "  queues [--json] [--target N] [--min N] [--max N]\n"
    "      every work queue and its .dlq: ready messages, consumers, and the replicas\n"
    "      KEDA's queue-length rule asks for: ceil(ready / target) within [min, max]\n"
    "      (defaults 100, 1, 20; deploy/k8s uses the same)\n"
    "  dlq list QUEUE [--json] [--max N] [--message-id ID]\n"
    "      the messages parked in QUEUE.dlq (QUEUE is a work queue), left in place\n"
    "  dlq replay QUEUE [--max N] [--message-id ID] [--json]\n"
    "      republish parked messages to exchange 'orders' with their original routing\n"
    "      key, message id and properties; each leaves the .dlq only once the broker\n"
    "      confirmed its copy (a crash in between leaves a duplicate, which the\n"
    "      consumers' inbox makes harmless)\n"
    "  dlq drop QUEUE --message-id ID\n"
    "      remove the parked messages with that id for good (poison you have looked at)\n"
    "  events tail [--after SEQ] [--follow] [--json] [--interval-ms N]\n"
    "      finance events from PostgreSQL order_events in seq order; --follow polls\n"
    "  migrate [--seed]\n"
    "      apply the database migrations (tools/migrate.sh) to ORDERS_PG_DSN\n"
    "  help\n"
    "\n"
    "Exit status: 0 done, 1 failed (the reason is on stderr), 2 bad usage.\n";

static void vsay(const char *fmt, va_list ap)
{
	fputs("orderctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

int ctl_usage(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	fputs("orderctl: see 'orderctl help'\n", stderr);
	return CTL_USAGE;
}

int ctl_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	return CTL_FAIL;
}

int ctl_str_arg(int argc, char **argv, int *i, const char **out)
{
	if (*i + 1 >= argc || !argv[*i + 1][0])
		return ctl_usage("%s needs a value", argv[*i]);
	*out = argv[*i + 1];
	*i += 1;
	return CTL_OK;
}

int ctl_long_arg(int argc, char **argv, int *i, long lo, long hi, long *out)
{
	const char *s = NULL;
	char *end;
	long v;

	if (ctl_str_arg(argc, argv, i, &s) != CTL_OK)
		return CTL_USAGE;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < lo || v > hi)
		return ctl_usage("%s takes a whole number from %ld to %ld, not '%s'", argv[*i - 1],
		                 lo, hi, s);
	*out = v;
	return CTL_OK;
}

const char *ctl_printable(const char *in, char *out, size_t size)
{
	size_t n = 0;

	if (size == 0)
		return "";
	for (; in && *in && n + 1 < size; in++)
		out[n++] = (*in >= 0x20 && *in < 0x7f) ? *in : '?';
	out[n] = '\0';
	return out;
}

int ctl_work_queue(const char *name)
{
	for (int i = 0; i < MQ_WORK_QUEUES; i++) {
		if (name && strcmp(name, mq_work_queues[i]) == 0)
			return i;
	}
	return -1;
}

/*
 * migrate_script - where tools/migrate.sh is: ORDERS_MIGRATE_SCRIPT, else
 * beside the installed binary (the image puts it in ../share/orders), else
 * in the source tree this binary was built from.
 */
static int migrate_script(char *out, size_t size)
{
	const char *env = getenv("ORDERS_MIGRATE_SCRIPT");
	char exe[PATH_MAX];
	ssize_t n;

	if (env && *env) {
		snprintf(out, size, "%s", env);
		return access(out, R_OK) == 0 ? ERR_OK : ERR_NOT_FOUND;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		char *slash;

		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			snprintf(out, size, "%s/../share/orders/migrate.sh", exe);
			if (access(out, R_OK) == 0)
				return ERR_OK;
		}
	}
	if (ORDERCTL_SOURCE_DIR[0]) {
		snprintf(out, size, "%s/tools/migrate.sh", ORDERCTL_SOURCE_DIR);
		if (access(out, R_OK) == 0)
			return ERR_OK;
	}
	return ERR_NOT_FOUND;
}

/* ctl_migrate - become migrate.sh with the same environment and arguments. */
static int ctl_migrate(int argc, char **argv)
{
	char script[PATH_MAX + 64];
	char **args;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--seed") != 0)
			return ctl_usage("migrate: unknown argument '%s'", argv[i]);
	}
	if (migrate_script(script, sizeof(script)) != ERR_OK)
		return ctl_fail("cannot find migrate.sh (set ORDERS_MIGRATE_SCRIPT to its path)");
	args = calloc((size_t)argc + 2, sizeof(*args));
	if (!args)
		return ctl_fail("out of memory");
	args[0] = "bash";
	args[1] = script;
	for (int i = 1; i < argc; i++)
		args[i + 1] = argv[i];
	fflush(NULL);
	execvp("bash", args);
	free(args);
	return ctl_fail("cannot run %s: %s", script, strerror(errno));
}

/* load - the configuration the daemons read, and logging on stderr. */
static int load(struct ctl *c)
{
	enum log_level level = LOG_WARN;
	char err[256] = "";

	log_set_fd(STDERR_FILENO);
	log_init("orderctl", LOG_WARN);
	if (config_load_for(&c->cfg, 0, err, sizeof(err)) != ERR_OK)
		return ctl_fail("%s", err);
	if (mq_tls_configure(&(struct mq_tls_options){c->cfg.amqp_ca_file, c->cfg.amqp_cert_file,
	                                              c->cfg.amqp_key_file},
	                     err, sizeof(err)) != ERR_OK)
		return ctl_fail("cannot use the rabbitmq tls settings: %s", err);
	/* Informational lines would only drown the output; debug is asked for. */
	if (log_level_parse(c->cfg.log_level, &level) == ERR_OK && level == LOG_DEBUG)
		log_init("orderctl", LOG_DEBUG);
	return CTL_OK;
}

int main(int argc, char **argv)
{
	static struct ctl c;
	const char *cmd = argc > 1 ? argv[1] : NULL;
	int rc;

	if (!cmd)
		return ctl_usage("no command given");
	if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
		fputs(usage_text, stdout);
		return CTL_OK;
	}
	if (!strcmp(cmd, "migrate"))
		return ctl_migrate(argc - 1, argv + 1);
	if (strcmp(cmd, "queues") && strcmp(cmd, "dlq") && strcmp(cmd, "events"))
		return ctl_usage("unknown command '%s'", cmd);
	rc = load(&c);
	if (rc)
		return rc;
	if (!strcmp(cmd, "queues"))
		return ctl_queues(&c, argc - 1, argv + 1);
	if (!strcmp(cmd, "dlq"))
		return ctl_dlq(&c, argc - 1, argv + 1);
	return ctl_events(&c, argc - 1, argv + 1);
}
