/* err.c: texts for the project's error codes. */
#include "err.h"

const char *err_str(int code)
{
	switch (code) {
	case ERR_OK:
		return "ok";
	case ERR_NOMEM:
		return "out of memory";
	case ERR_INVALID:
		return "invalid argument";
	case ERR_TOO_BIG:
		return "too big";
	case ERR_PARSE:
		return "cannot parse";
	case ERR_NOT_FOUND:
		return "not found";
	case ERR_CONFLICT:
		return "conflict";
	case ERR_IO:
		return "input/output error";
	case ERR_TIMEOUT:
		return "timed out";
	case ERR_UNAVAILABLE:
		return "unavailable";
	case ERR_CRYPTO:
		return "cryptographic failure";
	case ERR_DB:
		return "database error";
	case ERR_MQ:
		return "message broker error";
	case ERR_CACHE:
		return "cache error";
	case ERR_CLOSED:
		return "closed";
	case ERR_NACKED:
		return "message refused by the broker";
	case ERR_UNROUTABLE:
		return "message routed to no queue";
	case ERR_IN_DOUBT:
		return "message sent, outcome unknown";
	default:
		return "unknown error";
	}
}
