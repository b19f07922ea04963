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

/* Bytes an element name may hold: 1 first, 2 later. */
static const unsigned char name_class[256] = {
	['_'] = 3, ['-'] = 2, ['.'] = 2, [':'] = 2,
#define R3(c) [c] = 3
#define R2(c) [c] = 2
	R3('a'), R3('b'), R3('c'), R3('d'), R3('e'), R3('f'), R3('g'), R3('h'), R3('i'),
	R3('j'), R3('k'), R3('l'), R3('m'), R3('n'), R3('o'), R3('p'), R3('q'), R3('r'),
	R3('s'), R3('t'), R3('u'), R3('v'), R3('w'), R3('x'), R3('y'), R3('z'),
	R3('A'), R3('B'), R3('C'), R3('D'), R3('E'), R3('F'), R3('G'), R3('H'), R3('I'),
	R3('J'), R3('K'), R3('L'), R3('M'), R3('N'), R3('O'), R3('P'), R3('Q'), R3('R'),
	R3('S'), R3('T'), R3('U'), R3('V'), R3('W'), R3('X'), R3('Y'), R3('Z'),
	R2('0'), R2('1'), R2('2'), R2('3'), R2('4'), R2('5'), R2('6'), R2('7'), R2('8'), R2('9'),
#undef R3
#undef R2
};

/* Length of a valid element name (at most XML_MAX_NAME), or 0. */
static size_t name_len(const char *name)
{
	const unsigned char *p = (const unsigned char *)name;
	size_t i;

	if (!p || !(name_class[p[0]] & 1))
		return 0;
	for (i = 1; p[i]; i++)
		if (i >= XML_MAX_NAME || !(name_class[p[i]] & 2))
			return 0;
	return i;
}

/* Bytes that go out as they are: printable ASCII but & < > " ', and tab
 * and newline. */
static const unsigned char plain[256] = {
	['\t'] = 1, ['\n'] = 1, [0x20] = 1, [0x21] = 1, [0x23] = 1, [0x24] = 1, [0x25] = 1,
#define P4(c) [c] = 1, [c + 1] = 1, [c + 2] = 1, [c + 3] = 1
#define P16(c) P4(c), P4(c + 4), P4(c + 8), P4(c + 12)
	P4(0x28), P4(0x2C), P4(0x30), P4(0x34), P4(0x38), [0x3D] = 1, [0x3F] = 1,
	P16(0x40), P16(0x50), P16(0x60), P4(0x70), P4(0x74), P4(0x78),
	[0x7C] = 1, [0x7D] = 1, [0x7E] = 1,
#undef P16
#undef P4
};

/* How many of the n bytes at s are plain. */
static size_t plain_run(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < n && plain[p[i]])
		i++;
	return i;
}

/* Keeps the first error and cuts the buffer back to mark. */
static void fail(struct nb_xml *x, size_t mark, int r)
{
	if (!x->err)
		x->err = r;
	if (x->out)
		cut(x->out, mark);
}

/* Ready for a call writing element name: no earlier error, a valid name.
 * The name's length, or 0 when not ready. */
static size_t ready(struct nb_xml *x, const char *name)
{
	size_t n;

	if (x->err)
		return 0;
	if (!x->out) {
		x->err = -EINVAL;
		return 0;
	}
	n = name_len(name);
	if (!n)
		x->err = -EINVAL;
	return n;
}

static void start_tag(struct nb_xml *x, const char *name, size_t nl, const char *ns)
{
	size_t mark = x->out->len;
	char *p;
	int r;

	if (x->depth >= NB_XML_MAX_DEPTH) {
		x->err = -EOVERFLOW;
		return;
	}
	if (ns) {
		r = nb_buf_puts(x->out, "<");
		if (r == 0)
			r = nb_buf_puts(x->out, name);
		if (r == 0)
			r = nb_buf_puts(x->out, " xmlns=\"");
		if (r == 0)
			r = nb_xml_escape(x->out, ns);
		if (r == 0)
			r = nb_buf_puts(x->out, "\">");
		if (r < 0) {
			fail(x, mark, r);
			return;
		}
	} else {
		r = nb_buf_reserve(x->out, nl + 2);
		if (r < 0) {
			fail(x, mark, r);
			return;
		}
		p = x->out->data + mark;
		*p++ = '<';
		memcpy(p, name, nl);
		p += nl;
		*p++ = '>';
		*p = '\0';
		x->out->len = mark + nl + 2;
	}
	x->len[x->depth] = (unsigned char)nl;
	x->stack[x->depth++] = name;
}

