/* Small helpers shared by every nubo program. All return 0 or a negative
 * errno unless said otherwise; none logs. */
#ifndef NB_UTIL_H
#define NB_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/buf.h"

#define NB_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Monotonic milliseconds. */
int64_t nb_now_ms(void);
/* CLOCK_MONOTONIC in microseconds: for timing steps. */
int64_t nb_now_us(void);
/* Wall-clock seconds and milliseconds since the epoch. */
int64_t nb_wall_ms(void);
/* ISO 8601 UTC "2026-11-22T05:01:02.000Z" into out (>= 25 bytes). */
void nb_iso8601(int64_t wall_ms, char *out, size_t outsz);

size_t nb_strlcpy(char *dst, const char *src, size_t size);
bool nb_str_has_prefix(const char *s, const char *prefix);

int nb_mkdir_p(const char *path, unsigned mode);
/* Reads at most max bytes; a longer file is -EFBIG. Caller frees *out
 * (NUL-terminated). */
int nb_read_file(const char *path, size_t max, char **out, size_t *len);
/* Writes atomically: tmp file, fsync, rename, fsync of the directory. */
int nb_write_file(const char *path, const void *data, size_t len, unsigned mode);
int nb_rm_rf(const char *path);
bool nb_path_exists(const char *path);

int nb_random_bytes(void *out, size_t n);
/* n random hex digits into out (out must hold n+1). */
int nb_random_hex(char *out, size_t n);
/* EC2-style id: prefix + "-" + 17 hex digits, e.g. "i-0123456789abcdef0".
 * out must hold at least strlen(prefix) + 19 bytes. */
int nb_id_new(const char *prefix, char *out, size_t outsz);
/* True when s is prefix-<17 lowercase hex>. */
bool nb_id_valid(const char *prefix, const char *s);

/* sha256 of a file as 64 hex digits + NUL. */
int nb_sha256_file(const char *path, char hex[65]);
void nb_sha256_hex(const void *data, size_t len, char hex[65]);

/* Parses a whole string as an unsigned number; -EINVAL or -ERANGE. */
int nb_parse_u64(const char *s, uint64_t *out);
/* "512", "64M", "2G", "1T" (binary units, optional "iB"/"B") into bytes. */
int nb_parse_size(const char *s, uint64_t *out);

/* Runs argv[0] (PATH lookup) with stdin from /dev/null, collecting stdout and
 * stderr into out (may be NULL) up to its ceiling. Returns the exit status
 * (>= 0), -ETIMEDOUT after timeout_ms (the child is killed), or -errno. */
int nb_run(const char *const argv[], int timeout_ms, struct nb_buf *out);
/* The same, the program inheriting the descriptors keep (nkeep of them,
 * close-on-exec in this process) under their numbers. */
int nb_run_fds(const char *const argv[], int timeout_ms, struct nb_buf *out, const int *keep,
               size_t nkeep);

/* Sets FD_CLOEXEC / O_NONBLOCK. */
int nb_fd_cloexec(int fd);
int nb_fd_nonblock(int fd);

/* Full write, retrying on EINTR and short writes. */
int nb_write_all(int fd, const void *data, size_t len);

#endif
