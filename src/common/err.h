/* nubo's error codes: negative values, distinct from -errno (which stays
 * below 4096). One table maps each to an HTTP status and an API code. */
#ifndef NB_ERR_H
#define NB_ERR_H

enum nb_err {
	NB_E_BASE = 10000,
	NB_E_NOT_FOUND,       /* 404 NotFound */
	NB_E_INVALID,         /* 400 InvalidParameterValue */
	NB_E_MISSING,         /* 400 MissingParameter */
	NB_E_STATE,           /* 409 IncorrectInstanceState */
	NB_E_CAPACITY,        /* 503 InsufficientInstanceCapacity */
	NB_E_CONFLICT,        /* 409 Conflict */
	NB_E_AUTH,            /* 401 AuthFailure */
	NB_E_FORBIDDEN,       /* 403 UnauthorizedOperation */
	NB_E_LIMIT,           /* 400 InstanceLimitExceeded */
	NB_E_IDEMPOTENT,      /* 400 IdempotentParameterMismatch */
	NB_E_UNAVAILABLE,     /* 503 Unavailable */
	NB_E_INTERNAL,        /* 500 InternalError */
	NB_E_AUTH_MISSING,    /* 401 AuthFailure: no credentials at all */
	NB_E_AUTH_INCOMPLETE, /* 400 IncompleteSignature */
	NB_E_SIG_MISMATCH,    /* 403 SignatureDoesNotMatch */
	NB_E_EXPIRED,         /* 400 RequestExpired */
	NB_E_BAD_KEY,         /* 401 InvalidClientTokenId */
	NB_E_THROTTLED,       /* 503 RequestLimitExceeded */
	NB_E_END
};

/* Accepts a nubo code or -errno. */
int nb_err_http_status(int err);
const char *nb_err_code(int err);

#endif
