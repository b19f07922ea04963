/* Pure parts of host networking (names, MACs, address pools) and the
 * command runner the other files share. */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/util.h"
#include "net/net.h"
#include "net/net_internal.h"

#define MIN_PREFIX 8
#define MAX_PREFIX 30 /* a /30 still has the gateway and one guest */
#define CIDR_MAX_LEN 18
#define RUN_OUTPUT_MAX 4096

void nb_net_tap_name(const char *instance_id, char out[16])
{
	char hash[65];
	const char *hex;

	/* An instance id's own digits make the tap easy to match by eye; any
	 * other string is hashed, so the name is always "nb" + 13 hex. */
	if (instance_id && nb_id_valid("i", instance_id)) {
		hex = instance_id + 2;
	} else {
		nb_sha256_hex(instance_id ? instance_id : "", instance_id ? strlen(instance_id) : 0,
		              hash);
		hex = hash;
	}
	memcpy(out, "nb", 2);
	memcpy(out + 2, hex, 13);
	out[15] = '\0';
}

void nb_net_mac(const char *instance_id, char out[18])
{
	char hash[65];
	const char *id = instance_id ? instance_id : "";

	/* 52:54:00 is QEMU's prefix; 0x52 has the locally administered bit set
	 * and the multicast bit clear. The rest is the id's hash: stable across
	 * restarts and hosts. */
	nb_sha256_hex(id, strlen(id), hash);
	snprintf(out, 18, "52:54:00:%.2s:%.2s:%.2s", hash, hash + 2, hash + 4);
}

void nb_net_bridge_mac(const char *seed, char out[18])
{
	char hash[65];
	const char *s = seed ? seed : "";

	/* 0x02: locally administered, unicast; not QEMU's 52:54:00 */
	nb_sha256_hex(s, strlen(s), hash);
	snprintf(out, 18, "02:6e:62:%.2s:%.2s:%.2s", hash, hash + 2, hash + 4);
}

int nb_net_cidr_parts(const char *cidr, uint32_t *network, int *prefix, char netmask[16])
{
	char addr[CIDR_MAX_LEN + 1];
	const char *slash;
	struct in_addr in;
	uint64_t p = 0;
	uint32_t mask, net;
	size_t alen;

	if (!cidr || strlen(cidr) > CIDR_MAX_LEN)
		return -EINVAL;
	slash = strchr(cidr, '/');
	if (!slash)
		return -EINVAL;
	alen = (size_t)(slash - cidr);
	memcpy(addr, cidr, alen);
	addr[alen] = '\0';
	/* inet_pton takes only the full dotted quad, no leading zeros. */
	if (inet_pton(AF_INET, addr, &in) != 1)
		return -EINVAL;
	if (strlen(slash + 1) > 2 || nb_parse_u64(slash + 1, &p) < 0)
		return -EINVAL;
	if (p < MIN_PREFIX || p > MAX_PREFIX)
		return -EINVAL;
	mask = 0xffffffffu << (32 - p);
	net = ntohl(in.s_addr);
	if (net & ~mask)
		return -EINVAL; /* host bits set: "10.0.0.5/24" */
	if (network)
		*network = net;
	if (prefix)
		*prefix = (int)p;
	if (netmask)
		nb_net_fmt_addr(mask, netmask);
	return 0;
}

int nb_net_cidr_parse(const char *cidr, uint32_t *network, int *prefix)
{
	return nb_net_cidr_parts(cidr, network, prefix, NULL);
}

void nb_net_fmt_addr(uint32_t addr, char out[16])
{
	snprintf(out, 16, "%u.%u.%u.%u", addr >> 24, (addr >> 16) & 0xff, (addr >> 8) & 0xff,
	         addr & 0xff);
}

int nb_net_pool_size(const char *cidr)
{
	uint32_t net;
	int prefix, r = nb_net_cidr_parse(cidr, &net, &prefix);

	if (r < 0)
		return r;
	/* Less the network, the gateway and the broadcast address. */
	return (int)((1u << (32 - prefix)) - 3);
}

