/* XML writer for AWS responses. Compact output (no indentation), as AWS
 * sends. Each call either writes its whole piece or nothing: on the first
 * failure the buffer is cut back to where that call started, the error is
 * kept in x->err, and every later call does nothing. */
#include "api/xml.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define XML_DECL "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
#define XML_MAX_NAME 128

/* Length of the well-formed UTF-8 sequence at s, or 0 (same rules as the
 * query decoder: no overlongs, surrogates or code points past U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];

	if (c < 0x80)
		return 1;
	if (c < 0xC2)
		return 0;
	if (c < 0xE0)
		return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
	if (c < 0xF0) {
		if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F))
			return 0;
		return 3;
	}
	if (c < 0xF5) {
		if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 ||
		    (s[3] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))
			return 0;
		return 4;
	}
	return 0;
}

static void cut(struct nb_buf *b, size_t len)
{
	b->len = len;
	if (b->data)
		b->data[len] = '\0';
}

int nb_xml_escape(struct nb_buf *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s, *run;
	size_t mark = out->len, left, l, skip;
	const char *rep;
	int r = 0;

	if (!s)
		return 0;
	left = strlen(s);
	run = p;
	while (left) {
		rep = NULL;
		skip = 1;
		switch (*p) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\'':
			rep = "&apos;";
			break;
		case '\r':
			rep = "&#13;"; /* a raw CR would be read back as LF */
			break;
		case '\t':
		case '\n':
			break;
		default:
			if (*p < 0x20 || *p == 0x7F) {
				rep = ""; /* XML 1.0 cannot carry it */
			} else if (*p >= 0x80) {
				l = utf8_seq(p, left);
				if (!l)
					rep = "\xEF\xBF\xBD"; /* U+FFFD for a broken sequence */
				else if (l == 3 && p[0] == 0xEF && p[1] == 0xBF && p[2] >= 0xBE)
					rep = ""; /* U+FFFE, U+FFFF are not XML characters */
				skip = l ? l : 1;
			}
			break;
		}
		if (rep) {
			r = nb_buf_append(out, run, (size_t)(p - run));
			if (r == 0)
				r = nb_buf_puts(out, rep);
			if (r < 0)
				goto fail;
			run = p + skip;
		}
		p += skip;
		left -= skip;
	}
	r = nb_buf_append(out, run, (size_t)(p - run));
	if (r < 0)
		goto fail;
	return 0;
fail:
	cut(out, mark);
	return r;
}

static bool name_ok(const char *name)
{
	size_t i;
	char c;

	if (!name || !name[0])
		return false;
	for (i = 0; name[i]; i++) {
		c = name[i];
		if (i >= XML_MAX_NAME)
			return false;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
			continue;
		if (i > 0 && ((c >= '0' && c <= '9') || c == '-' || c == '.' || c == ':'))
			continue;
		return false;
	}
	return true;
}

/* Keeps the first error and cuts the buffer back to mark. */
static void fail(struct nb_xml *x, size_t mark, int r)
{
	if (!x->err)
		x->err = r;
	if (x->out)
		cut(x->out, mark);
}

/* Ready for a call writing element name: no earlier error, a valid name. */
static bool ready(struct nb_xml *x, const char *name)
{
	if (x->err)
		return false;
	if (!x->out) {
		x->err = -EINVAL;
		return false;
	}
	if (!name_ok(name)) {
		x->err = -EINVAL;
		return false;
	}
	return true;
}

static void start_tag(struct nb_xml *x, const char *name, const char *ns)
{
	size_t mark = x->out->len;
	int r;

	if (x->depth >= NB_XML_MAX_DEPTH) {
		x->err = -EOVERFLOW;
		return;
	}
	r = nb_buf_puts(x->out, "<");
	if (r == 0)
		r = nb_buf_puts(x->out, name);
	if (r == 0 && ns) {
		r = nb_buf_puts(x->out, " xmlns=\"");
		if (r == 0)
			r = nb_xml_escape(x->out, ns);
		if (r == 0)
			r = nb_buf_puts(x->out, "\"");
	}
	if (r == 0)
		r = nb_buf_puts(x->out, ">");
	if (r < 0) {
		fail(x, mark, r);
		return;
	}
	x->stack[x->depth++] = name;
}

