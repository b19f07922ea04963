/* Host networking: the pure helpers, then the real thing (ip, nft, tc,
 * dnsmasq, a DHCP client) inside a network namespace of the test's own,
 * so the machine's interfaces are never touched. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/util.h"
#include "net/net.h"

#define CIDR "10.213.0.0/24"
#define BRIDGE "nbtest0"

/* ---- pure ---- */

static void test_tap_name(void **state)
{
	char a[16], b[16], c[16];

	(void)state;
	nb_net_tap_name("i-0123456789abcdef0", a);
	assert_string_equal(a, "nb0123456789abc");
	assert_int_equal(strlen(a), 15); /* fits IFNAMSIZ with its NUL */
	/* Other strings are hashed: same shape, stable, distinct. */
	nb_net_tap_name("not-an-instance", b);
	nb_net_tap_name("not-an-instance", c);
	assert_string_equal(b, c);
	assert_int_equal(strlen(b), 15);
	assert_true(nb_str_has_prefix(b, "nb"));
	for (int i = 2; i < 15; i++)
		assert_non_null(strchr("0123456789abcdef", b[i]));
	nb_net_tap_name("i-fffffffffffffffff", c);
	assert_string_not_equal(a, c);
}

static void test_mac(void **state)
{
	char a[18], b[18], c[18];
	unsigned o[6];

	(void)state;
	nb_net_mac("i-0123456789abcdef0", a);
	nb_net_mac("i-0123456789abcdef0", b);
	nb_net_mac("i-0123456789abcdef1", c);
	assert_string_equal(a, b); /* stable */
	assert_string_not_equal(a, c);
	assert_int_equal(strlen(a), 17);
	assert_true(nb_str_has_prefix(a, "52:54:00:"));
	assert_int_equal(
	    sscanf(a, "%2x:%2x:%2x:%2x:%2x:%2x", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5]), 6);
	assert_true(o[0] & 0x02);    /* locally administered */
	assert_false(o[0] & 0x01);   /* unicast */
	for (int i = 0; i < 17; i++) /* lower-case hex, as dnsmasq and QEMU print */
		assert_true(i % 3 == 2 ? a[i] == ':' : strchr("0123456789abcdef", a[i]) != NULL);
}

static void test_cidr_parse(void **state)
{
	static const char *const bad[] = {
	    "10.213.0.1/24", /* host bits set */
	    "10.213.0.0",
	    "10.213.0.0/",
	    "/24",
	    "10.213.0/24",
	    "10.213.0.0/33",
	    "10.213.0.0/31",
	    "10.0.0.0/7",
	    "300.1.1.0/24",
	    "10.213.0.0/24x",
	    "10.213.0.0/-1",
	    "010.1.1.0/24",
	    "10.213.0.0/024",
	    " 10.213.0.0/24",
	    "",
	    "10.213.0.0/24/24",
	};
	uint32_t net = 0;
	int prefix = 0;

	(void)state;
	assert_int_equal(nb_net_cidr_parse(CIDR, &net, &prefix), 0);
	assert_int_equal(net, 0x0ad50000u);
	assert_int_equal(prefix, 24);
	assert_int_equal(nb_net_cidr_parse("192.168.4.0/30", &net, &prefix), 0);
	assert_int_equal(net, 0xc0a80400u);
	assert_int_equal(prefix, 30);
	assert_int_equal(nb_net_cidr_parse("10.0.0.0/8", &net, &prefix), 0);
	for (size_t i = 0; i < NB_ARRAY_SIZE(bad); i++)
		if (nb_net_cidr_parse(bad[i], &net, &prefix) != -EINVAL)
			fail_msg("\"%s\" was accepted", bad[i]);
	assert_int_equal(nb_net_cidr_parse(NULL, &net, &prefix), -EINVAL);
}

static void test_pool(void **state)
{
	char a[16];

	(void)state;
	assert_int_equal(nb_net_pool_size(CIDR), 253);
	assert_int_equal(nb_net_pool_addr(CIDR, 0, a), 0);
	assert_string_equal(a, "10.213.0.2"); /* .1 is the gateway */
	assert_int_equal(nb_net_pool_addr(CIDR, 5, a), 0);
	assert_string_equal(a, "10.213.0.7");
	assert_int_equal(nb_net_pool_addr(CIDR, 252, a), 0);
	assert_string_equal(a, "10.213.0.254"); /* .255 is broadcast */
	assert_int_equal(nb_net_pool_addr(CIDR, 253, a), -ERANGE);
	assert_int_equal(nb_net_pool_addr(CIDR, -1, a), -EINVAL);
	assert_int_equal(nb_net_pool_addr("10.213.0.5/24", 0, a), -EINVAL);
	assert_int_equal(nb_net_gateway(CIDR, a), 0);
	assert_string_equal(a, "10.213.0.1");
	/* Across an octet boundary. */
	assert_int_equal(nb_net_pool_addr("10.8.0.0/16", 300, a), 0);
	assert_string_equal(a, "10.8.1.46");
	assert_int_equal(nb_net_pool_size("192.168.4.0/30"), 1);
	assert_int_equal(nb_net_pool_addr("192.168.4.0/30", 0, a), 0);
	assert_string_equal(a, "192.168.4.2");
	assert_int_equal(nb_net_pool_addr("192.168.4.0/30", 1, a), -ERANGE);
}

static void test_refuses_foreign_names(void **state)
{
	char err[256] = "";

	(void)state;
	/* Checked before anything runs: no namespace needed. */
	assert_int_equal(nb_net_bridge_ensure("eth0", CIDR, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "eth0"));
	assert_int_equal(nb_net_bridge_ensure("nbthisnameistoolong", CIDR, err, sizeof(err)),
	                 -EINVAL);
	assert_int_equal(nb_net_bridge_ensure("nb/x", CIDR, NULL, 0), -EINVAL);
	assert_int_equal(nb_net_bridge_ensure(BRIDGE, "10.213.0.1/24", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "10.213.0.1/24"));
	assert_int_equal(nb_net_tap_create("eth0", BRIDGE, 10, err, sizeof(err)), -EINVAL);
	assert_int_equal(nb_net_tap_create("nbtap", BRIDGE, 200000, err, sizeof(err)), -EINVAL);
	assert_int_equal(nb_net_tap_delete("lo"), -EINVAL);
	assert_int_equal(nb_net_teardown("/tmp/x", "eth0"), -EINVAL);
	assert_int_equal(nb_net_dnsmasq_ensure("relative/dir", BRIDGE, CIDR, err, sizeof(err)),
	                 -EINVAL);
	{
		struct nb_dhcp_host bad_mac = {"52:54:00:zz:00:01", "10.213.0.2", NULL};
		struct nb_dhcp_host bad_ip = {"52:54:00:00:00:01", "10.213.0", NULL};
		struct nb_dhcp_host bad_name = {"52:54:00:00:00:01", "10.213.0.2", "a b"};
		assert_int_equal(nb_net_dhcp_hosts("/tmp/nb-unused", &bad_mac, 1), -EINVAL);
		assert_int_equal(nb_net_dhcp_hosts("/tmp/nb-unused", &bad_ip, 1), -EINVAL);
		assert_int_equal(nb_net_dhcp_hosts("/tmp/nb-unused", &bad_name, 1), -EINVAL);
		assert_false(nb_path_exists("/tmp/nb-unused"));
	}
}

