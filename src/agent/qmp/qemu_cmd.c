/* The qemu-system-x86_64 command line for one VM. Pure: validates the spec
 * and builds strings, nothing else. */
#include "agent/qmp/qemu_cmd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "common/buf.h"

#define QEMU_MAX_ARGS 64
#define QEMU_MAX_PATH 4096
#define QEMU_MAX_ID 64
#define QEMU_MAX_VCPUS 64
#define QEMU_MIN_MEMORY_MB 16
#define QEMU_MAX_MEMORY_MB (1024u * 1024u) /* 1 TiB */
/* x86 kernels take at most 2048 bytes of command line, NUL included. */
#define QEMU_MAX_CMDLINE 2047
#define QEMU_MAX_IFNAME 15

/* The machine type: "pc" (i440FX), measured against "q35" under TCG on the
 * build machine (QEMU 7.2, 1 vCPU, 256 MiB, with the other flags here):
 * - boot to user space (Debian's 6.1 kernel, busybox initramfs, -kernel,
 *   from spawn to the init's first console line), 25 interleaved pairs:
 *   median pc 6.17 s, q35 6.20 s; q35 slower in 12 of 25 pairs, so no
 *   difference beyond the noise of a shared 2-core host;
 * - firmware alone (SeaBIOS to a boot sector on virtio-blk that exits QEMU
 *   through isa-debug-exit), 21 runs: median pc 0.110 s, q35 0.121 s.
 * pc is as fast or a little faster, is QEMU's default, and its chipset is
 * the smaller one to emulate and migrate (no AHCI, SMBus or PCIe
 * emulation); nubo's guests need nothing q35 adds (PCIe hotplug, secure
 * boot). The alias stays unversioned: both ends of a migration run the
 * same QEMU on one host. */
#define QEMU_MACHINE "pc"
/* TCG's CPU model. qemu64 (QEMU's default) lacks SSE4.2 and POPCNT, which
 * distributions built for x86-64-v2 require; "max" changes with every QEMU
 * release, so guests would see another CPU after an upgrade. Nehalem is the
 * x86-64-v2 baseline and TCG implements every feature it names (the real
 * QEMU test in test_qemu_cmd.c checks QEMU prints no warning). */
#define QEMU_TCG_CPU "Nehalem"

struct argv_builder {
	char **v;
	int n;
	int err;
};

static void add(struct argv_builder *b, const char *s)
{
	char *d;

	if (b->err)
		return;
	if (b->n >= QEMU_MAX_ARGS) {
		b->err = -E2BIG;
		return;
	}
	d = strdup(s);
	if (!d) {
		b->err = -ENOMEM;
		return;
	}
	b->v[b->n++] = d;
}

/* Appends s to buf with QEMU's option escaping: a ',' in a value is
 * written ",,". */
