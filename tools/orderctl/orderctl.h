/*
 * orderctl.h: what the commands of orderctl (the operators' tool) share:
 * the loaded configuration, option parsing, output helpers and exit codes.
 * Single-threaded: every function here runs on the main thread.
 */
#ifndef ORDERCTL_H
#define ORDERCTL_H

#include <stddef.h>

#include "config.h"

/* Exit codes: done; something failed (the reason is on stderr); bad usage. */
#define CTL_OK 0
#define CTL_FAIL 1
#define CTL_USAGE 2

/* The largest number any option takes. */
#define CTL_LONG_MAX_ARG 1000000000L

struct ctl {
	struct config cfg;
};

/* ctl_usage - print "orderctl: <message>" and the usage hint; returns CTL_USAGE. */
int ctl_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ctl_fail - print "orderctl: <message>"; returns CTL_FAIL. */
int ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * ctl_long_arg - the value of option name at argv[*i + 1], a whole number
 * from lo to hi; advances *i past it. CTL_OK or CTL_USAGE (message printed).
 */
int ctl_long_arg(int argc, char **argv, int *i, long lo, long hi, long *out);

/* ctl_str_arg - the value of option argv[*i] at argv[*i + 1]; CTL_OK or CTL_USAGE. */
int ctl_str_arg(int argc, char **argv, int *i, const char **out);

/*
 * ctl_printable - in, with every byte outside printable ASCII replaced by
 * '?', cut to fit out (size bytes): what a queue or a database hands over is
 * shown, never interpreted by the terminal. NULL becomes "".
 */
const char *ctl_printable(const char *in, char *out, size_t size);

/* ctl_work_queue - the index of name in mq_work_queues, or -1. */
int ctl_work_queue(const char *name);

/* The commands: argv[0] is the command's own name ("queues", "dlq", ...). */
int ctl_queues(struct ctl *c, int argc, char **argv);
int ctl_dlq(struct ctl *c, int argc, char **argv);
int ctl_events(struct ctl *c, int argc, char **argv);

#endif
