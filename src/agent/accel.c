#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent.h"
#include "common/util.h"

static bool cpu_has_virt(void)
{
	char *data = NULL;
	bool yes = false;

	if (nb_read_file("/proc/cpuinfo", 16u << 20, &data, NULL) < 0)
		return false;
	for (char *line = data; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		if (!strncmp(line, "flags", 5) && (strstr(line, " vmx") || strstr(line, " svm")))
			yes = true;
		line = nl ? nl + 1 : NULL;
	}
	free(data);
	return yes;
}

/* A boot sector that writes 0x31 to isa-debug-exit (port 0xf4): QEMU exits
 * with status (0x31 << 1) | 1 = 99 once the guest has really run. */
static int write_probe(const char *path)
{
	unsigned char sector[512] = {0xb0, 0x31, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd};

	sector[510] = 0x55;
	sector[511] = 0xaa;
	return nb_write_file(path, sector, sizeof(sector), 0600);
}

const char *nb_accel_detect(const char *qemu, const char *workdir)
{
	char probe[PATH_MAX], drive[PATH_MAX + 32];
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return "tcg";
	close(fd);
	if (!cpu_has_virt())
		return "tcg";
	snprintf(probe, sizeof(probe), "%s/kvm-probe.img", workdir);
	if (write_probe(probe) < 0)
		return "tcg";
	snprintf(drive, sizeof(drive), "file=%s,format=raw,if=ide", probe);
	const char *argv[] = {qemu,	     "-accel", "kvm",	  "-machine", "pc",	  "-m", "16",
			      "-nodefaults", "-display", "none", "-drive", drive, "-device",
			      "isa-debug-exit,iobase=0xf4,iosize=0x04", NULL};
	int r = nb_run(argv, 5000, NULL);
	unlink(probe);
	return r == 99 ? "kvm" : "tcg";
}
