/* Plain-text tables whose columns fit their content. Pure: renders into a
 * buffer. */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

size_t nb_cli_str_width(const char *s)
{
	size_t w = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if ((*p & 0xC0) != 0x80)
			w++;
	return w;
}

int nb_cli_table_init(struct nb_cli_table *t, const char *const *head)
{
	memset(t, 0, sizeof(*t));
	while (head[t->ncols]) {
		if (t->ncols >= NB_CLI_TABLE_MAX_COLS)
			return -E2BIG;
		t->head[t->ncols] = head[t->ncols];
		t->ncols++;
	}
	return t->ncols ? 0 : -EINVAL;
}

/* Copies a cell, at most NB_CLI_TABLE_MAX_CELL bytes, with control characters
 * (a name could hold a newline or an escape) shown as '?'. */
static char *cell_dup(const char *s)
{
	size_t n;
	char *c;

	if (!s || !*s)
		s = "-";
	n = strlen(s);
	if (n > NB_CLI_TABLE_MAX_CELL)
		n = NB_CLI_TABLE_MAX_CELL;
	/* never cut a UTF-8 sequence in two */
	while (n > 0 && n < strlen(s) && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	c = malloc(n + 1);
	if (!c)
		return NULL;
	for (size_t i = 0; i < n; i++)
		c[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
	c[n] = '\0';
	return c;
}

int nb_cli_table_add(struct nb_cli_table *t, const char *const *cells)
{
	size_t base;

	if (t->nrows >= NB_CLI_TABLE_MAX_ROWS)
		return -E2BIG;
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **p = realloc(t->cells, cap * (size_t)t->ncols * sizeof(*p));
		if (!p)
			return -ENOMEM;
		t->cells = p;
		t->cap = cap;
	}
	base = t->nrows * (size_t)t->ncols;
	for (int c = 0; c < t->ncols; c++) {
		t->cells[base + c] = cell_dup(cells[c]);
		if (!t->cells[base + c]) {
			while (c-- > 0)
				free(t->cells[base + c]);
			return -ENOMEM;
		}
	}
	t->nrows++;
	return 0;
}

static int put_cell(struct nb_buf *out, const char *s, size_t width, bool last, bool upper)
{
	size_t w = nb_cli_str_width(s);
	int r = 0;

	for (const char *p = s; *p && r >= 0; p++) {
		char ch = upper ? (char)toupper((unsigned char)*p) : *p;
		r = nb_buf_append(out, &ch, 1);
	}
	if (last)
		return r < 0 ? r : nb_buf_puts(out, "\n");
	for (size_t i = w; i < width + 2 && r >= 0; i++)
		r = nb_buf_append(out, " ", 1);
	return r;
}

int nb_cli_table_render(const struct nb_cli_table *t, struct nb_buf *out)
{
	size_t width[NB_CLI_TABLE_MAX_COLS];
	int r = 0;

	for (int c = 0; c < t->ncols; c++) {
		width[c] = nb_cli_str_width(t->head[c]);
		for (size_t row = 0; row < t->nrows; row++) {
			size_t w = nb_cli_str_width(t->cells[row * (size_t)t->ncols + c]);
			if (w > width[c])
				width[c] = w;
		}
	}
	for (int c = 0; c < t->ncols && r >= 0; c++)
		r = put_cell(out, t->head[c], width[c], c == t->ncols - 1, true);
	for (size_t row = 0; row < t->nrows && r >= 0; row++)
		for (int c = 0; c < t->ncols && r >= 0; c++)
			r = put_cell(out, t->cells[row * (size_t)t->ncols + c], width[c],
			             c == t->ncols - 1, false);
	return r;
}

void nb_cli_table_free(struct nb_cli_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->nrows = t->cap = 0;
}
