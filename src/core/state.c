#include "core/state.h"

#include <string.h>

#include "common/err.h"

static const char *const action_names[] = {
	[NB_ACT_START] = "start",   [NB_ACT_STOP] = "stop",	[NB_ACT_REBOOT] = "reboot",
	[NB_ACT_PAUSE] = "pause",   [NB_ACT_RESUME] = "resume", [NB_ACT_TERMINATE] = "terminate",
};

static const char *const states[] = {"pending",	"running",	 "paused",    "stopping",
				     "stopped", "shutting-down", "terminated"};

int nb_action_parse(const char *name)
{
	for (unsigned i = 0; i < sizeof(action_names) / sizeof(action_names[0]); i++)
		if (name && !strcmp(name, action_names[i]))
			return (int)i;
	return -1;
}

const char *nb_action_name(enum nb_action a)
{
	return action_names[a];
}

bool nb_state_valid(const char *state)
{
	for (unsigned i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		if (state && !strcmp(state, states[i]))
			return true;
	return false;
}

static bool is(const char *s, const char *v)
{
	return !strcmp(s, v);
}

int nb_state_apply(const char *state, const char *desired, enum nb_action a,
		   struct nb_transition *t)
{
	memset(t, 0, sizeof(*t));
	t->state = state;
	t->desired = desired;

	if (is(state, "terminated")) {
		t->noop = a == NB_ACT_TERMINATE;
		return t->noop ? 0 : -NB_E_STATE;
	}
	if (is(state, "shutting-down")) {
		t->noop = a == NB_ACT_TERMINATE;
		return t->noop ? 0 : -NB_E_STATE;
	}
	switch (a) {
	case NB_ACT_TERMINATE:
		t->state = "shutting-down";
		t->desired = "terminated";
		return 0;
	case NB_ACT_START:
		if (is(state, "stopped")) {
			t->state = "pending";
			t->desired = "running";
			t->bump_start = true;
			return 0;
		}
		if ((is(state, "running") || is(state, "pending")) && is(desired, "running")) {
			t->noop = true;
			return 0;
		}
		return -NB_E_STATE;
	case NB_ACT_STOP:
		if (is(state, "stopped") || is(state, "stopping")) {
			t->noop = true;
			return 0;
		}
		t->state = "stopping";
		t->desired = "stopped";
		return 0;
	case NB_ACT_REBOOT:
		if (is(state, "running") && is(desired, "running")) {
			t->bump_reboot = true;
			return 0;
		}
		return -NB_E_STATE;
	case NB_ACT_PAUSE:
		if (is(state, "paused") || (is(state, "running") && is(desired, "paused"))) {
			t->noop = true;
			return 0;
		}
		if (is(state, "running") && is(desired, "running")) {
			t->desired = "paused";
			return 0;
		}
		return -NB_E_STATE;
	case NB_ACT_RESUME:
		if (is(state, "paused") || (is(state, "running") && is(desired, "paused"))) {
			t->desired = "running";
			return 0;
		}
		if (is(state, "running") && is(desired, "running")) {
			t->noop = true;
			return 0;
		}
		return -NB_E_STATE;
	}
	return -NB_E_STATE;
}

const char *nb_state_from_report(const char *state, const char *desired, const char *actual,
				 bool seq_current, bool *reset_desired)
{
	*reset_desired = false;
	if (is(state, "terminated"))
		return state;
	if (is(actual, "terminated") || is(actual, "error"))
		return is(desired, "terminated") || is(actual, "error") ? "terminated" : state;
	if (is(desired, "terminated"))
		return "shutting-down";
	if (is(actual, "running")) {
		if (!seq_current)
			return state;
		if (is(desired, "stopped"))
			return "stopping";
		return "running";
	}
	if (is(actual, "paused"))
		return is(desired, "stopped") ? "stopping" : "paused";
	if (is(actual, "stopped")) {
		if (is(desired, "stopped"))
			return "stopped";
		if (!seq_current)
			return state; /* a start the agent has not acted on yet */
		/* the guest powered off or its QEMU died: EC2 shows it stopped */
		*reset_desired = true;
		return "stopped";
	}
	return state; /* pending: not started yet */
}
