/*
 * copy_file_range(2) between two host files, for block jobs whose source and
 * target are plain files on one file system: the kernel copies page cache to
 * page cache and the data never crosses into JS (a read into a buffer and a
 * write out of it are two copies and two calls on the event loop).
 *
 * copyRangeAsync(fdIn, offIn, fdOut, offOut, length, done) copies on a libuv
 * pool thread, so a copy that must read from the disk never holds the event
 * loop, and the job's bookkeeping runs while the kernel copies. It calls
 * done(errnoName | null, result): result is the bytes copied, or -2 when the
 * files cannot be copied this way (different file systems, a kernel without
 * the call, special files) and nothing was copied yet. It loops over short
 * copies until `length` bytes are done or the source ends (then the count is
 * short: the caller decides what lies past the end). A synchronous form on
 * the JS thread was measured and dropped: see NodeHostFile.copyFrom.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>

#include "copy_range.h"

/* The arguments of one copy: two files, two offsets, a length. */
struct copy_args {
  int64_t fd_in, off_in, fd_out, off_out, length;
};

/* The result of one copy: bytes done, or -2 (unsupported, nothing done); err != 0 on a real failure. */
struct copy_result {
  int64_t done;
  int err;
};

static int copy_unsupported(int err) {
  /* EXDEV: two file systems (kernels >= 5.19); EINVAL/EOPNOTSUPP/ENOSYS: a file or kernel without it. */
  return err == EXDEV || err == EINVAL || err == EOPNOTSUPP || err == ENOSYS;
}

static struct copy_result copy_loop(const struct copy_args *a) {
  struct copy_result r = {0, 0};
  loff_t in = (loff_t)a->off_in, out = (loff_t)a->off_out;
  while (r.done < a->length) {
    ssize_t n = copy_file_range((int)a->fd_in, &in, (int)a->fd_out, &out, (size_t)(a->length - r.done), 0);
    if (n > 0) {
      r.done += n;
      continue;
    }
    if (n == 0) break; /* end of the source */
    if (errno == EINTR) continue;
    if (r.done == 0 && copy_unsupported(errno)) {
      r.done = -2;
      return r;
    }
    r.err = errno;
    return r;
  }
  return r;
}

static int read_args(napi_env env, napi_value *argv, size_t argc, struct copy_args *a) {
  return get_int(env, argv, argc, 0, "fdIn", &a->fd_in) && get_int(env, argv, argc, 1, "offIn", &a->off_in) &&
         get_int(env, argv, argc, 2, "fdOut", &a->fd_out) && get_int(env, argv, argc, 3, "offOut", &a->off_out) &&
         get_int(env, argv, argc, 4, "length", &a->length);
}

/* One asynchronous copy: its arguments, result, callback and work handle. */
struct copy_work {
  struct copy_args args;
  struct copy_result result;
  napi_ref done;
  napi_async_work work;
};

static void copy_execute(napi_env env, void *data) {
  (void)env;
  struct copy_work *w = data;
  w->result = copy_loop(&w->args);
}

static void copy_complete(napi_env env, napi_status status, void *data) {
  struct copy_work *w = data;
  napi_value cb, undef, argv[2];
  napi_get_reference_value(env, w->done, &cb);
  napi_get_undefined(env, &undef);
  if (status != napi_ok) {
    napi_create_string_utf8(env, "EIO", NAPI_AUTO_LENGTH, &argv[0]);
    napi_create_int64(env, 0, &argv[1]);
  } else if (w->result.err != 0) {
    napi_create_string_utf8(env, errno_name(w->result.err), NAPI_AUTO_LENGTH, &argv[0]);
    napi_create_int64(env, 0, &argv[1]);
  } else {
    napi_get_null(env, &argv[0]);
    napi_create_int64(env, w->result.done, &argv[1]);
  }
  napi_delete_reference(env, w->done);
  napi_delete_async_work(env, w->work);
  free(w);
  napi_call_function(env, undef, cb, 2, argv, NULL);
}

static napi_value copy_range_async(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], name;
  napi_valuetype t;
  struct copy_work *w;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 6 || napi_typeof(env, argv[5], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, "EINVAL", "copyRangeAsync needs a callback");
    return NULL;
  }
  w = calloc(1, sizeof *w);
  if (!w) return throw_errno(env, "copyRangeAsync", ENOMEM);
  if (!read_args(env, argv, argc, &w->args)) {
    free(w);
    return NULL;
  }
  napi_create_reference(env, argv[5], 1, &w->done);
  napi_create_string_utf8(env, "vdisk:copyRange", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, copy_execute, copy_complete, w, &w->work);
  napi_queue_async_work(env, w->work);
  return NULL;
}

void copy_range_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"copyRangeAsync", NULL, copy_range_async, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
