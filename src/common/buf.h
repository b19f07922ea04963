/* Growable byte buffer with a ceiling: every append past max fails with
 * -E2BIG and leaves the buffer as it was. data is always NUL-terminated. */
#ifndef NB_BUF_H
#define NB_BUF_H

#include <stddef.h>

struct nb_buf {
	char *data;
	size_t len;
	size_t cap;
	size_t max; /* 0 means NB_BUF_DEFAULT_MAX */
};

#define NB_BUF_DEFAULT_MAX (64u << 20)

void nb_buf_init(struct nb_buf *b, size_t max);
int nb_buf_append(struct nb_buf *b, const void *data, size_t len);
/* Room for extra more bytes (and the NUL) at data + len, for a caller that
 * writes there itself and then moves len; -E2BIG past max. */
int nb_buf_reserve(struct nb_buf *b, size_t extra);
int nb_buf_puts(struct nb_buf *b, const char *s);
int nb_buf_printf(struct nb_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drop the first n bytes. */
void nb_buf_consume(struct nb_buf *b, size_t n);
void nb_buf_reset(struct nb_buf *b);
/* Hands the data to the caller (caller frees); the buffer is left empty. */
char *nb_buf_steal(struct nb_buf *b);
void nb_buf_free(struct nb_buf *b);

#endif