void nb_xml_begin(struct nb_xml *x, struct nb_buf *out, const char *root, const char *ns)
{
	size_t mark = out ? out->len : 0;
	int r;

	x->out = out;
	x->depth = 0;
	x->err = 0;
	if (!ready(x, root))
		return;
	r = nb_buf_puts(out, XML_DECL);
	if (r < 0) {
		fail(x, mark, r);
		return;
	}
	start_tag(x, root, ns);
	if (x->err)
		cut(out, mark);
}

void nb_xml_open(struct nb_xml *x, const char *name)
{
	if (ready(x, name))
		start_tag(x, name, NULL);
}

void nb_xml_close(struct nb_xml *x)
{
	size_t mark;
	int r;

	if (x->err)
		return;
	if (!x->out || x->depth == 0) {
		x->err = -EINVAL;
		return;
	}
	mark = x->out->len;
	r = nb_buf_puts(x->out, "</");
	if (r == 0)
		r = nb_buf_puts(x->out, x->stack[x->depth - 1]);
	if (r == 0)
		r = nb_buf_puts(x->out, ">");
	if (r < 0) {
		fail(x, mark, r);
		return;
	}
	x->depth--;
}

void nb_xml_text(struct nb_xml *x, const char *name, const char *text)
{
	size_t mark;
	int r;

	if (!ready(x, name))
		return;
	mark = x->out->len;
	r = nb_buf_puts(x->out, "<");
	if (r == 0)
		r = nb_buf_puts(x->out, name);
	if (r == 0)
		r = nb_buf_puts(x->out, ">");
	if (r == 0)
		r = nb_xml_escape(x->out, text ? text : "");
	if (r == 0)
		r = nb_buf_puts(x->out, "</");
	if (r == 0)
		r = nb_buf_puts(x->out, name);
	if (r == 0)
		r = nb_buf_puts(x->out, ">");
	if (r < 0)
		fail(x, mark, r);
}

void nb_xml_int(struct nb_xml *x, const char *name, long long v)
{
	char num[24];

	snprintf(num, sizeof(num), "%lld", v);
	nb_xml_text(x, name, num);
}

void nb_xml_bool(struct nb_xml *x, const char *name, int v)
{
	nb_xml_text(x, name, v ? "true" : "false");
}

int nb_xml_end(struct nb_xml *x)
{
	size_t mark;

	if (x->err || !x->out)
		return x->err ? x->err : -EINVAL;
	/* all the closing tags or none */
	mark = x->out->len;
	while (!x->err && x->depth > 0)
		nb_xml_close(x);
	if (x->err)
		cut(x->out, mark);
	return x->err;
}

int nb_xml_ec2_error(struct nb_buf *out, const char *code, const char *message,
                     const char *request_id)
{
	struct nb_xml x;
	size_t mark = out->len;
	int r;

	nb_xml_begin(&x, out, "Response", NULL);
	nb_xml_open(&x, "Errors");
	nb_xml_open(&x, "Error");
	nb_xml_text(&x, "Code", code);
	nb_xml_text(&x, "Message", message);
	nb_xml_close(&x);
	nb_xml_close(&x);
	nb_xml_text(&x, "RequestID", request_id);
	r = nb_xml_end(&x);
	if (r < 0)
		cut(out, mark);
	return r;
}

int nb_xml_s3_error(struct nb_buf *out, const char *code, const char *message, const char *resource,
                    const char *request_id)
{
	struct nb_xml x;
	size_t mark = out->len;
	int r;

	nb_xml_begin(&x, out, "Error", NULL);
	nb_xml_text(&x, "Code", code);
	nb_xml_text(&x, "Message", message);
	nb_xml_text(&x, "Resource", resource);
	nb_xml_text(&x, "RequestId", request_id);
	r = nb_xml_end(&x);
	if (r < 0)
		cut(out, mark);
	return r;
}
