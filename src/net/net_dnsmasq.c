/* dnsmasq as the bridge's DHCP server: fixed leases only, no DNS. Its
 * whole configuration is a file of ours under dir (dnsmasq.conf), so a
 * system-wide /etc/dnsmasq.conf never leaks in and an operator can read
 * what runs. dnsmasq keeps running as root ("user=root"): it re-reads
 * dir/dhcp-hosts on SIGHUP, and dir lives in the agent's private state dir
 * (0700 parents) where "nobody" could not read it. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/util.h"
#include "net/net.h"
#include "net/net_internal.h"

#define HOSTS_MAX 4096
#define HOSTNAME_MAX 63
#define STOP_WAIT_MS 5000
#define LEASE_TIME "1h"

static const char *const our_files[] = {"dnsmasq.conf", "dnsmasq.pid", "dnsmasq.leases",
                                        "dhcp-hosts", "dnsmasq.log"};

static int path_in(const char *dir, const char *name, char *out, size_t outsz)
{
	int n = snprintf(out, outsz, "%s/%s", dir, name);

	return n < 0 || (size_t)n >= outsz ? -ENAMETOOLONG : 0;
}

static bool dir_valid(const char *dir)
{
	/* Absolute (dnsmasq resolves paths itself) and safe on a conf line. */
	return dir && dir[0] == '/' && strlen(dir) < PATH_MAX - 32 && !strpbrk(dir, "\n\r");
}

/* True when pid is a live dnsmasq started with our configuration file. */
static bool is_our_dnsmasq(pid_t pid, const char *conf_arg)
{
	char path[64], *stat = NULL, *cmd = NULL, *paren;
	size_t len = 0;
	bool ok = false;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (nb_read_file(path, 4096, &stat, NULL) < 0)
		return false;
	paren = strrchr(stat, ')');
	if (!paren || paren[1] != ' ' || paren[2] == 'Z' || paren[2] == 'X' ||
	    !strstr(stat, " (dnsmasq) "))
		goto out;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	if (nb_read_file(path, 1 << 16, &cmd, &len) < 0)
		goto out;
	for (size_t off = 0; off < len; off += strlen(cmd + off) + 1)
		if (!strcmp(cmd + off, conf_arg))
			ok = true;
out:
	free(stat);
	free(cmd);
	return ok;
}

static int conf_arg(const char *dir, char *out, size_t outsz)
{
	int n = snprintf(out, outsz, "--conf-file=%s/dnsmasq.conf", dir);

	return n < 0 || (size_t)n >= outsz ? -ENAMETOOLONG : 0;
}

int nb_net_dnsmasq_pid(const char *dir)
{
	char path[PATH_MAX], arg[PATH_MAX + 16], *data = NULL;
	uint64_t pid = 0;
	int r;

	if (!dir_valid(dir))
		return -EINVAL;
	r = path_in(dir, "dnsmasq.pid", path, sizeof(path));
	if (r == 0)
		r = conf_arg(dir, arg, sizeof(arg));
	if (r < 0)
		return r;
	r = nb_read_file(path, 64, &data, NULL);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	data[strcspn(data, "\n")] = '\0';
	r = 0;
	if (nb_parse_u64(data, &pid) == 0 && pid > 1 && pid < INT_MAX &&
	    is_our_dnsmasq((pid_t)pid, arg))
		r = (int)pid;
	free(data);
	return r;
}

static int build_conf(const char *dir, const char *bridge, const char *const *cidrs, size_t n,
                      struct nb_buf *b)
{
	int r;

