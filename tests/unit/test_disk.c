/* qcow2 overlays written by nubo, checked by the real qemu-img and qemu-io:
 * the image is consistent, reads fall through to the base, writes stay in
 * the overlay, and it is what `qemu-img create -b` makes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "agent/disk/qcow2.h"
#include "common/buf.h"
#include "common/util.h"

static char g_dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(g_dir, sizeof(g_dir), "/tmp/nb-test-disk-XXXXXX");
	return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return nb_rm_rf(g_dir);
}

static void path_of(const char *name, char *out, size_t n)
{
	snprintf(out, n, "%s/%s", g_dir, name);
}

/* Runs argv; fails the test unless it exits 0. Returns its output (caller frees). */
static char *run_ok(const char *const *argv)
{
	struct nb_buf out;
	int r;

	nb_buf_init(&out, 1 << 20);
	r = nb_run((const char **)argv, 60000, &out);
	if (r != 0)
		fail_msg("%s %s failed (%d): %s", argv[0], argv[1], r, out.data ? out.data : "");
	char *s = strdup(out.data ? out.data : "");
	nb_buf_free(&out);
	return s;
}

static json_t *info(const char *path)
{
	const char *argv[] = {"qemu-img", "info", "--output=json", path, NULL};
	char *text = run_ok(argv);
	json_t *j = json_loads(text, 0, NULL);
	free(text);
	assert_non_null(j);
	return j;
}

