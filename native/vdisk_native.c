/*
 * vdisk's host calls that Node's fs module lacks: fallocate (punch hole, zero
 * range, allocate), lseek SEEK_DATA / SEEK_HOLE, and open-file-description
 * (OFD) byte-range locks. Written against plain node_api.h so no extra npm
 * package is needed.
 *
 * Every call is a synchronous syscall on the JS thread. They are short on local
 * file systems; if one ever shows up in a profile, move it to napi_async_work.
 *
 * Conventions: a file system that lacks a feature (EOPNOTSUPP, ENOSYS, and for
 * locks EINVAL from kernels without OFD locks) makes the call return false;
 * any other failure throws an Error whose `code` is the errno name.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <linux/falloc.h>
#include <node_api.h>

#include "copy_range.h"
#include "host_ring.h"
#include "socket_send.h"

#define MAX_SAFE_INT 9007199254740991LL

const char *errno_name(int err) {
  switch (err) {
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case ENOSPC: return "ENOSPC";
    case EFBIG: return "EFBIG";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EROFS: return "EROFS";
    case EAGAIN: return "EAGAIN";
    case EINTR: return "EINTR";
    case ENXIO: return "ENXIO";
    case ENODEV: return "ENODEV";
    case ESPIPE: return "ESPIPE";
    case ETXTBSY: return "ETXTBSY";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOSYS: return "ENOSYS";
    case ENOLCK: return "ENOLCK";
    case EDEADLK: return "EDEADLK";
    case EOVERFLOW: return "EOVERFLOW";
    case EXDEV: return "EXDEV";
    case ENOMEM: return "ENOMEM";
    default: return "EIO";
  }
}

/* Throws an Error with code = errno name and a message naming the call. */
napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, errno_name(err), msg);
  return NULL;
}

/* Reads argument `i` as a Uint8Array (its bytes and length); throws a TypeError otherwise. */
int get_bytes(napi_env env, napi_value *argv, size_t argc, size_t i, const char *name, void **data, size_t *length) {
  bool is_ta = false;
  napi_typedarray_type type;
  napi_value ab;
  size_t byte_offset;
  if (i >= argc || napi_is_typedarray(env, argv[i], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, argv[i], &type, length, data, &ab, &byte_offset) != napi_ok || type != napi_uint8_array) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a Uint8Array", name);
    napi_throw_type_error(env, "EINVAL", msg);
    return 0;
  }
  return 1;
}

static int is_unsupported(int err) {
  return err == EOPNOTSUPP || err == ENOSYS;
}

/* Reads argument `i` as a non-negative safe integer; throws a TypeError otherwise. */
int get_int(napi_env env, napi_value *argv, size_t argc, size_t i, const char *name, int64_t *out) {
  napi_valuetype t;
  double d;
  if (i >= argc || napi_typeof(env, argv[i], &t) != napi_ok || t != napi_number) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a number", name);
    napi_throw_type_error(env, "EINVAL", msg);
    return 0;
  }
  napi_get_value_double(env, argv[i], &d);
  if (!(d >= 0) || d > (double)MAX_SAFE_INT || d != (double)(int64_t)d) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a non-negative safe integer", name);
    napi_throw_range_error(env, "EINVAL", msg);
    return 0;
  }
  *out = (int64_t)d;
  return 1;
}

static napi_value make_bool(napi_env env, int v) {
  napi_value r;
  napi_get_boolean(env, v ? true : false, &r);
  return r;
}

napi_value make_number(napi_env env, int64_t v) {
  napi_value r;
  napi_create_double(env, (double)v, &r);
  return r;
}

/* fd, offset, length → boolean; shared by the three fallocate modes. */
static napi_value do_fallocate(napi_env env, napi_callback_info info, int mode, const char *what) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t fd, off, len;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!get_int(env, argv, argc, 0, "fd", &fd) || !get_int(env, argv, argc, 1, "offset", &off) ||
      !get_int(env, argv, argc, 2, "length", &len))
    return NULL;
  if (len == 0) return make_bool(env, 1);
  int rc;
  do {
    rc = fallocate((int)fd, mode, (off_t)off, (off_t)len);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return make_bool(env, 1);
  if (is_unsupported(errno)) return make_bool(env, 0);
  return throw_errno(env, what, errno);
}

static napi_value punch_hole(napi_env env, napi_callback_info info) {
  return do_fallocate(env, info, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, "fallocate(PUNCH_HOLE)");
}

static napi_value zero_range(napi_env env, napi_callback_info info) {
  return do_fallocate(env, info, FALLOC_FL_ZERO_RANGE, "fallocate(ZERO_RANGE)");
}

