/* Copy-on-write qcow2 overlays, written by nubo itself.
 *
 * A new instance disk is an empty qcow2 (version 3) image whose backing file
 * is the host's cached base image: a 64 KiB header cluster naming the
 * backing file and its format, a one-cluster refcount table, one refcount
 * block and an all-zero L1 table. This is the image `qemu-img create -f
 * qcow2 -F qcow2 -b BASE DISK SIZE` makes, without the exec of qemu-img,
 * which cost a launch 10-20 ms. Growing and inspecting disks stay with
 * qemu-img. */
#ifndef NB_QCOW2_H
#define NB_QCOW2_H

#include <stdint.h>

/* Creates path (which must not exist; mode 0600) as an empty qcow2 overlay
 * of size bytes over backing (an absolute path, at most 1023 bytes) of
 * format backing_fmt ("qcow2", "raw"). size must be a positive multiple of
 * 512 and at most 64 TiB. On failure nothing is left at path. Returns 0 or
 * -errno (-EEXIST, -EINVAL, ...). */
int nb_qcow2_overlay_create(const char *path, const char *backing, const char *backing_fmt,
                            uint64_t size);

#endif
