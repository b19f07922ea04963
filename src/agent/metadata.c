/* The instance metadata service over this agent's instances: placeholder
 * until net/imds.c lands (refuses every listener). */
#include <errno.h>
#include <unistd.h>

#include "agent/agent.h"

int nb_agent_imds_start(struct nb_agent *a)
{
	(void)a;
	return 0;
}

void nb_agent_imds_stop(struct nb_agent *a)
{
	(void)a;
}

int nb_agent_imds_listen(struct nb_agent *a, const char *vpc_id, int fd)
{
	(void)a;
	(void)vpc_id;
	if (fd >= 0)
		close(fd);
	return -ENOSYS;
}

void nb_agent_imds_unlisten(struct nb_agent *a, const char *vpc_id)
{
	(void)a;
	(void)vpc_id;
}