static napi_value allocate(napi_env env, napi_callback_info info) {
  return do_fallocate(env, info, 0, "fallocate");
}

/* fd, offset → offset of next data, or null when there is none (ENXIO). */
static napi_value seek_data(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t fd, off;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!get_int(env, argv, argc, 0, "fd", &fd) || !get_int(env, argv, argc, 1, "offset", &off)) return NULL;
  off_t r = lseek((int)fd, (off_t)off, SEEK_DATA);
  if (r >= 0) return make_number(env, (int64_t)r);
  if (errno == ENXIO) {
    napi_value n;
    napi_get_null(env, &n);
    return n;
  }
  return throw_errno(env, "lseek(SEEK_DATA)", errno);
}

/* fd, offset → offset of the next hole (end of file counts); past the end: the offset itself. */
static napi_value seek_hole(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t fd, off;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!get_int(env, argv, argc, 0, "fd", &fd) || !get_int(env, argv, argc, 1, "offset", &off)) return NULL;
  off_t r = lseek((int)fd, (off_t)off, SEEK_HOLE);
  if (r >= 0) return make_number(env, (int64_t)r);
  if (errno == ENXIO) return make_number(env, off);
  return throw_errno(env, "lseek(SEEK_HOLE)", errno);
}

/*
 * fd → the offset of its end (lseek SEEK_END). For a block device this is its
 * size, which fstat reports as 0. The file position it moves is not used:
 * every read and write names its offset.
 */
static napi_value end_offset(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!get_int(env, argv, argc, 0, "fd", &fd)) return NULL;
  off_t r = lseek((int)fd, 0, SEEK_END);
  if (r >= 0) return make_number(env, (int64_t)r);
  return throw_errno(env, "lseek(SEEK_END)", errno);
}

#define HUGE_PAGE (2 * 1024 * 1024)

/*
 * adviseHugePages(buffer): asks for transparent huge pages (MADV_HUGEPAGE) on
 * the 2 MiB-aligned middle of the buffer's memory, before anything touches
 * it; returns the offset of its first 2 MiB boundary, or -1 when it holds no
 * whole huge page or the kernel refuses. Large copy buffers then fault in
 * 2 MiB at a time: under some hypervisors a 4 KiB fault costs about 10 us
 * (a fresh 8 MiB buffer took 20 ms to fill the first time).
 */
static napi_value advise_huge_pages(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  size_t length = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!get_bytes(env, argv, argc, 0, "buffer", &data, &length)) return NULL;
  uintptr_t start = (uintptr_t)data, end = start + length;
  uintptr_t first = (start + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
  uintptr_t last = end & ~(uintptr_t)(HUGE_PAGE - 1);
  if (data == NULL || last <= first || madvise((void *)first, last - first, MADV_HUGEPAGE) != 0) return make_number(env, -1);
  return make_number(env, (int64_t)(first - start));
}

/* Reads the lock type argument: 'r', 'w' or 'u'. */
static int get_lock_type(napi_env env, napi_value *argv, size_t argc, size_t i, short *out) {
  char buf[4] = {0};
  size_t n = 0;
  napi_valuetype t;
  if (i < argc && napi_typeof(env, argv[i], &t) == napi_ok && t == napi_string &&
      napi_get_value_string_utf8(env, argv[i], buf, sizeof buf, &n) == napi_ok && n == 1) {
    if (buf[0] == 'r') { *out = F_RDLCK; return 1; }
    if (buf[0] == 'w') { *out = F_WRLCK; return 1; }
    if (buf[0] == 'u') { *out = F_UNLCK; return 1; }
  }
  napi_throw_type_error(env, "EINVAL", "lock type must be 'r', 'w' or 'u'");
  return 0;
}

static int get_lock_args(napi_env env, napi_callback_info info, int64_t *fd, struct flock *fl) {
  size_t argc = 4;
  napi_value argv[4];
  int64_t start, len;
  short type;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!get_int(env, argv, argc, 0, "fd", fd) || !get_int(env, argv, argc, 1, "start", &start) ||
      !get_int(env, argv, argc, 2, "length", &len) || !get_lock_type(env, argv, argc, 3, &type))
    return 0;
  memset(fl, 0, sizeof *fl);
  fl->l_type = type;
  fl->l_whence = SEEK_SET;
  fl->l_start = (off_t)start;
  fl->l_len = (off_t)len;
  fl->l_pid = 0; /* required by F_OFD_* */
  return 1;
}

/*
 * fd, start, length, type → true when the lock was taken (or released), false
 * when another open file description holds a conflicting lock. Non-blocking.
 */