void nb_xml_begin(struct nb_xml *x, struct nb_buf *out, const char *root, const char *ns)
{
	size_t mark = out ? out->len : 0;
	int r;

	x->out = out;
	x->depth = 0;
	x->err = 0;
	size_t nl;

	if (!(nl = ready(x, root)))
		return;
	r = nb_buf_puts(out, XML_DECL);
	if (r < 0) {
		fail(x, mark, r);
		return;
	}
	start_tag(x, root, nl, ns);
	if (x->err)
		cut(out, mark);
}

void nb_xml_open(struct nb_xml *x, const char *name)
{
	size_t nl = ready(x, name);

	if (nl)
		start_tag(x, name, nl, NULL);
}

void nb_xml_close(struct nb_xml *x)
{
	size_t mark, nl;
	char *p;
	int r;

	if (x->err)
		return;
	if (!x->out || x->depth == 0) {
		x->err = -EINVAL;
		return;
	}
	mark = x->out->len;
	nl = x->len[x->depth - 1];
	r = nb_buf_reserve(x->out, nl + 3);
	if (r < 0) {
		fail(x, mark, r);
		return;
	}
	p = x->out->data + mark;
	*p++ = '<';
	*p++ = '/';
	memcpy(p, x->stack[x->depth - 1], nl);
	p += nl;
	*p++ = '>';
	*p = '\0';
	x->out->len = mark + nl + 3;
	x->depth--;
}

/* <name>text</name>, text tl bytes. */
static void text_elem(struct nb_xml *x, const char *name, size_t nl, const char *text, size_t tl)
{
	size_t mark = x->out->len, run = plain_run(text, tl);
	char *p;
	int r;

	/* the opening tag and the plain part of the text in one go */
	r = nb_buf_reserve(x->out, 2 * nl + 5 + tl);
	if (r < 0) {
		fail(x, mark, r);
		return;
	}
	p = x->out->data + mark;
	*p++ = '<';
	memcpy(p, name, nl);
	p += nl;
	*p++ = '>';
	memcpy(p, text, run);
	p += run;
	x->out->len = (size_t)(p - x->out->data);
	if (run < tl) {
		*p = '\0';
		r = nb_xml_escape(x->out, text + run);
		if (r == 0)
			r = nb_buf_reserve(x->out, nl + 3);
		if (r < 0) {
			fail(x, mark, r);
			return;
		}
		p = x->out->data + x->out->len;
	}
	*p++ = '<';
	*p++ = '/';
	memcpy(p, name, nl);
	p += nl;
	*p++ = '>';
	*p = '\0';
	x->out->len = (size_t)(p - x->out->data);
}

void nb_xml_text(struct nb_xml *x, const char *name, const char *text)
{
	size_t nl = ready(x, name);

	if (!nl)
		return;
	text = text ? text : "";
	text_elem(x, name, nl, text, strlen(text));
}

void nb_xml_int(struct nb_xml *x, const char *name, long long v)
{
	char num[24], *p = num + sizeof(num);
	unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
	size_t nl = ready(x, name);

	if (!nl)
		return;
	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		*--p = '-';
	text_elem(x, name, nl, p, (size_t)(num + sizeof(num) - p));
}

void nb_xml_bool(struct nb_xml *x, const char *name, int v)
{
	nb_xml_text(x, name, v ? "true" : "false");
}

void nb_xml_raw(struct nb_xml *x, const char *xml, size_t len)
{
	if (x->err || !x->out)
		return;
	if (nb_buf_append(x->out, xml, len) < 0)
		x->err = -E2BIG;
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
