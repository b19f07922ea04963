/* Formatting and small parsers of the CLI. Pure: no I/O. */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

void nb_cli_fmt_size(uint64_t bytes, char *out, size_t outsz)
{
	static const char *units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double v = (double)bytes;
	int u = -1;

	if (bytes < 1024) {
		snprintf(out, outsz, "%llu B", (unsigned long long)bytes);
		return;
	}
	while (v >= 1024.0 && u < (int)NB_ARRAY_SIZE(units) - 1) {
		v /= 1024.0;
		u++;
	}
	if (bytes % (1ull << (10 * (u + 1))) == 0) /* whole units read best bare */
		snprintf(out, outsz, "%.0f %s", v, units[u]);
	else if (v < 9.95)
		snprintf(out, outsz, "%.1f %s", v, units[u]);
	else
		snprintf(out, outsz, "%.0f %s", v, units[u]);
}

void nb_cli_fmt_age(int64_t s, char *out, size_t outsz)
{
	if (s < 0)
		s = 0;
	if (s < 60)
		snprintf(out, outsz, "%llds", (long long)s);
	else if (s < 3600)
		snprintf(out, outsz, "%lldm", (long long)(s / 60));
	else if (s < 86400)
		snprintf(out, outsz, "%lldh", (long long)(s / 3600));
	else
		snprintf(out, outsz, "%lldd", (long long)(s / 86400));
}