/* ---- real, in a network namespace ---- */

struct ns {
	int home; /* the original network namespace */
	char dir[64];
	char peer_ns[32]; /* named namespace for the DHCP client */
};

static struct ns g_ns = {.home = -1};

static int run_quiet(const char *const argv[])
{
	return nb_run(argv, 20000, NULL);
}

/* Runs argv and returns its output (caller frees); fails the test on a
 * non-zero exit. */
static char *run_out(const char *const argv[])
{
	struct nb_buf out;
	int r;

	nb_buf_init(&out, 1 << 20);
	r = nb_run(argv, 30000, &out);
	if (r != 0)
		fail_msg("%s %s: exit %d: %s", argv[0], argv[1], r, out.data ? out.data : "");
	if (!out.data)
		nb_buf_puts(&out, "");
	return nb_buf_steal(&out);
}

static void assert_output_has(const char *const argv[], const char *needle)
{
	char *out = run_out(argv);

	if (!strstr(out, needle))
		fail_msg("%s %s ...: no \"%s\" in:\n%s", argv[0], argv[1], needle, out);
	free(out);
}

static bool link_exists(const char *name)
{
	return if_nametoindex(name) != 0;
}

static bool wait_gone(pid_t pid, int ms)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0), r;
	struct pollfd p;

	if (fd < 0)
		return errno == ESRCH;
	p = (struct pollfd){.fd = fd, .events = POLLIN};
	do
		r = poll(&p, 1, ms);
	while (r < 0 && errno == EINTR);
	close(fd);
	return r == 1;
}

static int ns_setup(void **state)
{
	char hex[9];

	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "network tests need root\n");
		return -1;
	}
	g_ns.home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (g_ns.home < 0 || unshare(CLONE_NEWNET) < 0) {
		fprintf(stderr, "unshare(CLONE_NEWNET): %s\n", strerror(errno));
		return -1;
	}
	{
		const char *lo[] = {"ip", "link", "set", "dev", "lo", "up", NULL};
		if (run_quiet(lo) != 0)
			return -1;
	}
	nb_strlcpy(g_ns.dir, "/tmp/nb-net-XXXXXX", sizeof(g_ns.dir));
	if (!mkdtemp(g_ns.dir) || chmod(g_ns.dir, 0755) < 0)
		return -1;
	if (nb_random_hex(hex, 8) < 0)
		return -1;
	snprintf(g_ns.peer_ns, sizeof(g_ns.peer_ns), "nbtest-%s", hex);
	return 0;
}

static int ns_teardown(void **state)
{
	char path[128];
	const char *del[] = {"ip", "netns", "del", g_ns.peer_ns, NULL};

	(void)state;
	/* Whatever a failed test left: dnsmasq, the peer namespace, the dir.
	 * The anonymous namespace goes with its last process. */
	nb_net_dnsmasq_stop(g_ns.dir);
	snprintf(path, sizeof(path), "/run/netns/%s", g_ns.peer_ns);
	if (nb_path_exists(path))
		run_quiet(del);
	if (g_ns.home >= 0) {
		setns(g_ns.home, CLONE_NEWNET);
		close(g_ns.home);
	}
	nb_rm_rf(g_ns.dir);
	return 0;
}

static void test_bridge(void **state)
{
	char err[512] = "", *out;
	const char *addr[] = {"ip", "-o", "-4", "addr", "show", "dev", BRIDGE, NULL};
	const char *link[] = {"ip", "-o", "link", "show", "dev", BRIDGE, NULL};
	const char *nft[] = {"nft", "list", "table", "inet", "nubo", NULL};

	(void)state;
	assert_false(link_exists(BRIDGE));
	for (int i = 0; i < 2; i++) { /* idempotent */
		if (nb_net_bridge_ensure(BRIDGE, CIDR, err, sizeof(err)) != 0)
			fail_msg("bridge_ensure: %s", err);
	}
	out = run_out(addr);
	assert_non_null(strstr(out, "inet 10.213.0.1/24"));
	assert_null(strchr(out, '\n') ? strchr(strchr(out, '\n') + 1, '\n') : NULL); /* one */
	free(out);
	assert_output_has(link, ",UP");
	{
		/* the bridge's own MAC, kept while ports with lower ones come
		 * and go (left alone, a bridge takes its lowest port's) */
		char mac[18], want[40];
		const char *mk[] = {"ip", "link", "add", "nbtestlow", "type", "veth", "peer",
				    "name", "nbtestlow1", NULL};
		const char *lo[] = {"ip", "link", "set", "dev", "nbtestlow", "address",
				    "02:00:00:00:00:01", "master", BRIDGE, "up", NULL};
		const char *rm[] = {"ip", "link", "del", "dev", "nbtestlow", NULL};
		nb_net_bridge_mac(BRIDGE, mac);
		snprintf(want, sizeof(want), "link/ether %s ", mac);
		assert_output_has(link, want);
		assert_int_equal(run_quiet(mk), 0);
		assert_int_equal(run_quiet(lo), 0);
		assert_output_has(link, want);
		assert_int_equal(run_quiet(rm), 0);
		assert_output_has(link, want);
		if (nb_net_bridge_ensure(BRIDGE, CIDR, err, sizeof(err)) != 0)
			fail_msg("bridge_ensure: %s", err);
		assert_output_has(link, want);
	}
	assert_output_has(nft, "ip saddr 10.213.0.0/24 oifname != \"" BRIDGE "\" masquerade");
	assert_output_has(nft, "iifname \"" BRIDGE "\" accept");
	{
		char *fwd = NULL;
		assert_int_equal(nb_read_file("/proc/sys/net/ipv4/ip_forward", 16, &fwd, NULL), 0);
		assert_string_equal(fwd, "1\n");
		free(fwd);
	}
}

