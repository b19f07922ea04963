#include "common/util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int64_t nb_now_ms(void)
{
	return nb_now_us() / 1000;
}

int64_t nb_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t nb_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *put_digits(char *p, unsigned v, int n)
{
	for (int i = n - 1; i >= 0; i--) {
		p[i] = (char)('0' + v % 10);
		v /= 10;
	}
	return p + n;
}

void nb_iso8601(int64_t wall_ms, char *out, size_t outsz)
{
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;

	/* years 1970-9999 by arithmetic (days to civil date, H. Hinnant's
	 * algorithm): no gmtime_r or printf on a Describe answer's hot path */
	if (wall_ms >= 0 && wall_ms < 253402300800000 && outsz >= 25) {
		int64_t secs = wall_ms / 1000, days = secs / 86400, sod = secs % 86400;
		int64_t z = days + 719468, era = z / 146097, doe = z - era * 146097;
		int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
		int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
		int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
		int64_t y = yoe + era * 400 + (m <= 2);
		char *p = put_digits(out, (unsigned)y, 4);
		*p++ = '-';
		p = put_digits(p, (unsigned)m, 2);
		*p++ = '-';
		p = put_digits(p, (unsigned)d, 2);
		*p++ = 'T';
		p = put_digits(p, (unsigned)(sod / 3600), 2);
		*p++ = ':';
		p = put_digits(p, (unsigned)(sod / 60 % 60), 2);
		*p++ = ':';
		p = put_digits(p, (unsigned)(sod % 60), 2);
		*p++ = '.';
		p = put_digits(p, (unsigned)(wall_ms % 1000), 3);
		*p++ = 'Z';
		*p = '\0';
		return;
	}
	gmtime_r(&t, &tm);
	snprintf(out, outsz, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (int)(wall_ms % 1000));
}

size_t nb_strlcpy(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);

	if (size) {
		size_t c = n < size - 1 ? n : size - 1;
		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return n;
}

bool nb_str_has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

int nb_mkdir_p(const char *path, unsigned mode)
{
	char tmp[PATH_MAX];
	size_t n = nb_strlcpy(tmp, path, sizeof(tmp));

	if (n >= sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int nb_read_file(const char *path, size_t max, char **out, size_t *len)
{
	struct nb_buf b;
	char chunk[65536];
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	nb_buf_init(&b, max ? max : NB_BUF_DEFAULT_MAX);
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		r = nb_buf_append(&b, chunk, (size_t)n);
		if (r < 0) {
			r = r == -E2BIG ? -EFBIG : r;
			break;
		}
	}
	close(fd);
	if (r < 0) {
		nb_buf_free(&b);
		return r;
	}
	if (len)
		*len = b.len;
	*out = nb_buf_steal(&b);
	return 0;
}

int nb_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int nb_write_file(const char *path, const void *data, size_t len, unsigned mode)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	char *slash;
	int fd, r;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	r = nb_write_all(fd, data, len);
	if (r == 0 && fchmod(fd, mode) < 0)
		r = -errno;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	nb_strlcpy(dir, path, sizeof(dir));
	slash = strrchr(dir, '/');
	if (slash) {
		if (slash == dir)
			slash[1] = '\0';
		else
			*slash = '\0';
		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0) {
			fsync(fd);
			close(fd);
		}
	}
	return 0;
}

int nb_rm_rf(const char *path)
{
	struct stat st;
	DIR *d;
	struct dirent *e;
	int r = 0;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
	d = opendir(path);
	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		char sub[PATH_MAX];
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name) >= sizeof(sub)) {
			r = -ENAMETOOLONG;
			continue;
		}
		int rr = nb_rm_rf(sub);
		if (rr < 0)
			r = rr;
	}
	closedir(d);
	if (rmdir(path) < 0 && errno != ENOENT)
		r = -errno;
	return r;
}

bool nb_path_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