int nb_net_pool_addr(const char *cidr, int n, char out[16])
{
	uint32_t net;
	int size = nb_net_pool_size(cidr);

	if (size < 0)
		return size;
	if (n < 0)
		return -EINVAL;
	if (n >= size)
		return -ERANGE;
	nb_net_cidr_parse(cidr, &net, NULL);
	nb_net_fmt_addr(net + 2 + (uint32_t)n, out);
	return 0;
}

int nb_net_gateway(const char *cidr, char out[16])
{
	uint32_t net;
	int r = nb_net_cidr_parse(cidr, &net, NULL);

	if (r < 0)
		return r;
	nb_net_fmt_addr(net + 1, out);
	return 0;
}

bool nb_net_ifname_valid(const char *name)
{
	size_t n;

	if (!name || !nb_str_has_prefix(name, "nb"))
		return false;
	n = strlen(name);
	if (n < 3 || n >= IF_NAMESIZE)
		return false;
	for (const char *p = name; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

bool nb_net_link_exists(const char *name)
{
	/* if_nametoindex asks the current network namespace (sysfs may show
	 * another one). */
	return if_nametoindex(name) != 0;
}

void nb_net_errf(char *err, size_t errsz, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errsz)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errsz, fmt, ap);
	va_end(ap);
}

/* ip, nft, tc and dnsmasq live in sbin, which a service's PATH may lack. */
static const char *tool_path(const char *name, char *buf, size_t bufsz)
{
	static const char *const dirs[] = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};

	if (strchr(name, '/'))
		return name;
	for (size_t i = 0; i < NB_ARRAY_SIZE(dirs); i++) {
		int n = snprintf(buf, bufsz, "%s/%s", dirs[i], name);
		if (n > 0 && (size_t)n < bufsz && access(buf, X_OK) == 0)
			return buf;
	}
	return name;
}

static int run_with(const char *const argv[], struct nb_buf *out)
{
	const char *args[32];
	char path[256];
	size_t n = 0;

	while (argv[n]) {
		if (n + 1 >= NB_ARRAY_SIZE(args))
			return -E2BIG;
		args[n] = argv[n];
		n++;
	}
	args[n] = NULL;
	if (n == 0)
		return -EINVAL;
	args[0] = tool_path(argv[0], path, sizeof(path));
	return nb_run(args, NB_NET_CMD_TIMEOUT_MS, out);
}

int nb_net_output(const char *const argv[], struct nb_buf *out)
{
	return run_with(argv, out);
}

int nb_net_status(const char *const argv[])
{
	return run_with(argv, NULL);
}

int nb_net_run(const char *const argv[], char *err, size_t errsz)
{
	struct nb_buf out, cmd;
	int r;

	nb_buf_init(&out, RUN_OUTPUT_MAX);
	r = run_with(argv, &out);
	if (r == 0) {
		nb_buf_free(&out);
		return 0;
	}
	nb_buf_init(&cmd, 1024);
	for (size_t i = 0; argv[i]; i++)
		if (nb_buf_printf(&cmd, "%s%s", i ? " " : "", argv[i]) < 0)
			break;
	while (out.len && (out.data[out.len - 1] == '\n' || out.data[out.len - 1] == ' '))
		out.data[--out.len] = '\0';
	for (size_t i = 0; i < out.len; i++)
		if (out.data[i] == '\n')
			out.data[i] = ' ';
	if (r == -ETIMEDOUT)
		nb_net_errf(err, errsz, "%s: timed out", cmd.data ? cmd.data : argv[0]);
	else if (r < 0)
		nb_net_errf(err, errsz, "%s: %s", cmd.data ? cmd.data : argv[0], strerror(-r));
	else
		nb_net_errf(err, errsz, "%s: exit %d: %s", cmd.data ? cmd.data : argv[0], r,
		            out.data ? out.data : "");
	nb_buf_free(&out);
	nb_buf_free(&cmd);
	if (r == 127)
		return -ENOENT; /* nb_run's child could not exec it */
	return r < 0 ? r : -EIO;
}