static void test_tap(void **state)
{
	char err[512] = "", tap[16], table[64];
	const char *detail[] = {"ip", "-d", "-o", "link", "show", "dev", tap, NULL};
	const char *qdisc[] = {"tc", "qdisc", "show", "dev", tap, NULL};
	const char *nft[] = {"nft", "list", "table", "netdev", tap, NULL};
	char *out;

	(void)state;
	nb_net_tap_name("i-0123456789abcdef0", tap);
	snprintf(table, sizeof(table), "%s", tap);
	/* Needs its bridge. */
	assert_int_equal(nb_net_tap_create(tap, "nbnosuchbr", 0, err, sizeof(err)), -ENOENT);
	for (int i = 0; i < 2; i++) {
		if (nb_net_tap_create(tap, BRIDGE, 100, err, sizeof(err)) != 0)
			fail_msg("tap_create: %s", err);
	}
	assert_output_has(detail, "master " BRIDGE);
	assert_output_has(detail, "tun type tap");
	assert_output_has(detail, "persist on");
	out = run_out(detail);
	assert_non_null(strstr(out, ",UP")); /* admin up; no carrier until QEMU opens it */
	free(out);
	/* To the guest: 100 Mbit/s token bucket; from it: policed. */
	assert_output_has(qdisc, "tbf");
	assert_output_has(qdisc, "rate 100Mbit burst 125000b lat 50ms");
	assert_output_has(nft, "hook ingress device \"");
	assert_output_has(nft, "limit rate over 12500000 bytes/second");
	/* No cap: both limits go. */
	if (nb_net_tap_create(tap, BRIDGE, 0, err, sizeof(err)) != 0)
		fail_msg("tap_create: %s", err);
	out = run_out(qdisc);
	assert_null(strstr(out, "tbf"));
	free(out);
	assert_int_not_equal(run_quiet(nft), 0);
	/* And back. */
	if (nb_net_tap_create(tap, BRIDGE, 20, err, sizeof(err)) != 0)
		fail_msg("tap_create: %s", err);
	assert_output_has(qdisc, "rate 20Mbit");
}

