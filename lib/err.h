/* err.h: the project's one error enum. 0 is success, errors are negative. */
#ifndef ORDERS_ERR_H
#define ORDERS_ERR_H

enum err {
	ERR_OK = 0,
	ERR_NOMEM = -1,   /* an allocation failed */
	ERR_INVALID = -2, /* an argument or an input is not acceptable */
	ERR_TOO_BIG = -3, /* a bounded buffer would pass its maximum */
	ERR_PARSE = -4,   /* bytes that do not parse (JSON, protobuf, hex) */
	ERR_NOT_FOUND = -5,
	ERR_CONFLICT = -6, /* exists already, or is in use */
	ERR_IO = -7,       /* a system call or socket failed */
	ERR_TIMEOUT = -8,
	ERR_UNAVAILABLE = -9, /* a dependency cannot be reached */
	ERR_CRYPTO = -10,     /* sealing, opening or a key failed */
	ERR_DB = -11,         /* PostgreSQL said no */
	ERR_MQ = -12,         /* RabbitMQ said no */
	ERR_CACHE = -13,      /* Redis said no */
	ERR_CLOSED = -14,     /* the object is shutting down */
	ERR_NACKED = -15,     /* the broker refused a published message */
	ERR_UNROUTABLE = -16, /* no queue binding routed a mandatory message */
	ERR_IN_DOUBT = -17,   /* sent, but never confirmed nor refused: the broker may hold it */
	ERR_LAST_ = -18       /* not an error: one past the last code */
};

/*
 * err_str - a short lower-case text for an error code, never NULL.
 * Unknown codes give "unknown error". Thread-safe.
 */
const char *err_str(int code);

#endif
