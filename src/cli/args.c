/* Command-line option parsing: long options with or without '=', single
 * letter aliases, flags, positionals, "--". Pure: no printing. */
#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

int nb_cli_args_add(struct nb_cli_args *a, const struct nb_cli_opt *opts)
{
	for (; opts && opts->name; opts++) {
		if (a->nopts >= NB_CLI_MAX_OPTS)
			return -E2BIG;
		a->opts[a->nopts] = opts;
		a->val[a->nopts] = NULL;
		a->nopts++;
	}
	return 0;
}

static int find_long(const struct nb_cli_args *a, const char *name, size_t len)
{
	for (int i = 0; i < a->nopts; i++)
		if (strlen(a->opts[i]->name) == len && !strncmp(a->opts[i]->name, name, len))
			return i;
	return -1;
}

static int find_short(const struct nb_cli_args *a, char c)
{
	for (int i = 0; i < a->nopts; i++)
		if (a->opts[i]->short_name && a->opts[i]->short_name == c)
			return i;
	return -1;
}

/* Takes the value of option i: inline (after '=') or the next argument. */
static int take_value(struct nb_cli_args *a, int i, const char *shown, const char *inline_val,
                      int argc, char **argv, int *idx)
{
	const struct nb_cli_opt *o = a->opts[i];

	if (!o->arg) {
		if (inline_val) {
			snprintf(a->err, sizeof(a->err), "option '%s' takes no value", shown);
			return -EINVAL;
		}
		a->val[i] = "1";
		return 0;
	}
	if (inline_val) {
		a->val[i] = inline_val;
		return 0;
	}
	if (*idx + 1 >= argc) {
		snprintf(a->err, sizeof(a->err), "option '%s' needs a value (%s)", shown, o->arg);
		return -EINVAL;
	}
	(*idx)++;
	if (strlen(argv[*idx]) > NB_CLI_MAX_ARG_LEN) {
		snprintf(a->err, sizeof(a->err), "value of option '%s' is too long", shown);
		return -EINVAL;
	}
	a->val[i] = argv[*idx];
	return 0;
}

int nb_cli_args_parse(struct nb_cli_args *a, int argc, char **argv, int flags)
{
	bool dashdash = false;

	a->err[0] = '\0';
	for (int i = 0; i < argc; i++) {
		const char *s = argv[i];

		if (strlen(s) > NB_CLI_MAX_ARG_LEN) {
			snprintf(a->err, sizeof(a->err), "argument %d is too long", i + 1);
			return -EINVAL;
		}
		if (!dashdash && !strcmp(s, "--")) {
			dashdash = true;
			continue;
		}
		if (!dashdash && s[0] == '-' && s[1] == '-') {
			const char *name = s + 2, *eq = strchr(name, '=');
			size_t len = eq ? (size_t)(eq - name) : strlen(name);
			int o = find_long(a, name, len);
			char shown[64];

			snprintf(shown, sizeof(shown), "--%.*s", (int)(len < 40 ? len : 40), name);
			if (o < 0) {
				snprintf(a->err, sizeof(a->err), "unknown option '%s'", shown);
				return -EINVAL;
			}
			if (take_value(a, o, shown, eq ? eq + 1 : NULL, argc, argv, &i) < 0)
				return -EINVAL;
			continue;
		}
		if (!dashdash && s[0] == '-' && s[1] != '\0') {
			int o = find_short(a, s[1]);
			char shown[8] = {'-', s[1], '\0'};

			if (o < 0 || s[2] != '\0') {
				snprintf(a->err, sizeof(a->err), "unknown option '%s'", s);
				return -EINVAL;
			}
			if (take_value(a, o, shown, NULL, argc, argv, &i) < 0)
				return -EINVAL;
			continue;
		}
		if (flags & NB_CLI_STOP_AT_POS) {
			a->next = i;
			return 0;
		}
		if (a->npos >= NB_CLI_MAX_POS) {
			snprintf(a->err, sizeof(a->err), "too many arguments (at most %d)",
			         NB_CLI_MAX_POS);
			return -EINVAL;
		}
		a->pos[a->npos++] = s;
	}
	a->next = argc;
	return 0;
}

const char *nb_cli_args_get(const struct nb_cli_args *a, const char *name)
{
	int i = find_long(a, name, strlen(name));

	return i < 0 ? NULL : a->val[i];
}

bool nb_cli_args_flag(const struct nb_cli_args *a, const char *name)
{
	return nb_cli_args_get(a, name) != NULL;
}

int nb_cli_args_u64(struct nb_cli_args *a, const char *name, uint64_t min, uint64_t max,
                    uint64_t *out)
{
	const char *v = nb_cli_args_get(a, name);
	uint64_t n;

	if (!v)
		return 1;
	if (nb_parse_u64(v, &n) < 0 || n < min || n > max) {
		snprintf(a->err, sizeof(a->err),
		         "option '--%s' wants a whole number from %llu to %llu, not '%.40s'", name,
		         (unsigned long long)min, (unsigned long long)max, v);
		return -EINVAL;
	}
	*out = n;
	return 0;
}

int nb_cli_args_help(struct nb_buf *out, const struct nb_cli_opt *opts)
{
	size_t w = 0;
	int r = 0;

	for (const struct nb_cli_opt *o = opts; o && o->name; o++) {
		size_t l = strlen(o->name) + 2 + (o->arg ? strlen(o->arg) + 1 : 0);
		if (l > w)
			w = l;
	}
	for (const struct nb_cli_opt *o = opts; o && o->name && r >= 0; o++) {
		char left[128];

		snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "",
		         o->arg ? o->arg : "");
		if (o->short_name)
			r = nb_buf_printf(out, "  -%c, %-*s  %s\n", o->short_name, (int)w, left,
			                  o->help);
		else
			r = nb_buf_printf(out, "      %-*s  %s\n", (int)w, left, o->help);
	}
	return r;
}
