/* Writes empty qcow2 v3 overlays (see qcow2.h and QEMU's
 * docs/interop/qcow2.txt for the format). All fields are big-endian. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/disk/qcow2.h"

#define QCOW2_MAGIC 0x514649fbu
#define CLUSTER_BITS 16
#define CLUSTER_SIZE (1u << CLUSTER_BITS)
#define HEADER_LEN 104u          /* the version 3 header without extensions */
#define EXT_BACKING_FMT 0xe2792acau
#define BACKING_MAX 1023u        /* QEMU's limit on a backing file name */
#define FMT_MAX 16u
#define SIZE_MAX_BYTES (64ull << 40)
/* an L2 table of one cluster maps CLUSTER_SIZE / 8 clusters */
#define L1_ENTRY_SPAN ((uint64_t)CLUSTER_SIZE * (CLUSTER_SIZE / 8))

static void put32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int nb_qcow2_overlay_create(const char *path, const char *backing, const char *backing_fmt,
                            uint64_t size)
{
	size_t blen = backing ? strlen(backing) : 0, flen = backing_fmt ? strlen(backing_fmt) : 0;
	uint64_t l1_size, l1_clusters, clusters;
	uint8_t *c;
	size_t off;
	int fd, r;

	if (!path || !blen || backing[0] != '/' || blen > BACKING_MAX || !flen || flen > FMT_MAX ||
	    !size || size % 512 || size > SIZE_MAX_BYTES)
		return -EINVAL;
	l1_size = (size + L1_ENTRY_SPAN - 1) / L1_ENTRY_SPAN;
	l1_clusters = (l1_size * 8 + CLUSTER_SIZE - 1) / CLUSTER_SIZE;
	/* header, refcount table, refcount block, L1 */
	clusters = 3 + l1_clusters;
	c = calloc(1, CLUSTER_SIZE);
	if (!c)
		return -ENOMEM;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		free(c);
		return r;
	}

	/* cluster 0: header, the backing format extension, the end marker,
	 * then the backing file's name */
	put32(c + 0, QCOW2_MAGIC);
	put32(c + 4, 3);
	put32(c + 20, CLUSTER_BITS);
	put64(c + 24, size);
	put32(c + 32, 0); /* no encryption */
	put32(c + 36, (uint32_t)l1_size);
	put64(c + 40, 3ull * CLUSTER_SIZE);
	put64(c + 48, 1ull * CLUSTER_SIZE);
	put32(c + 56, 1);
	put32(c + 96, 4); /* 16-bit refcounts */
	put32(c + 100, HEADER_LEN);
	off = HEADER_LEN;
	put32(c + off, EXT_BACKING_FMT);
	put32(c + off + 4, (uint32_t)flen);
	memcpy(c + off + 8, backing_fmt, flen);
	off += 8 + ((flen + 7) & ~(size_t)7);
	off += 8; /* end of extensions: type 0, length 0 */
	put64(c + 8, off);
	put32(c + 16, (uint32_t)blen);
	memcpy(c + off, backing, blen);
	r = write_all(fd, c, CLUSTER_SIZE, 0);

	/* cluster 1: the refcount table, pointing at the block in cluster 2 */
	if (r == 0) {
		memset(c, 0, CLUSTER_SIZE);
		put64(c, 2ull * CLUSTER_SIZE);
		r = write_all(fd, c, CLUSTER_SIZE, CLUSTER_SIZE);
	}
	/* cluster 2: one reference to each cluster the image uses */
	if (r == 0) {
		memset(c, 0, CLUSTER_SIZE);
		for (uint64_t i = 0; i < clusters; i++) {
			c[2 * i] = 0;
			c[2 * i + 1] = 1;
		}
		r = write_all(fd, c, CLUSTER_SIZE, 2 * (off_t)CLUSTER_SIZE);
	}
	/* clusters 3..: an empty L1 table; nothing allocated, so every read
	 * falls through to the backing file */
	if (r == 0 && ftruncate(fd, (off_t)(clusters * CLUSTER_SIZE)) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		unlink(path);
	free(c);
	return r;
}
