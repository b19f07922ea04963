/* The QMP commands nubo uses: build arguments, execute, check the reply's
 * shape. No I/O of its own: everything goes through qmp.c. */
#include "agent/qmp/qmp_cmd.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

/* Largest vCPU count believed from QEMU; the agent never asks for more. */
#define QMP_MAX_CPUS 4096

static int run(struct nb_qmp *q, const char *cmd, json_t **ret)
{
	return nb_qmp_execute(q, cmd, NULL, NB_QMP_TIMEOUT_MS, ret, NULL, 0);
}

/* For commands whose reply is an empty object. */
static int run_void(struct nb_qmp *q, const char *cmd)
{
	json_t *ret = NULL;
	int r = run(q, cmd, &ret);

	if (r == 0 && !json_is_object(ret))
		r = -EPROTO;
	json_decref(ret);
	return r;
}

static int copy_out(char *out, size_t outsz, const char *s)
{
	if (!out)
		return 0;
	if (outsz == 0 || strlen(s) >= outsz)
		return -ERANGE;
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

int nb_qmp_query_status(struct nb_qmp *q, char *status, size_t statussz, bool *running)
{
	json_t *ret = NULL, *run_flag;
	const char *st;
	int r;

	r = run(q, "query-status", &ret);
	if (r < 0)
		goto out;
	st = json_is_object(ret) ? json_string_value(json_object_get(ret, "status")) : NULL;
	run_flag = json_is_object(ret) ? json_object_get(ret, "running") : NULL;
	if (!st || !json_is_boolean(run_flag)) {
		r = -EPROTO;
		goto out;
	}
	r = copy_out(status, statussz, st);
	if (r == 0 && running)
		*running = json_is_true(run_flag);
out:
	json_decref(ret);
	return r;
}

int nb_qmp_stop(struct nb_qmp *q)
{
	return run_void(q, "stop");
}

int nb_qmp_cont(struct nb_qmp *q)
{
	return run_void(q, "cont");
}

int nb_qmp_system_powerdown(struct nb_qmp *q)
{
	return run_void(q, "system_powerdown");
}

int nb_qmp_system_reset(struct nb_qmp *q)
{
	return run_void(q, "system_reset");
}

int nb_qmp_quit(struct nb_qmp *q)
{
	int r = run_void(q, "quit");

	return r == -EPIPE ? 0 : r;
}

int nb_qmp_query_version(struct nb_qmp *q, char *out, size_t outsz)
{
	json_t *ret = NULL, *qemu, *maj, *min, *mic;
	char v[64];
	int r;

	r = run(q, "query-version", &ret);
	if (r < 0)
		goto out;
	qemu = json_is_object(ret) ? json_object_get(ret, "qemu") : NULL;
	maj = json_object_get(qemu, "major");
	min = json_object_get(qemu, "minor");
	mic = json_object_get(qemu, "micro");
	if (!json_is_integer(maj) || !json_is_integer(min) || !json_is_integer(mic) ||
	    json_integer_value(maj) < 0 || json_integer_value(min) < 0 ||
	    json_integer_value(mic) < 0) {
		r = -EPROTO;
		goto out;
	}
	snprintf(v, sizeof(v), "%lld.%lld.%lld", (long long)json_integer_value(maj),
	         (long long)json_integer_value(min), (long long)json_integer_value(mic));
	r = copy_out(out, outsz, v);
out:
	json_decref(ret);
	return r;
}

int nb_qmp_query_cpu_count(struct nb_qmp *q, int *count)
{
	json_t *ret = NULL;
	int r;

	r = run(q, "query-cpus-fast", &ret);
	if (r < 0)
		goto out;
	if (!json_is_array(ret) || json_array_size(ret) > QMP_MAX_CPUS) {
		r = -EPROTO;
		goto out;
	}
	*count = (int)json_array_size(ret);
out:
	json_decref(ret);
	return r;
}

int nb_qmp_query_memory(struct nb_qmp *q, long long *bytes)
{
	json_t *ret = NULL, *base, *plugged;
	long long total;
	int r;

	r = run(q, "query-memory-size-summary", &ret);
	if (r < 0)
		goto out;
	base = json_is_object(ret) ? json_object_get(ret, "base-memory") : NULL;
	plugged = json_is_object(ret) ? json_object_get(ret, "plugged-memory") : NULL;
	if (!json_is_integer(base) || json_integer_value(base) < 0 ||
	    (plugged && (!json_is_integer(plugged) || json_integer_value(plugged) < 0))) {
		r = -EPROTO;
		goto out;
	}
	total = json_integer_value(base);
	if (plugged) {
		if (json_integer_value(plugged) > LLONG_MAX - total) {
			r = -EPROTO;
			goto out;
		}
		total += json_integer_value(plugged);
	}
	*bytes = total;
out:
	json_decref(ret);
	return r;
}
