/* nubod's native JSON API (/v1) and the agent protocol, as docs/api.md. */
#ifndef NB_V1_H
#define NB_V1_H

#include <microhttpd.h>

#include "core/core.h"
#include "core/secrets.h"

struct nb_ec2;

struct nb_v1 {
	struct nb_ctl *ctl;
	struct nb_ec2 *ec2;     /* the EC2 Query API on "/", and SigV4 for /v1 */
	struct nb_secrets *secrets;
	char join_token[128];
};

/* The MHD access handler; cls is a struct nb_v1. */
enum MHD_Result nb_v1_handler(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload_data,
			      size_t *upload_data_size, void **req_cls);

#endif