static int put_escaped(struct nb_buf *buf, const char *s)
{
	const char *c;
	int r;

	for (c = s; *c; c++) {
		r = nb_buf_append(buf, c, 1);
		if (r == 0 && *c == ',')
			r = nb_buf_append(buf, c, 1);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Builds one argument from a format where each "%s" takes the next string,
 * escaped (%s) or verbatim (%v), then adds it. */
static void addf(struct argv_builder *b, const char *fmt, ...)
{
	struct nb_buf buf;
	va_list ap;
	const char *f;
	int r = 0;

	if (b->err)
		return;
	nb_buf_init(&buf, 4 * QEMU_MAX_PATH);
	va_start(ap, fmt);
	for (f = fmt; *f && r == 0; f++) {
		if (f[0] == '%' && (f[1] == 's' || f[1] == 'v')) {
			const char *s = va_arg(ap, const char *);

			r = f[1] == 's' ? put_escaped(&buf, s) : nb_buf_puts(&buf, s);
			f++;
		} else {
			r = nb_buf_append(&buf, f, 1);
		}
	}
	va_end(ap);
	if (r == 0)
		r = nb_buf_puts(&buf, ""); /* data is non-NULL even when empty */
	if (r < 0)
		b->err = r;
	else
		add(b, buf.data);
	nb_buf_free(&buf);
}

static bool str_ok(const char *s, size_t max)
{
	size_t n;

	if (!s || !*s)
		return false;
	n = strnlen(s, max + 1);
	if (n > max)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

static bool charset_ok(const char *s, const char *extra)
{
	for (; *s; s++) {
		if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9'))
			continue;
		if (!strchr(extra, *s))
			return false;
	}
	return true;
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* 8-4-4-4-12 hex digits. */
static bool uuid_ok(const char *s)
{
	size_t i;

	if (strlen(s) != 36)
		return false;
	for (i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!is_hex(s[i])) {
			return false;
		}
	}
	return true;
}

/* xx:xx:xx:xx:xx:xx, unicast. */
static bool mac_ok(const char *s)
{
	size_t i;

	if (strlen(s) != 17)
		return false;
	for (i = 0; i < 17; i++) {
		if (i % 3 == 2) {
			if (s[i] != ':')
				return false;
		} else if (!is_hex(s[i])) {
			return false;
		}
	}
	/* The low bit of the first octet marks multicast. */
	return (strchr("02468aceACE", s[1]) != NULL);
}

static int validate(const struct nb_vm_spec *s)
{
	struct sockaddr_un sa;

	if (!s)
		return -EINVAL;
	if (s->qemu && !str_ok(s->qemu, QEMU_MAX_PATH))
		return -EINVAL;
	if (!str_ok(s->id, QEMU_MAX_ID) || !charset_ok(s->id, "-_."))
		return -EINVAL;
	if (s->uuid && !uuid_ok(s->uuid))
		return -EINVAL;
	if (!str_ok(s->dir, QEMU_MAX_PATH) || !str_ok(s->disk, QEMU_MAX_PATH))
		return -EINVAL;
	/* The QMP socket path must fit a sockaddr_un. */
	if (strlen(s->dir) + strlen("/qmp.sock") >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	if (s->accel && strcmp(s->accel, "tcg") != 0 && strcmp(s->accel, "kvm") != 0)
		return -EINVAL;
	if (s->vcpus < 1 || s->vcpus > QEMU_MAX_VCPUS)
		return -EINVAL;
	if (s->memory_mb < QEMU_MIN_MEMORY_MB || s->memory_mb > QEMU_MAX_MEMORY_MB)
		return -EINVAL;
	if (s->kernel && !str_ok(s->kernel, QEMU_MAX_PATH))
		return -EINVAL;
	/* QEMU refuses -initrd and -append without -kernel. */
	if (!s->kernel && (s->initrd || s->cmdline))
		return -EINVAL;
	if (s->initrd && !str_ok(s->initrd, QEMU_MAX_PATH))
		return -EINVAL;
	if (s->cmdline && (strnlen(s->cmdline, QEMU_MAX_CMDLINE + 1) > QEMU_MAX_CMDLINE ||
	                   (*s->cmdline && !str_ok(s->cmdline, QEMU_MAX_CMDLINE))))
		return -EINVAL;
	if (s->tap_fd < 0 || (s->tap_fd > 0 && (s->tap_fd < 3 || !s->tap)))
		return -EINVAL;
	if (s->tap) {
		if (!str_ok(s->tap, QEMU_MAX_IFNAME) || !charset_ok(s->tap, "-_."))
			return -EINVAL;
		if (!s->mac || !mac_ok(s->mac))
			return -EINVAL;
	} else if (s->mac) {
		return -EINVAL;
	}
	return 0;
}

int nb_qemu_argv(const struct nb_vm_spec *s, char ***argv_out)
{
	struct argv_builder b = {0};
	bool kvm;
	char num[32];
	int r;

	*argv_out = NULL;
	r = validate(s);
	if (r < 0)
		return r;
	kvm = s->accel && strcmp(s->accel, "kvm") == 0;
	b.v = calloc(QEMU_MAX_ARGS + 1, sizeof(*b.v));
	if (!b.v)
		return -ENOMEM;

	add(&b, s->qemu ? s->qemu : "qemu-system-x86_64");
	add(&b, "-name");
	addf(&b, "guest=%v,debug-threads=on", s->id);
	add(&b, "-msg");
	add(&b, "timestamp=on");
	add(&b, "-nodefaults");
	add(&b, "-no-user-config");
	add(&b, "-display");
	add(&b, "none");
	add(&b, "-machine");
	add(&b, QEMU_MACHINE);
	add(&b, "-accel");
	/* tb-size bounds TCG's translation cache (default 1 GiB per guest). */
	add(&b, kvm ? "kvm" : "tcg,tb-size=64");
	add(&b, "-cpu");
	add(&b, kvm ? "host" : QEMU_TCG_CPU);
	add(&b, "-smp");
	snprintf(num, sizeof(num), "%d", s->vcpus);
	add(&b, num);
	add(&b, "-m");
	snprintf(num, sizeof(num), "%lluM", (unsigned long long)s->memory_mb);
	add(&b, num);
	if (s->uuid) {
		add(&b, "-uuid");
		add(&b, s->uuid);
		add(&b, "-smbios");
		addf(&b, "type=1,serial=%v,uuid=%v", s->id, s->uuid);
	} else {
		add(&b, "-smbios");
		addf(&b, "type=1,serial=%v", s->id);
	}
	add(&b, "-qmp");
	addf(&b, "unix:%s/qmp.sock,server=on,wait=off", s->dir);
	add(&b, "-pidfile");
	addf(&b, "%v/qemu.pid", s->dir);
	/* The console is QEMU's stdio, a socketpair whose other end the shim
	 * holds; signal=off so a byte 0x03 from a user is not SIGINT. */
	add(&b, "-chardev");
	add(&b, "stdio,id=ser0,signal=off");
	add(&b, "-serial");
	add(&b, "chardev:ser0");
	/* cache=writeback: the base images under many overlays stay in the
	 * host page cache once, shared by every guest booted from them, and it
	 * works on any filesystem (cache=none needs O_DIRECT, which tmpfs
	 * lacks). Guest flushes still reach the disk, so what a guest fsyncs
	 * survives a host crash. */
	add(&b, "-drive");
	addf(&b, "file=%s,if=none,id=disk0,format=qcow2,cache=writeback,discard=unmap", s->disk);
	add(&b, "-device");
	add(&b, "virtio-blk-pci,drive=disk0,bootindex=1");
	if (s->kernel) {
		add(&b, "-kernel");
		add(&b, s->kernel);
		if (s->initrd) {
			add(&b, "-initrd");
			add(&b, s->initrd);
		}
		if (s->cmdline) {
			add(&b, "-append");
			add(&b, s->cmdline);
		}
	}
	if (s->tap) {
		add(&b, "-netdev");
		if (s->tap_fd > 0) { /* opened by the agent, in a namespace QEMU never sees */
			char fd[16];
			snprintf(fd, sizeof(fd), "%d", s->tap_fd);
			addf(&b, "tap,id=net0,fd=%v,vhost=off", fd);
		} else
			addf(&b, "tap,id=net0,ifname=%v,script=no,downscript=no,vhost=off", s->tap);
		add(&b, "-device");
		addf(&b, "virtio-net-pci,netdev=net0,mac=%v", s->mac);
	}
	if (b.err) {
		nb_argv_free(b.v);
		return b.err;
	}
	*argv_out = b.v;
	return 0;
}

void nb_argv_free(char **argv)
{
	char **p;

	if (!argv)
		return;
	for (p = argv; *p; p++)
		free(*p);
	free(argv);
}
