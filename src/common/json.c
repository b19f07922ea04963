#include "common/json.h"

const char *nb_json_str(const json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

int64_t nb_json_int(const json_t *o, const char *key, int64_t def)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

char *nb_json_dump(const json_t *o)
{
	return json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
}

const char *nb_json_str_or(const json_t *o, const char *key)
{
	const char *s = nb_json_str(o, key);

	return s ? s : "";
}