static void test_overlay_reads_base_writes_stay(void **state)
{
	char base[128], disk[128], ref[128], pattern[64];
	(void)state;
	path_of("base.qcow2", base, sizeof(base));
	path_of("root.qcow2", disk, sizeof(disk));
	path_of("ref.qcow2", ref, sizeof(ref));
	{
		const char *mk[] = {"qemu-img", "create", "-q", "-f", "qcow2", base, "64M", NULL};
		const char *fill[] = {"qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", "-c",
		                      "write -P 0xcd 63M 1M", base, NULL};
		free(run_ok(mk));
		free(run_ok(fill));
	}
	assert_int_equal(nb_qcow2_overlay_create(disk, base, "qcow2", 3ull << 30), 0);
	{
		struct stat st;
		assert_int_equal(stat(disk, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);
	}

	/* qemu-img sees a clean qcow2 of the asked size over the base */
	{
		const char *check[] = {"qemu-img", "check", "-f", "qcow2", disk, NULL};
		free(run_ok(check));
		json_t *j = info(disk);
		assert_string_equal(json_string_value(json_object_get(j, "format")), "qcow2");
		assert_int_equal(json_integer_value(json_object_get(j, "virtual-size")), 3ll << 30);
		assert_string_equal(json_string_value(json_object_get(j, "backing-filename")), base);
		assert_string_equal(json_string_value(json_object_get(j, "backing-filename-format")),
		                    "qcow2");
		assert_int_equal(json_integer_value(json_object_get(j, "cluster-size")), 65536);
		json_decref(j);
	}
	/* the same guest-visible content as qemu-img's own overlay */
	{
		const char *mk[] = {"qemu-img", "create", "-q", "-f",  "qcow2", "-F",
		                    "qcow2",    "-b",     base, ref,   "3G",    NULL};
		const char *cmp[] = {"qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", disk, ref, NULL};
		free(run_ok(mk));
		free(run_ok(cmp));
	}
	/* reads fall through to the base */
	{
		const char *rd[] = {"qemu-io", "-f", "qcow2", "-c", "read -P 0xab 0 1M", "-c",
		                    "read -P 0xcd 63M 1M", "-c", "read -P 0 64M 1M", disk, NULL};
		char *out = run_ok(rd);
		assert_null(strstr(out, "Pattern verification failed"));
		free(out);
	}
	/* writes land in the overlay (it grows, and stays consistent); the base
	 * is never written */
	{
		struct stat before, after;
		assert_int_equal(stat(base, &before), 0);
		snprintf(pattern, sizeof(pattern), "write -P 0x5a 512K 2M");
		const char *wr[] = {"qemu-io", "-f", "qcow2", "-c", pattern, "-c",
		                    "write -P 0x77 2G 1M", disk, NULL};
		const char *rd[] = {"qemu-io", "-f", "qcow2", "-c", "read -P 0xab 0 512K", "-c",
		                    "read -P 0x5a 512K 2M", "-c", "read -P 0x77 2G 1M", disk, NULL};
		const char *rbase[] = {"qemu-io", "-f", "qcow2", "-c", "read -P 0xab 0 1M", base, NULL};
		const char *check[] = {"qemu-img", "check", "-f", "qcow2", disk, NULL};
		free(run_ok(wr));
		char *out = run_ok(rd);
		assert_null(strstr(out, "Pattern verification failed"));
		free(out);
		out = run_ok(rbase);
		assert_null(strstr(out, "Pattern verification failed"));
		free(out);
		free(run_ok(check));
		assert_int_equal(stat(base, &after), 0);
		assert_int_equal(before.st_size, after.st_size);
		assert_true(before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
		            before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
	}
	/* and it can be grown as a resize does */
	{
		const char *grow[] = {"qemu-img", "resize", "-q", disk, "5G", NULL};
		free(run_ok(grow));
		json_t *j = info(disk);
		assert_int_equal(json_integer_value(json_object_get(j, "virtual-size")), 5ll << 30);
		json_decref(j);
	}
	unlink(disk);
	unlink(ref);
	unlink(base);
}

static void test_large_and_raw_backing(void **state)
{
	char base[128], disk[128];
	(void)state;
	path_of("base.raw", base, sizeof(base));
	path_of("big.qcow2", disk, sizeof(disk));
	{
		const char *mk[] = {"qemu-img", "create", "-q", "-f", "raw", base, "1M", NULL};
		free(run_ok(mk));
	}
	/* 10 TiB: an L1 table of more than one entry per cluster's worth */
	assert_int_equal(nb_qcow2_overlay_create(disk, base, "raw", 10ull << 40), 0);
	{
		const char *check[] = {"qemu-img", "check", "-f", "qcow2", disk, NULL};
		free(run_ok(check));
		json_t *j = info(disk);
		assert_int_equal(json_integer_value(json_object_get(j, "virtual-size")), 10ll << 40);
		assert_string_equal(json_string_value(json_object_get(j, "backing-filename-format")),
		                    "raw");
		json_decref(j);
	}
	/* the overlay stays small whatever the size: three metadata clusters
	 * on disk, the L1 table sparse until written */
	struct stat st;
	assert_int_equal(stat(disk, &st), 0);
	assert_true((uint64_t)st.st_blocks * 512 <= 4 * 65536);
	unlink(disk);
	unlink(base);
}

static void test_bad_arguments_leave_nothing(void **state)
{
	char disk[128], longname[1100];
	(void)state;
	path_of("bad.qcow2", disk, sizeof(disk));
	assert_int_equal(nb_qcow2_overlay_create(disk, "relative.qcow2", "qcow2", 1 << 30), -EINVAL);
	assert_int_equal(nb_qcow2_overlay_create(disk, "/b.qcow2", "qcow2", 0), -EINVAL);
	assert_int_equal(nb_qcow2_overlay_create(disk, "/b.qcow2", "qcow2", 1000), -EINVAL);
	assert_int_equal(nb_qcow2_overlay_create(disk, "/b.qcow2", "", 1 << 30), -EINVAL);
	assert_int_equal(nb_qcow2_overlay_create(disk, "/b.qcow2", "qcow2", 65ull << 40), -EINVAL);
	memset(longname, 'a', sizeof(longname) - 1);
	longname[0] = '/';
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(nb_qcow2_overlay_create(disk, longname, "qcow2", 1 << 30), -EINVAL);
	assert_false(nb_path_exists(disk));
	/* an existing file is never overwritten */
	assert_int_equal(nb_write_file(disk, "keep", 4, 0600), 0);
	assert_int_equal(nb_qcow2_overlay_create(disk, "/b.qcow2", "qcow2", 1 << 30), -EEXIST);
	char *text = NULL;
	assert_int_equal(nb_read_file(disk, 64, &text, NULL), 0);
	assert_string_equal(text, "keep");
	free(text);
	unlink(disk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_overlay_reads_base_writes_stay),
	    cmocka_unit_test(test_large_and_raw_backing),
	    cmocka_unit_test(test_bad_arguments_leave_nothing),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