static int digits(const char **p, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return -EINVAL;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

static int expect(const char **p, char c)
{
	if (**p != c)
		return -EINVAL;
	(*p)++;
	return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int nb_cli_parse_time(const char *s, int64_t *ms)
{
	int y, mo, d, h, mi, se, frac = 0, fdig = 0;
	const char *p = s;

	if (!s)
		return -EINVAL;
	if (digits(&p, 4, &y) || expect(&p, '-') || digits(&p, 2, &mo) || expect(&p, '-') ||
	    digits(&p, 2, &d))
		return -EINVAL;
	if (*p != 'T' && *p != ' ')
		return -EINVAL;
	p++;
	if (digits(&p, 2, &h) || expect(&p, ':') || digits(&p, 2, &mi) || expect(&p, ':') ||
	    digits(&p, 2, &se))
		return -EINVAL;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		while (isdigit((unsigned char)*p)) {
			if (fdig < 3) {
				frac = frac * 10 + (*p - '0');
				fdig++;
			}
			p++;
		}
		while (fdig < 3) {
			frac *= 10;
			fdig++;
		}
	}
	if (*p == 'Z')
		p++;
	else if (!strcmp(p, "+00:00"))
		p += 6;
	if (*p)
		return -EINVAL;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
		return -EINVAL;
	*ms = ((days_from_civil(y, mo, d) * 86400) + h * 3600 + mi * 60 + se) * 1000 + frac;
	return 0;
}

void nb_cli_fmt_since(const char *s, int64_t now_ms, char *out, size_t outsz)
{
	int64_t t;

	if (nb_cli_parse_time(s, &t) < 0) {
		snprintf(out, outsz, "-");
		return;
	}
	nb_cli_fmt_age((now_ms - t) / 1000, out, outsz);
}

int nb_cli_base64(const void *data, size_t len, struct nb_buf *out)
{
	static const char tbl[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = data;
	int r = 0;

	for (size_t i = 0; i < len && r >= 0; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		char q[4];

		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < len)
			v |= p[i + 2];
		q[0] = tbl[(v >> 18) & 63];
		q[1] = tbl[(v >> 12) & 63];
		q[2] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
		q[3] = i + 2 < len ? tbl[v & 63] : '=';
		r = nb_buf_append(out, q, 4);
	}
	if (r >= 0 && !out->data)
		r = nb_buf_append(out, "", 0);
	return r;
}

/* Cuts s to at most cols display columns, on a code point boundary. */
static void cut_columns(char *s, size_t cols)
{
	size_t w = 0;

	for (char *p = s; *p; p++) {
		if ((*p & 0xC0) == 0x80)
			continue;
		if (w == cols) {
			*p = '\0';
			return;
		}
		w++;
	}
}

void nb_cli_progress_render(char *out, size_t outsz, int width, const char *label, double frac,
                            const char *info)
{
	char bar[64] = "", pct[8] = "";
	size_t avail = width > 1 ? (size_t)width - 1 : 1, fixed = 0;
	int barw;

	if (!outsz)
		return;
	if (!label)
		label = "";
	if (!info)
		info = "";
	if (frac >= 0) {
		if (frac > 1)
			frac = 1;
		snprintf(pct, sizeof(pct), "%3d%%", (int)(frac * 100.0));
		fixed += (*label ? nb_cli_str_width(label) + 1 : 0) + 3 + strlen(pct) +
		         (*info ? nb_cli_str_width(info) + 1 : 0);
		barw = fixed + 10 <= avail ? (int)(avail - fixed) : 0;
		if (barw > 30)
			barw = 30;
		if (barw > 0) {
			int filled = (int)(frac * barw + 0.5);
			bar[0] = '[';
			for (int i = 0; i < barw; i++)
				bar[1 + i] = i < filled ? '#' : '.';
			bar[1 + barw] = ']';
			bar[2 + barw] = '\0';
		}
	}
	snprintf(out, outsz, "%s%s%s%s%s%s%s", label, *label && (*bar || *pct) ? " " : "", bar,
	         *bar ? " " : "", pct, (*label || *pct) && *info ? " " : "", info);
	cut_columns(out, avail);
}

void nb_cli_fmt_transfer(uint64_t done, uint64_t total, double rate, char *out, size_t outsz)
{
	char d[32], t[32] = "", rt[32] = "";

	nb_cli_fmt_size(done, d, sizeof(d));
	if (total)
		nb_cli_fmt_size(total, t, sizeof(t));
	if (rate > 0) {
		nb_cli_fmt_size((uint64_t)rate, rt, sizeof(rt));
		strncat(rt, "/s", sizeof(rt) - strlen(rt) - 1);
	}
	snprintf(out, outsz, "%s%s%s%s%s", d, total ? "/" : "", t, *rt ? "  " : "", rt);
}

int nb_cli_parse_progress_line(const char *line, int *pct, const char **msg)
{
	const char *p = line;
	int v = 0;

	if (!nb_str_has_prefix(p, "progress"))
		return -EINVAL;
	p += strlen("progress");
	if (*p != ' ' && *p != '\t')
		return -EINVAL;
	while (*p == ' ' || *p == '\t')
		p++;
	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	while (isdigit((unsigned char)*p)) {
		if (v < 1000)
			v = v * 10 + (*p - '0');
		p++;
	}
	if (*p == '.') { /* a fraction is allowed and dropped */
		p++;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (*p == '%')
		p++;
	if (*p && *p != ' ' && *p != '\t')
		return -EINVAL;
	while (*p == ' ' || *p == '\t')
		p++;
	*pct = v > 100 ? 100 : v;
	*msg = p;
	return 0;
}

int nb_cli_parse_endpoint(const char *url, char *host, size_t hostsz, unsigned *port)
{
	const char *p, *hend, *rest;
	size_t hlen;
	uint64_t v = 80;

	if (!nb_str_has_prefix(url, "http://"))
		return -EPROTONOSUPPORT;
	p = url + strlen("http://");
	if (*p == '[') {
		hend = strchr(p, ']');
		if (!hend)
			return -EINVAL;
		p++;
		hlen = (size_t)(hend - p);
		rest = hend + 1;
	} else {
		hlen = strcspn(p, ":/?#");
		rest = p + hlen;
	}
	if (!hlen || hlen >= hostsz)
		return -EINVAL;
	if (*rest == ':') {
		char num[8];
		size_t n = strcspn(rest + 1, "/?#");
		if (!n || n >= sizeof(num))
			return -EINVAL;
		memcpy(num, rest + 1, n);
		num[n] = '\0';
		if (nb_parse_u64(num, &v) < 0 || v == 0 || v > 65535)
			return -EINVAL;
		rest += 1 + n;
	}
	if (*rest && *rest != '/')
		return -EINVAL;
	memcpy(host, p, hlen);
	host[hlen] = '\0';
	*port = (unsigned)v;
	return 0;
}

int nb_cli_parse_status_line(const char *line, int *status)
{
	const char *p = line;
	int v;

	if (!nb_str_has_prefix(p, "HTTP/1."))
		return -EINVAL;
	p += strlen("HTTP/1.");
	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	p++;
	if (*p != ' ')
		return -EINVAL;
	p++;
	if (digits(&p, 3, &v) < 0 || (*p && *p != ' ' && *p != '\r' && *p != '\n'))
		return -EINVAL;
	if (v < 100)
		return -EINVAL;
	*status = v;
	return 0;
}

size_t nb_cli_log_new_offset(const char *tail, size_t tail_len, size_t prev_len, const char *cur,
                             size_t cur_len)
{
	const char *last = NULL, *from = cur;

	if (!tail_len || tail_len > prev_len)
		return 0;
	/* the usual case: the log only grew */
	if (cur_len >= prev_len && !memcmp(cur + prev_len - tail_len, tail, tail_len))
		return prev_len;
	for (;;) {
		size_t left = cur_len - (size_t)(from - cur);
		const char *m = memmem(from, left, tail, tail_len);
		if (!m)
			break;
		last = m;
		from = m + 1;
	}
	return last ? (size_t)(last - cur) + tail_len : 0;
}

void nb_cli_fmt_iso(int64_t ms, char *out, size_t outsz)
{
	struct tm tm;
	time_t t;
	char day[32];

	if (ms < 0) {
		snprintf(out, outsz, "-");
		return;
	}
	t = (time_t)(ms / 1000);
	if (!gmtime_r(&t, &tm) || !strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm)) {
		snprintf(out, outsz, "-");
		return;
	}
	snprintf(out, outsz, "%s.%03dZ", day, (int)(ms % 1000));
}

void nb_cli_fmt_since_json(const json_t *v, int64_t now_ms, char *out, size_t outsz)
{
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		nb_cli_fmt_age((now_ms - (int64_t)json_integer_value(v)) / 1000, out, outsz);
	else
		nb_cli_fmt_since(json_string_value(v), now_ms, out, outsz);
}