	r = nb_buf_printf(b,
	                  "# written by nubo: DHCP with fixed leases on %s, no DNS\n"
	                  "interface=%s\n"
	                  "bind-interfaces\n"
	                  "except-interface=lo\n"
	                  "user=root\n"
	                  "port=0\n"
	                  "pid-file=%s/dnsmasq.pid\n",
	                  bridge, bridge, dir);
	/* One range per subnet; the router option each client gets is the
	 * bridge's own address in its subnet (dnsmasq's default). */
	for (size_t i = 0; i < n && r == 0; i++) {
		char mask[16], netaddr[16];
		uint32_t net;
		int prefix;
		if (nb_net_cidr_parts(cidrs[i], &net, &prefix, mask) < 0)
			return -EINVAL;
		nb_net_fmt_addr(net, netaddr);
		r = nb_buf_printf(b, "dhcp-range=%s,static,%s,%s\n", netaddr, mask, LEASE_TIME);
	}
	if (r == 0)
		r = nb_buf_printf(b,
		                  "dhcp-hostsfile=%s/dhcp-hosts\n"
		                  "dhcp-leasefile=%s/dnsmasq.leases\n"
		                  "dhcp-authoritative\n"
		                  "log-facility=%s/dnsmasq.log\n",
		                  dir, dir, dir);
	return r < 0 ? -ENAMETOOLONG : 0;
}

/* Waits up to ms for pid (not our child) to exit. */
static bool wait_exit(pid_t pid, int ms)
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

int nb_net_dnsmasq_stop(const char *dir)
{
	char path[PATH_MAX];
	int pid = nb_net_dnsmasq_pid(dir);

	if (pid < 0)
		return pid;
	if (pid > 0) {
		kill(pid, SIGTERM);
		if (!wait_exit(pid, STOP_WAIT_MS)) {
			kill(pid, SIGKILL);
			if (!wait_exit(pid, STOP_WAIT_MS))
				return -ETIMEDOUT;
		}
	}
	if (path_in(dir, "dnsmasq.pid", path, sizeof(path)) == 0)
		unlink(path);
	return 0;
}

int nb_net_dnsmasq_forget(const char *dir)
{
	char path[PATH_MAX];
	int r = 0;

	if (!dir_valid(dir))
		return -EINVAL;
	for (size_t i = 0; i < NB_ARRAY_SIZE(our_files); i++) {
		if (path_in(dir, our_files[i], path, sizeof(path)) < 0)
			return -ENAMETOOLONG;
		if (unlink(path) < 0 && errno != ENOENT && r == 0)
			r = -errno;
	}
	return r;
}

int nb_net_dnsmasq_ensure(const char *dir, const char *bridge, const char *cidr, char *err,
                          size_t errsz)
{
	return nb_net_dnsmasq_ensure_ranges(dir, bridge, &cidr, 1, err, errsz);
}

int nb_net_dnsmasq_ensure_ranges(const char *dir, const char *bridge, const char *const *cidrs,
                                 size_t ncidrs, char *err, size_t errsz)
{
	char conf[PATH_MAX], hosts[PATH_MAX], arg[PATH_MAX + 16], *old = NULL;
	struct nb_buf text;
	int pid, r;

	if (!dir_valid(dir)) {
		nb_net_errf(err, errsz, "dnsmasq dir must be an absolute path");
		return -EINVAL;
	}
	if (!nb_net_ifname_valid(bridge)) {
		nb_net_errf(err, errsz, "bad bridge name \"%s\"", bridge ? bridge : "");
		return -EINVAL;
	}
	if (!cidrs || ncidrs == 0 || ncidrs > NB_NET_MAX_RANGES) {
		nb_net_errf(err, errsz, "dnsmasq needs 1 to %d ranges", NB_NET_MAX_RANGES);
		return -EINVAL;
	}
	for (size_t i = 0; i < ncidrs; i++)
		if (nb_net_cidr_parse(cidrs[i], NULL, NULL) < 0) {
			nb_net_errf(err, errsz, "bad cidr \"%s\"", cidrs[i] ? cidrs[i] : "");
			return -EINVAL;
		}
	if (!nb_net_link_exists(bridge)) {
		nb_net_errf(err, errsz, "bridge %s does not exist", bridge);
		return -ENOENT;
	}
	r = path_in(dir, "dnsmasq.conf", conf, sizeof(conf));
	if (r == 0)
		r = path_in(dir, "dhcp-hosts", hosts, sizeof(hosts));
	if (r == 0)
		r = conf_arg(dir, arg, sizeof(arg));
	if (r < 0) {
		nb_net_errf(err, errsz, "%s: path too long", dir);
		return r;
	}
	r = nb_mkdir_p(dir, 0755);
	if (r < 0) {
		nb_net_errf(err, errsz, "mkdir %s: %s", dir, strerror(-r));
		return r;
	}
	nb_buf_init(&text, 8192);
	r = build_conf(dir, bridge, cidrs, ncidrs, &text);
	if (r < 0) {
		nb_net_errf(err, errsz, "dnsmasq.conf: %s", strerror(-r));
		goto out;
	}
	if (!nb_path_exists(hosts)) {
		r = nb_write_file(hosts, "", 0, 0644);
		if (r < 0) {
			nb_net_errf(err, errsz, "%s: %s", hosts, strerror(-r));
			goto out;
		}
	}
	pid = nb_net_dnsmasq_pid(dir);
	if (pid > 0) {
		/* Running with this very configuration: keep it. */
		if (nb_read_file(conf, 1 << 16, &old, NULL) == 0 && !strcmp(old, text.data)) {
			r = 0;
			goto out;
		}
		r = nb_net_dnsmasq_stop(dir);
		if (r < 0) {
			nb_net_errf(err, errsz, "stopping dnsmasq %d: %s", pid, strerror(-r));
			goto out;
		}
	}
	r = nb_write_file(conf, text.data, text.len, 0644);
	if (r < 0) {
		nb_net_errf(err, errsz, "%s: %s", conf, strerror(-r));
		goto out;
	}
	{
		/* dnsmasq forks and its first process exits once the daemon is
		 * up (pid file written) or has failed. */
		const char *argv[] = {"dnsmasq", arg, NULL};
		r = nb_net_run(argv, err, errsz);
		if (r < 0)
			goto out;
	}
	if (nb_net_dnsmasq_pid(dir) <= 0) {
		nb_net_errf(err, errsz, "dnsmasq started but %s/dnsmasq.pid names no live dnsmasq",
		            dir);
		r = -ESRCH;
	}
out:
	free(old);
	nb_buf_free(&text);
	return r;
}

