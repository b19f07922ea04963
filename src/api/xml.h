/* A small XML writer for AWS responses (EC2 Query and S3): elements,
 * escaped text, and the two error formats. Output goes to an nb_buf with a
 * ceiling. */
#ifndef NB_XML_H
#define NB_XML_H

#include <stdint.h>

#include "common/buf.h"

#define NB_XML_MAX_DEPTH 32

struct nb_xml {
	struct nb_buf *out;
	const char *stack[NB_XML_MAX_DEPTH];
	unsigned char len[NB_XML_MAX_DEPTH]; /* of each name on the stack */
	int depth;
	int err; /* first error (-E2BIG past the ceiling); later calls are no-ops */
};

/* Starts a document: <?xml ...?> then <root xmlns="ns"> (ns may be NULL). */
void nb_xml_begin(struct nb_xml *x, struct nb_buf *out, const char *root, const char *ns);
/* <name> ... </name>; name is kept by pointer until closed (use literals). */
void nb_xml_open(struct nb_xml *x, const char *name);
void nb_xml_close(struct nb_xml *x);
/* <name>escaped text</name> */
void nb_xml_text(struct nb_xml *x, const char *name, const char *text);
void nb_xml_int(struct nb_xml *x, const char *name, long long v);
void nb_xml_bool(struct nb_xml *x, const char *name, int v);
/* Appends len bytes of XML written earlier by another nb_xml (balanced:
 * every element it opened closed) at the current position. */
void nb_xml_raw(struct nb_xml *x, const char *xml, size_t len);
/* Closes every open element; returns x->err. */
int nb_xml_end(struct nb_xml *x);
/* Appends s with &, <, >, ", ' escaped and control characters other than
 * tab/newline/CR dropped (XML 1.0 cannot carry them). */
int nb_xml_escape(struct nb_buf *out, const char *s);

/* EC2's error document:
 * <Response><Errors><Error><Code>..</Code><Message>..</Message></Error></Errors>
 * <RequestID>..</RequestID></Response> */
int nb_xml_ec2_error(struct nb_buf *out, const char *code, const char *message,
		     const char *request_id);
/* S3's: <Error><Code/><Message/><Resource/><RequestId/></Error> */
int nb_xml_s3_error(struct nb_buf *out, const char *code, const char *message,
		    const char *resource, const char *request_id);

#endif
