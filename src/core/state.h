/* The instance state machine: pure, no I/O. EC2's states plus paused. */
#ifndef NB_STATE_H
#define NB_STATE_H

#include <stdbool.h>

enum nb_action {
	NB_ACT_START,
	NB_ACT_STOP,
	NB_ACT_REBOOT,
	NB_ACT_PAUSE,
	NB_ACT_RESUME,
	NB_ACT_TERMINATE,
};

struct nb_transition {
	const char *state;         /* the state the instance shows now */
	const char *desired;       /* what the agent is asked to make true */
	bool bump_start;           /* start_seq++ : the agent (re)starts QEMU */
	bool bump_reboot;          /* reboot_seq++ */
	bool noop;                 /* already there: nothing changes */
};

/* "start" -> NB_ACT_START; -1 for an unknown name. */
int nb_action_parse(const char *name);
const char *nb_action_name(enum nb_action a);
bool nb_state_valid(const char *state);
/* What action does to an instance in state (desired as last asked). Returns
 * 0 and fills t, or -NB_E_STATE when the action is illegal there (err says
 * why, e.g. "cannot pause i-... while it is stopped"). */
int nb_state_apply(const char *state, const char *desired, enum nb_action a,
		   struct nb_transition *t);

/* The instance's new state given what its agent reports (actual) and what is
 * desired. *reset_desired is set when the guest stopped on its own and
 * desired must become "stopped" too. */
const char *nb_state_from_report(const char *state, const char *desired, const char *actual,
				 bool seq_current, bool *reset_desired);

#endif