static void test_dnsmasq_and_dhcp(void **state)
{
	char err[512] = "", mac[18], ip[16], other_ip[16], hosts_path[128], script[128], *text;
	char veth[16], peer[16];
	struct nb_dhcp_host h[2];
	const char *ss[] = {"ss", "-H", "-lunp", NULL};
	int pid, pid2;

	(void)state;
	if (nb_net_dnsmasq_ensure(g_ns.dir, BRIDGE, CIDR, err, sizeof(err)) != 0)
		fail_msg("dnsmasq_ensure: %s", err);
	pid = nb_net_dnsmasq_pid(g_ns.dir);
	assert_true(pid > 0);
	assert_int_equal(kill(pid, 0), 0);
	/* Bound to the bridge only, DHCP port. */
	assert_output_has(ss, "%" BRIDGE ":67");
	assert_output_has(ss, "dnsmasq");
	/* Ensure again: the running one is kept. */
	if (nb_net_dnsmasq_ensure(g_ns.dir, BRIDGE, CIDR, err, sizeof(err)) != 0)
		fail_msg("dnsmasq_ensure: %s", err);
	assert_int_equal(nb_net_dnsmasq_pid(g_ns.dir), pid);

	/* Hosts written after the start: dnsmasq learns them by SIGHUP. */
	nb_net_mac("i-0123456789abcdef0", mac);
	assert_int_equal(nb_net_pool_addr(CIDR, 5, ip), 0);
	assert_int_equal(nb_net_pool_addr(CIDR, 9, other_ip), 0);
	h[0] = (struct nb_dhcp_host){mac, ip, "vm1"};
	h[1] = (struct nb_dhcp_host){"52:54:00:00:00:09", other_ip, NULL};
	assert_int_equal(nb_net_dhcp_hosts(g_ns.dir, h, 2), 0);
	snprintf(hosts_path, sizeof(hosts_path), "%s/dhcp-hosts", g_ns.dir);
	assert_int_equal(nb_read_file(hosts_path, 1 << 16, &text, NULL), 0);
	{
		char want[128];
		snprintf(want, sizeof(want), "%s,%s,vm1\n52:54:00:00:00:09,%s\n", mac, ip,
		         other_ip);
		assert_string_equal(text, want);
	}
	free(text);
	assert_int_equal(kill(pid, 0), 0);
	assert_int_equal(nb_net_dnsmasq_pid(g_ns.dir), pid);

	/* A client in another namespace, on a veth enslaved to the bridge,
	 * with the instance's MAC, gets exactly the fixed address. */
	snprintf(veth, sizeof(veth), "nbv%.8s", g_ns.peer_ns + 7);
	snprintf(peer, sizeof(peer), "nbp%.8s", g_ns.peer_ns + 7);
	snprintf(script, sizeof(script), "%s/udhcpc.sh", g_ns.dir);
	{
		static const char body[] =
		    "#!/bin/sh\n[ \"$1\" = bound ] && echo \"LEASE $ip\"\nexit 0\n";
		assert_int_equal(nb_write_file(script, body, strlen(body), 0755), 0);
	}
	{
		const char *add_ns[] = {"ip", "netns", "add", g_ns.peer_ns, NULL};
		const char *add_veth[] = {"ip",   "link", "add", veth,    "type",       "veth",
		                          "peer", "name", peer,  "netns", g_ns.peer_ns, NULL};
		const char *enslave[] = {"ip",     "link", "set", "dev", veth,
		                         "master", BRIDGE, "up",  NULL};
		const char *peer_mac[] = {"ip",   "netns", "exec", g_ns.peer_ns, "ip",
		                          "link", "set",   "dev",  peer,         "address",
		                          mac,    "up",    NULL};
		const char *dhcp[] = {"ip", "netns", "exec", g_ns.peer_ns, "busybox", "udhcpc",
		                      "-i", peer,    "-f",   "-q",         "-n",      "-t",
		                      "10", "-T",    "1",    "-s",         script,    NULL};
		assert_int_equal(run_quiet(add_ns), 0);
		assert_int_equal(run_quiet(add_veth), 0);
		assert_int_equal(run_quiet(enslave), 0);
		assert_int_equal(run_quiet(peer_mac), 0);
		text = run_out(dhcp);
		{
			char want[64];
			snprintf(want, sizeof(want), "LEASE %s\n", ip);
			if (!strstr(text, want))
				fail_msg("udhcpc did not get %s:\n%s", ip, text);
		}
		free(text);
	}
	/* A MAC without a fixed lease gets nothing (static mode). */
	{
		const char *peer_mac[] = {
		    "ip",  "netns", "exec",    g_ns.peer_ns,        "ip", "link", "set",
		    "dev", peer,    "address", "52:54:00:de:ad:01", NULL};
		const char *dhcp[] = {"ip", "netns", "exec", g_ns.peer_ns, "busybox", "udhcpc",
		                      "-i", peer,    "-f",   "-q",         "-n",      "-t",
		                      "2",  "-T",    "1",    "-s",         script,    NULL};
		struct nb_buf out;
		assert_int_equal(run_quiet(peer_mac), 0);
		nb_buf_init(&out, 1 << 16);
		assert_int_not_equal(nb_run(dhcp, 20000, &out), 0);
		assert_null(strstr(out.data ? out.data : "", "LEASE"));
		nb_buf_free(&out);
	}
	/* The address goes to another MAC (the instance was terminated, a new
	 * one got its address): while the old lease stands dnsmasq refuses the
	 * new MAC; once pruned, the new MAC gets the address at once. */
	{
		const char *new_mac = "52:54:00:de:ad:02";
		const char *peer_mac[] = {"ip",  "netns", "exec",    g_ns.peer_ns, "ip", "link",
		                          "set", "dev",   peer,      "address",    new_mac, NULL};
		const char *dhcp[] = {"ip", "netns", "exec", g_ns.peer_ns, "busybox", "udhcpc",
		                      "-i", peer,    "-f",   "-q",         "-n",      "-t",
		                      "2",  "-T",    "1",    "-s",         script,    NULL};
		char gw[16], want[64], *leases = NULL, lpath[160];
		struct nb_buf out;
		h[0] = (struct nb_dhcp_host){new_mac, ip, "vm2"};
		assert_int_equal(nb_net_dhcp_hosts(g_ns.dir, h, 2), 0);
		assert_int_equal(run_quiet(peer_mac), 0);
		nb_buf_init(&out, 1 << 16);
		assert_int_not_equal(nb_run(dhcp, 20000, &out), 0);
		assert_null(strstr(out.data ? out.data : "", "LEASE"));
		nb_buf_reset(&out);
		assert_int_equal(nb_net_gateway(CIDR, gw), 0);
		assert_int_equal(nb_net_dhcp_prune(g_ns.dir, BRIDGE, gw, h, 2), 1);
		/* dnsmasq drops the lease from its file when it handles the release */
		snprintf(lpath, sizeof(lpath), "%s/dnsmasq.leases", g_ns.dir);
		for (int i = 0; i < 500; i++) {
			free(leases);
			leases = NULL;
			assert_int_equal(nb_read_file(lpath, 1 << 16, &leases, NULL), 0);
			if (!strstr(leases, mac))
				break;
			struct timespec ts = {0, 10 * 1000 * 1000};
			nanosleep(&ts, NULL); /* polling dnsmasq's lease file, bounded */
		}
		if (strstr(leases, mac))
			fail_msg("the old lease is still there:\n%s", leases);
		free(leases);
		assert_int_equal(nb_run(dhcp, 20000, &out), 0);
		snprintf(want, sizeof(want), "LEASE %s\n", ip);
		if (!strstr(out.data ? out.data : "", want))
			fail_msg("udhcpc did not get %s after the release:\n%s", ip,
			         out.data ? out.data : "");
		nb_buf_free(&out);
		/* Nothing stale is left to release. */
		assert_int_equal(nb_net_dhcp_prune(g_ns.dir, BRIDGE, gw, h, 2), 0);
	}
	/* Still the same dnsmasq, alive after its SIGHUP. */
	assert_int_equal(nb_net_dnsmasq_pid(g_ns.dir), pid);

	/* A changed configuration restarts it. */
	if (nb_net_dnsmasq_ensure(g_ns.dir, BRIDGE, "10.213.0.0/25", err, sizeof(err)) != 0)
		fail_msg("dnsmasq_ensure: %s", err);
	pid2 = nb_net_dnsmasq_pid(g_ns.dir);
	assert_true(pid2 > 0);
	assert_int_not_equal(pid2, pid);
	assert_true(wait_gone(pid, 5000));
	{
		const char *del[] = {"ip", "netns", "del", g_ns.peer_ns, NULL};
		assert_int_equal(run_quiet(del), 0);
	}
}

static void test_not_a_bridge(void **state)
{
	char err[512] = "", other[128];
	const char *add[] = {"ip",   "link", "add",  "nbveth0", "type",
	                     "veth", "peer", "name", "nbveth1", NULL};
	const char *del[] = {"ip", "link", "del", "nbveth0", NULL};

	(void)state;
	assert_int_equal(run_quiet(add), 0);
	assert_int_equal(nb_net_bridge_ensure("nbveth0", CIDR, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "not a bridge"));
	/* Teardown leaves a foreign link alone. */
	snprintf(other, sizeof(other), "%s/other", g_ns.dir);
	assert_int_equal(nb_net_teardown(other, "nbveth0"), -EEXIST);
	assert_true(link_exists("nbveth0"));
	assert_int_equal(run_quiet(del), 0);
}

static void test_teardown(void **state)
{
	char tap[16], path[128];
	const char *nft_inet[] = {"nft", "list", "table", "inet", "nubo", NULL};
	const char *ruleset[] = {"nft", "list", "ruleset", NULL};
	int pid = nb_net_dnsmasq_pid(g_ns.dir);
	char *out;

	(void)state;
	assert_true(pid > 0);
	nb_net_tap_name("i-0123456789abcdef0", tap);
	assert_int_equal(nb_net_teardown(g_ns.dir, BRIDGE), 0);
	assert_false(link_exists(BRIDGE));
	assert_int_not_equal(run_quiet(nft_inet), 0);
	assert_true(wait_gone(pid, 5000));
	assert_int_equal(nb_net_dnsmasq_pid(g_ns.dir), 0);
	for (size_t i = 0; i < 4; i++) {
		static const char *const files[] = {"dnsmasq.conf", "dnsmasq.pid", "dhcp-hosts",
		                                    "dnsmasq.leases"};
		snprintf(path, sizeof(path), "%s/%s", g_ns.dir, files[i]);
		assert_false(nb_path_exists(path));
	}
	/* The tap is the instance's: it stays until deleted. */
	assert_true(link_exists(tap));
	assert_int_equal(nb_net_tap_delete(tap), 0);
	assert_false(link_exists(tap));
	assert_int_equal(nb_net_tap_delete(tap), 0);
	/* Nothing of ours is left. */
	out = run_out(ruleset);
	assert_string_equal(out, "");
	free(out);
	assert_int_equal(nb_net_teardown(g_ns.dir, BRIDGE), 0);
}