int nb_random_bytes(void *out, size_t n)
{
	unsigned char *p = out;

	while (n) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int nb_random_hex(char *out, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char raw[64];

	while (n) {
		size_t take = n > sizeof(raw) * 2 ? sizeof(raw) * 2 : n;
		int r = nb_random_bytes(raw, (take + 1) / 2);
		if (r < 0)
			return r;
		for (size_t i = 0; i < take; i++)
			*out++ = hex[(raw[i / 2] >> ((i & 1) ? 0 : 4)) & 0xf];
		n -= take;
	}
	*out = '\0';
	return 0;
}

int nb_id_new(const char *prefix, char *out, size_t outsz)
{
	size_t pl = strlen(prefix);

	if (outsz < pl + 19)
		return -ENOSPC;
	memcpy(out, prefix, pl);
	out[pl] = '-';
	return nb_random_hex(out + pl + 1, 17);
}

bool nb_id_valid(const char *prefix, const char *s)
{
	size_t pl = strlen(prefix);

	if (!s || strncmp(s, prefix, pl) || s[pl] != '-' || strlen(s + pl + 1) != 17)
		return false;
	for (const char *p = s + pl + 1; *p; p++)
		if (!isxdigit((unsigned char)*p) || isupper((unsigned char)*p))
			return false;
	return true;
}

static void hex_encode(const unsigned char *md, unsigned n, char *hex)
{
	static const char digits[] = "0123456789abcdef";

	for (unsigned i = 0; i < n; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 0xf];
	}
	hex[2 * n] = '\0';
}

void nb_sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;

	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	hex_encode(md, n, hex);
}

int nb_sha256_file(const char *path, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	EVP_MD_CTX *ctx;
	char *chunk;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	chunk = malloc(1 << 20);
	ctx = EVP_MD_CTX_new();
	if (!chunk || !ctx) {
		r = -ENOMEM;
		goto out;
	}
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (;;) {
		ssize_t got = read(fd, chunk, 1 << 20);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r = -errno;
			goto out;
		}
		if (got == 0)
			break;
		EVP_DigestUpdate(ctx, chunk, (size_t)got);
	}
	EVP_DigestFinal_ex(ctx, md, &n);
	hex_encode(md, n, hex);
out:
	EVP_MD_CTX_free(ctx);
	free(chunk);
	close(fd);
	return r;
}

int nb_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

int nb_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mul = 1;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	switch (toupper((unsigned char)*end)) {
	case '\0':
		break;
	case 'K':
		mul = 1ull << 10;
		end++;
		break;
	case 'M':
		mul = 1ull << 20;
		end++;
		break;
	case 'G':
		mul = 1ull << 30;
		end++;
		break;
	case 'T':
		mul = 1ull << 40;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (mul > 1 && (!strcmp(end, "iB") || !strcmp(end, "B")))
		end += strlen(end);
	if (*end)
		return -EINVAL;
	if (v > UINT64_MAX / mul)
		return -ERANGE;
	*out = v * mul;
	return 0;
}

int nb_fd_cloexec(int fd)
{
	int f = fcntl(fd, F_GETFD);

	if (f < 0 || fcntl(fd, F_SETFD, f | FD_CLOEXEC) < 0)
		return -errno;
	return 0;
}

int nb_fd_nonblock(int fd)
{
	int f = fcntl(fd, F_GETFL);

	if (f < 0 || fcntl(fd, F_SETFL, f | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

int nb_run(const char *const argv[], int timeout_ms, struct nb_buf *out)
{
	return nb_run_fds(argv, timeout_ms, out, NULL, 0);
}

int nb_run_fds(const char *const argv[], int timeout_ms, struct nb_buf *out, const int *keep,
               size_t nkeep)
{
	int pfd[2], status = 0, r = 0;
	int64_t deadline = nb_now_ms() + timeout_ms;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		r = -errno;
		close(pfd[0]);
		close(pfd[1]);
		return r;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		for (size_t i = 0; i < nkeep; i++) /* handed to the program by number */
			fcntl(keep[i], F_SETFD, 0);
		execvp(argv[0], (char *const *)argv);
		dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		char chunk[4096];
		int64_t left = deadline - nb_now_ms();
		struct pollfd p = {.fd = pfd[0], .events = POLLIN};
		if (left <= 0) {
			r = -ETIMEDOUT;
			break;
		}
		int pr = poll(&p, 1, (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			continue;
		ssize_t n = read(pfd[0], chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (out)
			nb_buf_append(out, chunk, (size_t)n); /* past the ceiling: dropped */
	}
	close(pfd[0]);
	if (r == -ETIMEDOUT)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (r < 0)
		return r;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}
