#include "common/err.h"

#include <errno.h>

static const struct {
	int status;
	const char *code;
} err_table[] = {
	[NB_E_NOT_FOUND - NB_E_BASE] = {404, "NotFound"},
	[NB_E_INVALID - NB_E_BASE] = {400, "InvalidParameterValue"},
	[NB_E_MISSING - NB_E_BASE] = {400, "MissingParameter"},
	[NB_E_STATE - NB_E_BASE] = {409, "IncorrectInstanceState"},
	[NB_E_CAPACITY - NB_E_BASE] = {503, "InsufficientInstanceCapacity"},
	[NB_E_CONFLICT - NB_E_BASE] = {409, "Conflict"},
	[NB_E_AUTH - NB_E_BASE] = {401, "AuthFailure"},
	[NB_E_FORBIDDEN - NB_E_BASE] = {403, "UnauthorizedOperation"},
	[NB_E_LIMIT - NB_E_BASE] = {400, "InstanceLimitExceeded"},
	[NB_E_IDEMPOTENT - NB_E_BASE] = {400, "IdempotentParameterMismatch"},
	[NB_E_UNAVAILABLE - NB_E_BASE] = {503, "Unavailable"},
	[NB_E_INTERNAL - NB_E_BASE] = {500, "InternalError"},
	[NB_E_AUTH_MISSING - NB_E_BASE] = {401, "AuthFailure"},
	[NB_E_AUTH_INCOMPLETE - NB_E_BASE] = {400, "IncompleteSignature"},
	[NB_E_SIG_MISMATCH - NB_E_BASE] = {403, "SignatureDoesNotMatch"},
	[NB_E_EXPIRED - NB_E_BASE] = {400, "RequestExpired"},
	[NB_E_BAD_KEY - NB_E_BASE] = {401, "InvalidClientTokenId"},
	[NB_E_THROTTLED - NB_E_BASE] = {503, "RequestLimitExceeded"},
};

static int err_index(int err)
{
	int e = -err;

	if (e > NB_E_BASE && e < NB_E_END)
		return e - NB_E_BASE;
	switch (e) {
	case ENOENT:
		return NB_E_NOT_FOUND - NB_E_BASE;
	case EINVAL:
	case E2BIG:
	case ERANGE:
		return NB_E_INVALID - NB_E_BASE;
	case EEXIST:
		return NB_E_CONFLICT - NB_E_BASE;
	case EACCES:
	case EPERM:
		return NB_E_FORBIDDEN - NB_E_BASE;
	case ENOSPC:
		return NB_E_CAPACITY - NB_E_BASE;
	default:
		return NB_E_INTERNAL - NB_E_BASE;
	}
}

int nb_err_http_status(int err)
{
	return err_table[err_index(err)].status;
}

const char *nb_err_code(int err)
{
	return err_table[err_index(err)].code;
}