static bool mac_valid(const char *mac)
{
	if (!mac || strlen(mac) != 17)
		return false;
	for (int i = 0; i < 17; i++) {
		if (i % 3 == 2) {
			if (mac[i] != ':')
				return false;
		} else if (!isxdigit((unsigned char)mac[i])) {
			return false;
		}
	}
	return true;
}

static bool hostname_valid(const char *h)
{
	size_t n = strlen(h);

	if (n == 0 || n > HOSTNAME_MAX || h[0] == '-' || h[n - 1] == '-')
		return false;
	for (const char *p = h; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-')
			return false;
	return true;
}

int nb_net_dhcp_hosts(const char *dir, const struct nb_dhcp_host *hosts, size_t n)
{
	char path[PATH_MAX];
	struct nb_buf b;
	int pid, r;

	if (!dir_valid(dir) || (n && !hosts) || n > HOSTS_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		struct in_addr in;
		if (!mac_valid(hosts[i].mac) || !hosts[i].ip ||
		    inet_pton(AF_INET, hosts[i].ip, &in) != 1 ||
		    (hosts[i].hostname && !hostname_valid(hosts[i].hostname)))
			return -EINVAL;
	}
	r = path_in(dir, "dhcp-hosts", path, sizeof(path));
	if (r < 0)
		return r;
	r = nb_mkdir_p(dir, 0755);
	if (r < 0)
		return r;
	nb_buf_init(&b, (size_t)HOSTS_MAX * 128);
	for (size_t i = 0; i < n && r == 0; i++)
		r = nb_buf_printf(&b, "%s,%s%s%s\n", hosts[i].mac, hosts[i].ip,
		                  hosts[i].hostname ? "," : "",
		                  hosts[i].hostname ? hosts[i].hostname : "");
	if (r == 0)
		r = nb_write_file(path, b.data ? b.data : "", b.len, 0644);
	nb_buf_free(&b);
	if (r < 0)
		return r;
	pid = nb_net_dnsmasq_pid(dir);
	if (pid > 0 && kill(pid, SIGHUP) < 0)
		return -errno;
	return 0;
}

/* DHCP wire format, as far as a DHCPRELEASE needs it (RFC 2131, 2132). */
#define DHCP_SERVER_PORT 67
#define DHCP_MAGIC 0x63825363u
#define DHCP_OPT_MSGTYPE 53
#define DHCP_OPT_SERVER_ID 54
#define DHCP_OPT_END 255
#define DHCP_RELEASE 7

struct dhcp_msg {
	uint8_t op, htype, hlen, hops;
	uint32_t xid;
	uint16_t secs, flags;
	uint32_t ciaddr, yiaddr, siaddr, giaddr;
	uint8_t chaddr[16];
	uint8_t sname[64];
	uint8_t file[128];
	uint32_t magic;
	uint8_t options[16];
};

static int mac_parse(const char *mac, uint8_t out[6])
{
	unsigned v[6];

	if (!mac_valid(mac) || sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x", &v[0], &v[1], &v[2], &v[3],
	                              &v[4], &v[5]) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		out[i] = (uint8_t)v[i];
	return 0;
}

int nb_net_dhcp_release(const char *bridge, const char *server, const char *ip, const char *mac)
{
	struct dhcp_msg m = {0};
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(DHCP_SERVER_PORT)};
	struct in_addr client;
	int fd, r = 0;

	if (!nb_net_ifname_valid(bridge) || !server || !ip ||
	    inet_pton(AF_INET, server, &to.sin_addr) != 1 || inet_pton(AF_INET, ip, &client) != 1 ||
	    mac_parse(mac, m.chaddr) < 0)
		return -EINVAL;
	m.op = 1; /* BOOTREQUEST */
	m.htype = 1;
	m.hlen = 6;
	nb_random_bytes(&m.xid, sizeof(m.xid));
	m.ciaddr = client.s_addr;
	m.magic = htonl(DHCP_MAGIC);
	m.options[0] = DHCP_OPT_MSGTYPE;
	m.options[1] = 1;
	m.options[2] = DHCP_RELEASE;
	m.options[3] = DHCP_OPT_SERVER_ID;
	m.options[4] = 4;
	memcpy(&m.options[5], &to.sin_addr, 4);
	m.options[9] = DHCP_OPT_END;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Bound to the bridge, so dnsmasq sees the release arrive on the
	 * interface it serves, as dnsmasq's own dhcp_release tool sends it. */
	if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, bridge, (socklen_t)strlen(bridge) + 1) < 0 ||
	    sendto(fd, &m, sizeof(m), 0, (struct sockaddr *)&to, sizeof(to)) != (ssize_t)sizeof(m))
		r = -errno;
	close(fd);
	return r;
}