/* ---- tenant networks: two VPCs with the same CIDR on one "host" ---- */

#define VCIDR "10.20.0.0/16"
#define VSUB "10.20.1.0/24"
#define EIP "198.51.100.7"

struct guest {
	const char *name;
	int vpc; /* 0 or 1 */
	const char *ip;
	char mac[18];
	char ns[40];  /* the fake guest's own namespace */
	char tap[16]; /* its veth's end on the VPC bridge */
};

static struct {
	int home;
	char state[64]; /* the "agent's" state dir: names the namespaces */
	char dir[2][128];
	char ns[2][NB_NET_NS_NAME_MAX];
	char outside[40];
	struct guest g[3];
	pid_t servers[8];
	int nservers;
} V = {.home = -1};

static const struct nb_vpc_subnet v_subnets[] = {{VSUB, "10.20.1.1"}};

static struct nb_vpc vpc_of(int i)
{
	return (struct nb_vpc){V.ns[i], (uint32_t)(i + 1), V.dir[i], v_subnets, 1};
}

/* Runs a shell command line; its exit status. */
static int shf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int shf(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
	return nb_run(argv, 30000, NULL);
}

static char *shout(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *shout(const char *fmt, ...)
{
	char cmd[2048];
	struct nb_buf out;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
	nb_buf_init(&out, 1 << 20);
	nb_run(argv, 30000, &out);
	if (!out.data)
		nb_buf_puts(&out, "");
	return nb_buf_steal(&out);
}

/* A server in ns on port 80 answering each connection with word and the
 * peer's address. */
static void serve(const char *ns, const char *word)
{
	char cmd[512];
	pid_t pid;

	snprintf(cmd, sizeof(cmd),
	         "exec ip netns exec %s socat TCP-LISTEN:80,reuseaddr,fork "
	         "SYSTEM:'echo %s $SOCAT_PEERADDR'",
	         ns, word);
	pid = fork();
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	assert_true(pid > 0);
	V.servers[V.nservers++] = pid;
	for (int i = 0; i < 500; i++) { /* until it listens (:0050 in /proc/net/tcp) */
		char *t = shout("ip netns exec %s cat /proc/net/tcp", ns);
		bool up = strstr(t, ":0050 00000000:0000 0A") != NULL;
		free(t);
		if (up)
			return;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	fail_msg("the server in %s did not listen", ns);
}

/* What a TCP connection from guest (ns) to ip:80 reads; "" when none. */
static char *tcp_get(const char *ns, const char *ip)
{
	return shout("ip netns exec %s socat -T2 - TCP:%s:80,connect-timeout=2 </dev/null 2>/dev/null",
	             ns, ip);
}

static bool reaches(const char *ns, const char *ip, const char *word)
{
	char *t = tcp_get(ns, ip);
	bool ok = strstr(t, word) != NULL;

	free(t);
	return ok;
}

static bool pings(const char *ns, const char *ip)
{
	return shf("ip netns exec %s busybox ping -c 1 -W 2 %s >/dev/null 2>&1", ns, ip) == 0;
}

static int vpc_setup(void **state)
{
	char hex[9];

	(void)state;
	if (geteuid() != 0)
		return -1;
	V.home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (V.home < 0 || unshare(CLONE_NEWNET) < 0)
		return -1;
	if (shf("ip link set lo up") != 0)
		return -1;
	nb_strlcpy(V.state, "/tmp/nb-vpc-XXXXXX", sizeof(V.state));
	if (!mkdtemp(V.state) || nb_random_hex(hex, 8) < 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		nb_net_vpc_ns_name(V.state, (uint32_t)(i + 1), V.ns[i]);
		snprintf(V.dir[i], sizeof(V.dir[i]), "%s/net/%s", V.state, V.ns[i]);
	}
	snprintf(V.outside, sizeof(V.outside), "nbtout-%s", hex);
	static const char *const names[] = {"g1", "g2", "g3"};
	static const char *const ips[] = {"10.20.1.4", "10.20.1.5", "10.20.1.4"};
	for (int i = 0; i < 3; i++) {
		struct guest *g = &V.g[i];
		g->name = names[i];
		g->vpc = i == 2;
		g->ip = ips[i];
		snprintf(g->mac, sizeof(g->mac), "52:54:00:aa:00:%02x", i + 1);
		snprintf(g->ns, sizeof(g->ns), "nbtg-%s-%d", hex, i);
		snprintf(g->tap, sizeof(g->tap), "nbtap%d", i);
	}
	return 0;
}

static int vpc_teardown(void **state)
{
	(void)state;
	for (int i = 0; i < V.nservers; i++) {
		kill(V.servers[i], SIGKILL);
		waitpid(V.servers[i], NULL, 0);
	}
	for (int i = 0; i < 3; i++)
		shf("ip netns del %s 2>/dev/null", V.g[i].ns);
	shf("ip netns del %s 2>/dev/null", V.outside);
	for (int i = 0; i < 2; i++)
		nb_net_vpc_delete(V.ns[i], V.dir[i]);
	if (V.home >= 0) {
		setns(V.home, CLONE_NEWNET);
		close(V.home);
	}
	nb_rm_rf(V.state);
	return 0;
}

/* One fake guest: a namespace of its own, a veth whose other end is on
 * its VPC's bridge (in the role of the tap), its MAC and address. */
static void guest_attach(struct guest *g)
{
	const char *vns = V.ns[g->vpc];

	assert_int_equal(shf("ip netns add %s", g->ns), 0);
	assert_int_equal(shf("ip netns exec %s ip link add %s type veth peer name eth0 netns %s",
	                     vns, g->tap, g->ns),
	                 0);
	assert_int_equal(shf("ip netns exec %s ip link set %s master nbbr up", vns, g->tap), 0);
	assert_int_equal(shf("ip netns exec %s sh -c 'ip link set lo up; "
	                     "ip link set eth0 address %s up; ip addr add %s/24 dev eth0; "
	                     "ip route add default via 10.20.1.1'",
	                     g->ns, g->mac, g->ip),
	                 0);
}

static void test_vpc_ensure(void **state)
{
	char err[512] = "";
	(void)state;

	for (int i = 0; i < 2; i++)
		for (int k = 0; k < 2; k++) { /* idempotent */
			struct nb_vpc v = vpc_of(i);
			if (nb_net_vpc_ensure(&v, err, sizeof(err)) != 0)
				fail_msg("vpc_ensure %d: %s", i, err);
		}
	/* names: the agent's hash, the VNI; the transit /31s */
	assert_true(nb_str_has_prefix(V.ns[0], "nb"));
	assert_non_null(strstr(V.ns[1], "-2"));
	assert_true(nb_net_ns_exists(V.ns[0]) && nb_net_ns_exists(V.ns[1]));
	{
		char *t = shout("ip -o -4 addr show dev nbx1; ip -o -4 addr show dev nbx2");
		assert_non_null(strstr(t, "100.64.0.2/31"));
		assert_non_null(strstr(t, "100.64.0.4/31"));
		free(t);
		t = shout("ip netns exec %s ip -o -4 addr", V.ns[1]);
		assert_non_null(strstr(t, "nbup    inet 100.64.0.5/31"));
		assert_non_null(strstr(t, "nbbr    inet 10.20.1.1/24"));
		assert_non_null(strstr(t, "lo    inet 169.254.169.254/32"));
		free(t);
	}
	/* refused: foreign names, bad VNI */
	{
		struct nb_vpc bad = vpc_of(0);
		bad.vni = 0;
		assert_int_equal(nb_net_vpc_ensure(&bad, err, sizeof(err)), -EINVAL);
		bad = vpc_of(0);
		bad.ns = "eth0";
		assert_int_equal(nb_net_vpc_ensure(&bad, err, sizeof(err)), -EINVAL);
		assert_int_equal(nb_net_vpc_tap_open(V.ns[0], "eth0", NULL, err, sizeof(err)),
		                 -EINVAL);
		assert_int_equal(nb_net_vpc_tap_attach(V.ns[0], "nbup", 0, err, sizeof(err)),
		                 -EINVAL);
	}
	for (int i = 0; i < 3; i++)
		guest_attach(&V.g[i]);
}

static void test_vpc_dhcp(void **state)
{
	char script[160];
	(void)state;

	snprintf(script, sizeof(script), "%s/udhcpc.sh", V.state);
	{
		static const char body[] =
		    "#!/bin/sh\n[ \"$1\" = bound ] && echo \"LEASE $ip $router\"\nexit 0\n";
		assert_int_equal(nb_write_file(script, body, strlen(body), 0755), 0);
	}
	for (int i = 0; i < 2; i++) {
		struct nb_dhcp_host h[2];
		size_t n = 0;
		for (int k = 0; k < 3; k++)
			if (V.g[k].vpc == i)
				h[n++] = (struct nb_dhcp_host){V.g[k].mac, V.g[k].ip, NULL};
		struct nb_vpc v = vpc_of(i);
		assert_int_equal(nb_net_vpc_dhcp(&v, h, n), 0);
		assert_true(nb_net_dnsmasq_pid(V.dir[i]) > 0);
	}
	/* rules with the default group (as EC2): from the members, to anyone */
	for (int k = 0; k < 3; k++) {
		char want[64];
		char *t = shout("ip netns exec %s busybox udhcpc -i eth0 -f -q -n -t 10 -T 1 -s %s",
		                V.g[k].ns, script);
		snprintf(want, sizeof(want), "LEASE %s 10.20.1.1", V.g[k].ip);
		if (!strstr(t, want))
			fail_msg("%s did not get %s:\n%s", V.g[k].name, want, t);
		free(t);
	}
}

static const char *const members0[] = {"10.20.1.4/32", "10.20.1.5/32"};
static const char *const members1[] = {"10.20.1.4/32"};
static const char *const anyone[] = {"0.0.0.0/0"};

static void apply(int vpc, const struct nb_vpc_port *p, size_t n)
{
	char err[1024] = "";

	if (nb_net_vpc_rules(V.ns[vpc], p, n, err, sizeof(err)) != 0)
		fail_msg("rules: %s", err);
}

/* The default group on every guest; g2 with ingress given. */
static void rules_vpc0(const struct nb_sg_rule *g2_in, size_t n_in, const char *g2_eip)
{
	static const struct nb_sg_rule def_in[] = {{"-1", -1, -1, members0, 2}};
	static const struct nb_sg_rule def_out[] = {{"-1", -1, -1, anyone, 1}};
	struct nb_vpc_port p[2] = {
	    {V.g[0].tap, V.g[0].mac, V.g[0].ip, NULL, def_in, 1, def_out, 1},
	    {V.g[1].tap, V.g[1].mac, V.g[1].ip, g2_eip, g2_in, n_in, def_out, 1},
	};
	apply(0, p, 2);
}

static void test_vpc_isolation(void **state)
{
	static const struct nb_sg_rule def_in[] = {{"-1", -1, -1, members0, 2}};
	static const struct nb_sg_rule def_in1[] = {{"-1", -1, -1, members1, 1}};
	static const struct nb_sg_rule def_out[] = {{"-1", -1, -1, anyone, 1}};
	struct nb_vpc_port p1[1] = {{V.g[2].tap, V.g[2].mac, V.g[2].ip, NULL, def_in1, 1, def_out, 1}};
	(void)state;

	rules_vpc0(def_in, 1, NULL);
	apply(1, p1, 1);
	serve(V.g[0].ns, "g1");
	serve(V.g[1].ns, "g2");
	serve(V.g[2].ns, "g3");
	/* same VPC: ping and TCP both ways */
	assert_true(pings(V.g[0].ns, V.g[1].ip));
	assert_true(pings(V.g[1].ns, V.g[0].ip));
	assert_true(reaches(V.g[1].ns, V.g[0].ip, "g1 10.20.1.5"));
	assert_true(reaches(V.g[0].ns, V.g[1].ip, "g2 10.20.1.4"));
	/* g3 has g1's address in the other VPC: g2 reaches g1, never g3; g3
	 * finds no 10.20.1.5 at all (no ARP answer, no ping, no TCP) */
	assert_false(reaches(V.g[1].ns, V.g[0].ip, "g3"));
	assert_false(pings(V.g[2].ns, V.g[1].ip));
	assert_int_not_equal(
	    shf("ip netns exec %s busybox arping -c 1 -w 2 -I eth0 %s >/dev/null 2>&1", V.g[2].ns,
	        V.g[1].ip),
	    0);
	assert_false(reaches(V.g[2].ns, V.g[1].ip, "g"));
	/* nor through the host: the VPC veths do not forward to each other */
	assert_false(reaches(V.g[2].ns, "100.64.0.3", "g"));
	/* but each guest reaches its own gateway */
	assert_true(pings(V.g[2].ns, "10.20.1.1"));
	assert_true(pings(V.g[0].ns, "10.20.1.1"));
}

static void test_vpc_antispoof(void **state)
{
	(void)state;
	/* a forged MAC: nothing gets through */
	assert_int_equal(shf("ip netns exec %s ip link set eth0 address 52:54:00:aa:00:99",
	                     V.g[0].ns), 0);
	assert_false(pings(V.g[0].ns, V.g[1].ip));
	assert_false(reaches(V.g[0].ns, V.g[1].ip, "g2"));
	assert_int_equal(shf("ip netns exec %s ip link set eth0 address %s", V.g[0].ns,
	                     V.g[0].mac), 0);
	assert_true(pings(V.g[0].ns, V.g[1].ip));
	/* a forged source address: neither */
	assert_int_equal(shf("ip netns exec %s ip addr add 10.20.1.9/24 dev eth0", V.g[0].ns), 0);
	assert_int_not_equal(
	    shf("ip netns exec %s busybox ping -c 1 -W 2 -I 10.20.1.9 %s >/dev/null 2>&1",
	        V.g[0].ns, V.g[1].ip), 0);
	{
		char *t = shout("ip netns exec %s socat -T2 - TCP:%s:80,bind=10.20.1.9,"
		                "connect-timeout=2 </dev/null 2>/dev/null", V.g[0].ns, V.g[1].ip);
		assert_null(strstr(t, "g2"));
		free(t);
	}
	/* ARP claiming another's address */
	assert_int_equal(shf("ip netns exec %s ip addr del 10.20.1.9/24 dev eth0", V.g[0].ns), 0);
}

static void test_vpc_security_group(void **state)
{
	static const struct nb_sg_rule web80[] = {{"tcp", 80, 80, anyone, 1}};
	static const struct nb_sg_rule web81[] = {{"tcp", 81, 90, anyone, 1}};
	static const struct nb_sg_rule def_in[] = {{"-1", -1, -1, members0, 2}};
	(void)state;

	/* g2 in a new group with no ingress: port 80 is shut, ping too */
	rules_vpc0(NULL, 0, NULL);
	assert_false(reaches(V.g[0].ns, V.g[1].ip, "g2"));
	assert_false(pings(V.g[0].ns, V.g[1].ip));
	/* egress stays: g2 still reaches g1 (and the answer comes back) */
	assert_true(reaches(V.g[1].ns, V.g[0].ip, "g1"));
	/* another port: still shut; port 80 allowed: open */
	rules_vpc0(web81, 1, NULL);
	assert_false(reaches(V.g[0].ns, V.g[1].ip, "g2"));
	rules_vpc0(web80, 1, NULL);
	assert_true(reaches(V.g[0].ns, V.g[1].ip, "g2 10.20.1.4"));
	assert_false(pings(V.g[0].ns, V.g[1].ip)); /* tcp 80 only */
	/* revoked: shut again */
	rules_vpc0(NULL, 0, NULL);
	assert_false(reaches(V.g[0].ns, V.g[1].ip, "g2"));
	rules_vpc0(def_in, 1, NULL);
	assert_true(reaches(V.g[0].ns, V.g[1].ip, "g2"));
	/* bad rules are refused and leave the table as it was */
	{
		static const struct nb_sg_rule bad[] = {{"gre", -1, -1, anyone, 1}};
		struct nb_vpc_port p = {V.g[1].tap, V.g[1].mac, V.g[1].ip, NULL, bad, 1, NULL, 0};
		char err[256];
		assert_int_equal(nb_net_vpc_rules(V.ns[0], &p, 1, err, sizeof(err)), -EINVAL);
		assert_true(reaches(V.g[0].ns, V.g[1].ip, "g2"));
	}
}

static void test_vpc_eip(void **state)
{
	static const struct nb_sg_rule web80[] = {{"tcp", 80, 80, anyone, 1}};
	struct nb_host_eip e = {EIP, 1};
	char err[512] = "";
	(void)state;

	rules_vpc0(web80, 1, EIP);
	if (nb_net_host_sync(&e, 1, err, sizeof(err)) != 0)
		fail_msg("host_sync: %s", err);
	/* from the host namespace to the EIP: g2 answers */
	{
		char *t = shout("socat -T2 - TCP:" EIP ":80,connect-timeout=2 </dev/null 2>/dev/null");
		if (!strstr(t, "g2 100.64.0.2"))
			fail_msg("the EIP did not reach g2: \"%s\"", t);
		free(t);
	}
	/* an outside network behind the host: g2's traffic leaves as the
	 * EIP, g1's behind the host's address */
	assert_int_equal(shf("ip netns add %s && ip link add nbtout0 type veth peer name eth0 "
	                     "netns %s && ip addr add 192.0.2.1/24 dev nbtout0 && ip link set "
	                     "nbtout0 up && ip netns exec %s sh -c 'ip link set lo up; ip link set "
	                     "eth0 up; ip addr add 192.0.2.2/24 dev eth0; ip route add default via "
	                     "192.0.2.1'", V.outside, V.outside, V.outside), 0);
	serve(V.outside, "out");
	assert_true(reaches(V.g[1].ns, "192.0.2.2", "out " EIP));
	assert_true(reaches(V.g[0].ns, "192.0.2.2", "out 192.0.2.1"));
	/* the other VPC reaches the EIP (the public path) but not the host's
	 * transit address of VPC 1 */
	{
		static const struct nb_sg_rule def_in1[] = {{"-1", -1, -1, members1, 1}};
		static const struct nb_sg_rule def_out[] = {{"-1", -1, -1, anyone, 1}};
		struct nb_vpc_port p1 = {V.g[2].tap, V.g[2].mac, V.g[2].ip, NULL, def_in1, 1, def_out, 1};
		apply(1, &p1, 1);
		assert_true(reaches(V.g[2].ns, EIP, "g2"));
	}
	/* disassociated: the route and the NAT go */
	rules_vpc0(web80, 1, NULL);
	assert_int_equal(nb_net_host_sync(NULL, 0, err, sizeof(err)), 0);
	{
		char *t = shout("ip -o route show proto 213");
		assert_string_equal(t, "");
		free(t);
	}
	assert_false(reaches(V.g[2].ns, EIP, "g2"));
	assert_true(reaches(V.g[1].ns, "192.0.2.2", "out 192.0.2.1"));
}

static void test_vpc_tap(void **state)
{
	char err[512] = "", tap[16];
	int fd = -1, fd2 = -1;
	(void)state;

	nb_net_tap_name("i-0123456789abcdef0", tap);
	if (nb_net_vpc_tap_open(V.ns[0], tap, &fd, err, sizeof(err)) != 0)
		fail_msg("tap_open: %s", err);
	assert_true(fd > 2);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_false(link_exists(tap)); /* not in the host's namespace */
	assert_true(nb_net_vpc_tap_exists(V.ns[0], tap));
	{
		/* opened: down and on no bridge until attached */
		char *t = shout("ip netns exec %s ip -d link show dev %s", V.ns[0], tap);
		assert_null(strstr(t, "master nbbr"));
		assert_null(strstr(t, ",UP"));
		free(t);
	}
	{
		/* a tap whose MAC is lower than the bridge's: the gateway's MAC,
		 * which the guests have in their ARP caches, does not move when
		 * it joins (nor when it goes, below) */
		char *t = shout("ip netns exec %s ip link set dev %s address 02:00:00:00:00:01",
		                V.ns[0], tap);
		free(t);
	}
	char gwmac[18], gwwant[40];
	nb_net_bridge_mac(V.ns[0], gwmac);
	snprintf(gwwant, sizeof(gwwant), "link/ether %s ", gwmac);
	if (nb_net_vpc_tap_attach(V.ns[0], tap, 100, err, sizeof(err)) != 0)
		fail_msg("tap_attach: %s", err);
	{
		char *t = shout("ip netns exec %s ip link show dev nbbr", V.ns[0]);
		assert_non_null(strstr(t, gwwant));
		free(t);
	}
	assert_int_equal(nb_net_vpc_tap_attach(V.ns[0], tap, 1u << 30, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "rate"));
	{
		char *t = shout("ip netns exec %s ip -d link show dev %s; "
		                "ip netns exec %s tc qdisc show dev %s", V.ns[0], tap, V.ns[0], tap);
		assert_non_null(strstr(t, "master nbbr"));
		assert_non_null(strstr(t, "persist on"));
		assert_non_null(strstr(t, "vnet_hdr on"));
		assert_non_null(strstr(t, "rate 100Mbit"));
		free(t);
	}
	/* persistent: closed and opened again (a restart) */
	close(fd);
	assert_true(nb_net_vpc_tap_exists(V.ns[0], tap));
	if (nb_net_vpc_tap_open(V.ns[0], tap, &fd2, err, sizeof(err)) != 0)
		fail_msg("tap_open again: %s", err);
	close(fd2);
	assert_int_equal(nb_net_vpc_tap_delete(V.ns[0], tap), 0);
	assert_false(nb_net_vpc_tap_exists(V.ns[0], tap));
	{
		char *t = shout("ip netns exec %s ip link show dev nbbr", V.ns[0]);
		assert_non_null(strstr(t, gwwant));
		free(t);
	}
	assert_int_equal(nb_net_vpc_tap_delete(V.ns[0], tap), 0);
}

static void test_vpc_teardown(void **state)
{
	char prefix[NB_NET_NS_NAME_MAX], names[8][NB_NET_NS_NAME_MAX];
	int pid[2];
	(void)state;

	nb_net_vpc_ns_prefix(V.state, prefix);
	assert_int_equal(nb_net_vpc_list(prefix, names, 8), 2);
	for (int i = 0; i < 2; i++) {
		pid[i] = nb_net_dnsmasq_pid(V.dir[i]);
		assert_true(pid[i] > 0);
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(nb_net_vpc_delete(V.ns[i], V.dir[i]), 0);
	assert_int_equal(nb_net_host_teardown(), 0);
	for (int i = 0; i < 2; i++) {
		assert_true(wait_gone(pid[i], 5000));
		assert_false(nb_net_ns_exists(V.ns[i]));
		assert_false(nb_path_exists(V.dir[i]));
	}
	assert_int_equal(nb_net_vpc_list(prefix, names, 8), 0);
	{
		char *t = shout("ip netns list | grep %s; nft list tables; ip -o link | grep nbx",
		                prefix);
		assert_string_equal(t, "");
		free(t);
	}
}

int main(void)
{
	const struct CMUnitTest pure[] = {
	    cmocka_unit_test(test_tap_name),
	    cmocka_unit_test(test_mac),
	    cmocka_unit_test(test_cidr_parse),
	    cmocka_unit_test(test_pool),
	    cmocka_unit_test(test_refuses_foreign_names),
	};
	/* In order: each builds on the previous one. */
	const struct CMUnitTest real[] = {
	    cmocka_unit_test(test_bridge),           cmocka_unit_test(test_tap),
	    cmocka_unit_test(test_dnsmasq_and_dhcp), cmocka_unit_test(test_not_a_bridge),
	    cmocka_unit_test(test_teardown),
	};
	int r = cmocka_run_group_tests_name("net pure", pure, NULL, NULL);

	const struct CMUnitTest vpc[] = {
	    cmocka_unit_test(test_vpc_ensure),    cmocka_unit_test(test_vpc_dhcp),
	    cmocka_unit_test(test_vpc_isolation), cmocka_unit_test(test_vpc_antispoof),
	    cmocka_unit_test(test_vpc_security_group), cmocka_unit_test(test_vpc_eip),
	    cmocka_unit_test(test_vpc_tap),       cmocka_unit_test(test_vpc_teardown),
	};

	r += cmocka_run_group_tests_name("net in a namespace", real, ns_setup, ns_teardown);
	return r + cmocka_run_group_tests_name("tenant networks", vpc, vpc_setup, vpc_teardown);
}