static napi_value set_lock(napi_env env, napi_callback_info info) {
  int64_t fd;
  struct flock fl;
  if (!get_lock_args(env, info, &fd, &fl)) return NULL;
  int rc;
  do {
    rc = fcntl((int)fd, F_OFD_SETLK, &fl);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return make_bool(env, 1);
  if (errno == EAGAIN || errno == EACCES) return make_bool(env, 0);
  return throw_errno(env, "fcntl(F_OFD_SETLK)", errno);
}

/*
 * fd, start, length, type → null when a lock of `type` could be taken, else
 * { type: 'r'|'w', start, length } describing the first conflicting lock.
 */
static napi_value get_lock(napi_env env, napi_callback_info info) {
  int64_t fd;
  struct flock fl;
  if (!get_lock_args(env, info, &fd, &fl)) return NULL;
  if (fl.l_type == F_UNLCK) {
    napi_throw_type_error(env, "EINVAL", "getLock needs lock type 'r' or 'w'");
    return NULL;
  }
  if (fcntl((int)fd, F_OFD_GETLK, &fl) != 0) return throw_errno(env, "fcntl(F_OFD_GETLK)", errno);
  napi_value r;
  if (fl.l_type == F_UNLCK) {
    napi_get_null(env, &r);
    return r;
  }
  napi_value type;
  napi_create_string_utf8(env, fl.l_type == F_WRLCK ? "w" : "r", 1, &type);
  napi_create_object(env, &r);
  napi_set_named_property(env, r, "type", type);
  napi_set_named_property(env, r, "start", make_number(env, (int64_t)fl.l_start));
  napi_set_named_property(env, r, "length", make_number(env, (int64_t)fl.l_len));
  return r;
}

/*
 * fd, Uint8Array, offset → bytes transferred; -1 when the call would block
 * (data not in the page cache, EAGAIN); -2 when the kernel or file system lacks
 * RWF_NOWAIT for this call (ext4 buffered writes do). Lets the caller serve cached I/O on the JS thread and send only
 * the rest to libuv's thread pool: a pool round trip costs more than a 4 KiB
 * copy from the page cache.
 */
static napi_value do_nowait(napi_env env, napi_callback_info info, int write) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t fd, off;
  size_t length;
  void *data;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!get_int(env, argv, argc, 0, "fd", &fd) || !get_bytes(env, argv, argc, 1, "buffer", &data, &length) ||
      !get_int(env, argv, argc, 2, "offset", &off))
    return NULL;
#ifdef RWF_NOWAIT
  struct iovec iov = {data, length};
  ssize_t r;
  do {
    r = write ? pwritev2((int)fd, &iov, 1, (off_t)off, RWF_NOWAIT) : preadv2((int)fd, &iov, 1, (off_t)off, RWF_NOWAIT);
  } while (r < 0 && errno == EINTR);
  if (r >= 0) return make_number(env, (int64_t)r);
  if (errno == EAGAIN) return make_number(env, -1);
  if (errno == EINVAL || is_unsupported(errno)) return make_number(env, -2);
  return throw_errno(env, write ? "pwritev2(RWF_NOWAIT)" : "preadv2(RWF_NOWAIT)", errno);
#else
  (void)write;
  (void)data;
  (void)length;
  return make_number(env, -2);
#endif
}

static napi_value read_nowait(napi_env env, napi_callback_info info) {
  return do_nowait(env, info, 0);
}

static napi_value write_nowait(napi_env env, napi_callback_info info) {
  return do_nowait(env, info, 1);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_enumerable, NULL},
    {"zeroRange", NULL, zero_range, NULL, NULL, NULL, napi_enumerable, NULL},
    {"allocate", NULL, allocate, NULL, NULL, NULL, napi_enumerable, NULL},
    {"seekData", NULL, seek_data, NULL, NULL, NULL, napi_enumerable, NULL},
    {"seekHole", NULL, seek_hole, NULL, NULL, NULL, napi_enumerable, NULL},
    {"endOffset", NULL, end_offset, NULL, NULL, NULL, napi_enumerable, NULL},
    {"adviseHugePages", NULL, advise_huge_pages, NULL, NULL, NULL, napi_enumerable, NULL},
    {"setLock", NULL, set_lock, NULL, NULL, NULL, napi_enumerable, NULL},
    {"getLock", NULL, get_lock, NULL, NULL, NULL, napi_enumerable, NULL},
    {"readNoWait", NULL, read_nowait, NULL, NULL, NULL, napi_enumerable, NULL},
    {"writeNoWait", NULL, write_nowait, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  host_ring_register(env, exports);
  copy_range_register(env, exports);
  copy_engine_register(env, exports);
  socket_send_register(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