int nb_net_dhcp_prune(const char *dir, const char *bridge, const char *server,
                      const struct nb_dhcp_host *hosts, size_t n)
{
	return nb_net_dhcp_prune_in(dir, bridge, server, NULL, hosts, n);
}

int nb_net_dhcp_prune_in(const char *dir, const char *bridge, const char *server,
                         const char *cidr, const struct nb_dhcp_host *hosts, size_t n)
{
	uint32_t net = 0;
	int prefix = 0;

	char path[PATH_MAX], *text = NULL, *line, *save = NULL;
	int r, released = 0;

	if (!dir_valid(dir) || (n && !hosts) || (cidr && nb_net_cidr_parse(cidr, &net, &prefix) < 0))
		return -EINVAL;
	r = path_in(dir, "dnsmasq.leases", path, sizeof(path));
	if (r < 0)
		return r;
	r = nb_read_file(path, 4 << 20, &text, NULL);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	/* "expiry mac ip hostname client-id" per lease */
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char mac[32], ip[32];
		bool wanted = false;
		struct in_addr in;
		if (sscanf(line, "%*s %31s %31s", mac, ip) != 2 || !mac_valid(mac) ||
		    inet_pton(AF_INET, ip, &in) != 1)
			continue;
		if (cidr && (ntohl(in.s_addr) & (0xffffffffu << (32 - prefix))) != net)
			continue; /* another subnet's, released to its own gateway */
		for (size_t i = 0; i < n && !wanted; i++)
			wanted = !strcasecmp(hosts[i].mac, mac) && !strcmp(hosts[i].ip, ip);
		if (wanted)
			continue;
		r = nb_net_dhcp_release(bridge, server, ip, mac);
		if (r < 0)
			break;
		released++;
	}
	free(text);
	return r < 0 ? r : released;
}
