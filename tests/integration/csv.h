/* csv.h: reading the finance feed's CSV in the tests: an RFC 4180 parser, and how the feed
 * shows a value. */
#ifndef ORDERS_TEST_CSV_H
#define ORDERS_TEST_CSV_H

#include <stdlib.h>
#include <string.h>

#include "buf.h"

/* RFC 4180 text into rows of fields (malloc'd; free with csv_free). -1 if malformed. */
struct csv {
	char ***rows;
	size_t *nfields;
	size_t nrows;
};

static inline void csv_free(struct csv *c)
{
	size_t i, k;

	for (i = 0; i < c->nrows; i++) {
		for (k = 0; k < c->nfields[i]; k++)
			free(c->rows[i][k]);
		free(c->rows[i]);
	}
	free(c->rows);
	free(c->nfields);
	memset(c, 0, sizeof(*c));
}

static inline int csv_parse(const char *s, struct csv *c)
{
	struct buf field;
	char **row = NULL;
	size_t nf = 0;

	memset(c, 0, sizeof(*c));
	buf_init(&field, 1 << 20);
	while (*s) {
		int quoted = *s == '"';

		buf_reset(&field);
		if (quoted) {
			for (s++;; s++) {
				if (!*s)
					goto bad;
				if (*s == '"') {
					if (s[1] != '"')
						break;
					s++;
				}
				if (buf_append(&field, s, 1))
					goto bad;
			}
			s++;
		} else {
			size_t n = strcspn(s, ",\r\n\"");

			if (s[n] == '"' || buf_append(&field, s, n))
				goto bad;
			s += n;
		}
		row = realloc(row, (nf + 1) * sizeof(*row));
		row[nf++] = strdup(field.data ? field.data : "");
		if (*s == ',') {
			s++;
			continue;
		}
		if (s[0] != '\r' || s[1] != '\n')
			goto bad;
		s += 2;
		c->rows = realloc(c->rows, (c->nrows + 1) * sizeof(*c->rows));
		c->nfields = realloc(c->nfields, (c->nrows + 1) * sizeof(*c->nfields));
		c->rows[c->nrows] = row;
		c->nfields[c->nrows++] = nf;
		row = NULL;
		nf = 0;
	}
	buf_release(&field);
	return row ? -1 : 0;
bad:
	while (nf)
		free(row[--nf]);
	free(row);
	buf_release(&field);
	csv_free(c);
	return -1;
}

/* Whether csv is how the feed shows v: with a quote in front when a spreadsheet would
 * take v for a formula (api/events.c), else as it is. */
static inline int csv_shows(const char *csv, const char *v)
{
	if (v[0] && strchr("=+-@\t\r", v[0]))
		return csv[0] == '\'' && strcmp(csv + 1, v) == 0;
	return strcmp(csv, v) == 0;
}

#endif
