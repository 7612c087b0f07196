/*
 * A bulk copy between host files on two threads of its own, laid out as
 * qemu-img's convert is: a reader thread fills 2 MiB buffers with pread, a
 * writer thread looks for zero blocks in each and pwrites the runs between
 * them. The JS thread only lists the runs, so the two page-cache copies of a
 * convert run in parallel and the event loop stays free (on 2 cores, a
 * convert whose JS thread did the writes itself took ~1.5x qemu-img's time;
 * this layout is level with it).
 *
 * copyRuns(runs, zeroBlock, done): runs is a Float64Array of quadruples
 * (srcFd, srcOffset, length, dstOffset). Blocks of `zeroBlock` bytes, aligned
 * to dstOffset's disk (multiples of zeroBlock), that read as all zeros are not
 * written (the target must read as zeros there already). Bytes past a source's
 * end read as zeros. done(null, written) with the bytes written, or
 * done(errnoName, side, dstOffset) naming the side that failed ('read' or
 * 'write') and where. Runs start on a libuv pool thread that starts the reader.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>

#include "copy_range.h"

#define SLOTS 4
#define CHUNK (2 * 1024 * 1024)

enum slot_state { SLOT_FREE, SLOT_FULL, SLOT_END };

struct slot {
  char *buf;
  int64_t dst;
  int64_t len;
  enum slot_state state;
};

struct engine {
  int dst_fd;
  double *runs;
  size_t nruns;
  int64_t zero_block;
  struct slot slots[SLOTS];
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* The first failure (errno), its side and where; guarded by mu. */
  int err;
  int err_write;
  int64_t err_at;
  int64_t written;
  napi_async_work work;
  napi_ref done;
};

static void fail(struct engine *e, int err, int write, int64_t at) {
  pthread_mutex_lock(&e->mu);
  if (e->err == 0) {
    e->err = err;
    e->err_write = write;
    e->err_at = at;
  }
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

/* Waits until slot k is in state `want` (or a failure); returns 0 on a failure. */
static int wait_slot(struct engine *e, int k, enum slot_state want) {
  pthread_mutex_lock(&e->mu);
  while (e->slots[k].state != want && !(want == SLOT_FULL && e->slots[k].state == SLOT_END) && e->err == 0) pthread_cond_wait(&e->cv, &e->mu);
  int ok = e->err == 0;
  pthread_mutex_unlock(&e->mu);
  return ok;
}

static void set_slot(struct engine *e, int k, enum slot_state s) {
  pthread_mutex_lock(&e->mu);
  e->slots[k].state = s;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

static void *reader(void *arg) {
  struct engine *e = arg;
  int k = 0;
  for (size_t r = 0; r < e->nruns; r++) {
    int fd = (int)e->runs[4 * r];
    int64_t src = (int64_t)e->runs[4 * r + 1], len = (int64_t)e->runs[4 * r + 2], dst = (int64_t)e->runs[4 * r + 3];
    for (int64_t done = 0; done < len;) {
      int64_t n = len - done < CHUNK ? len - done : CHUNK;
      if (!wait_slot(e, k, SLOT_FREE)) return NULL;
      struct slot *s = &e->slots[k];
      int64_t got = 0;
      while (got < n) {
        ssize_t g = pread(fd, s->buf + got, (size_t)(n - got), src + done + got);
        if (g < 0 && errno == EINTR) continue;
        if (g < 0) {
          fail(e, errno, 0, dst + done + got);
          return NULL;
        }
        if (g == 0) {
          memset(s->buf + got, 0, (size_t)(n - got)); /* past the source's end */
          break;
        }
        got += g;
      }
      s->dst = dst + done;
      s->len = n;
      set_slot(e, k, SLOT_FULL);
      k = (k + 1) % SLOTS;
      done += n;
    }
  }
  if (wait_slot(e, k, SLOT_FREE)) set_slot(e, k, SLOT_END);
  return NULL;
}

/*
 * Buffers outlive a copy: a convert hands its runs over in batches (so that
 * progress moves), and fresh 2 MiB buffers per batch cost their page faults
 * each time (a 4 GiB convert in 64 MiB batches took 1.1-1.4 s this way,
 * against 0.7-1.0 s in one batch).
 */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static char *pool[SLOTS];
static int pooled;

static char *take_buffer(void) {
  pthread_mutex_lock(&pool_mu);
  char *b = pooled > 0 ? pool[--pooled] : NULL;
  pthread_mutex_unlock(&pool_mu);
  if (b != NULL) return b;
  void *p = NULL;
  return posix_memalign(&p, 4096, CHUNK) == 0 ? p : NULL;
}

static void give_buffer(char *b) {
  if (b == NULL) return;
  pthread_mutex_lock(&pool_mu);
  if (pooled < SLOTS) {
    pool[pooled++] = b;
    b = NULL;
  }
  pthread_mutex_unlock(&pool_mu);
  free(b);
}

static int all_zero(const char *p, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    if (w != 0) return 0;
  }
  for (; i < n; i++)
    if (p[i] != 0) return 0;
  return 1;
}

/* Writes the data runs of one full slot (the blocks that are not all zeros); returns 0 after a failure. */
static int write_slot(struct engine *e, const struct slot *s) {
  int64_t run = -1;
  for (int64_t i = 0;;) {
    int zero = 1;
    int64_t end = s->len;
    if (i < s->len) {
      end = i + e->zero_block - ((s->dst + i) % e->zero_block);
      if (end > s->len) end = s->len;
      zero = all_zero(s->buf + i, end - i);
    }
    if (!zero && run < 0) run = i;
    if (zero && run >= 0) {
      for (int64_t at = run; at < i;) {
        ssize_t w = pwrite(e->dst_fd, s->buf + at, (size_t)(i - at), s->dst + at);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          fail(e, w < 0 ? errno : EIO, 1, s->dst + at);
          return 0;
        }
        at += w;
      }
      e->written += i - run;
      run = -1;
    }
    if (i >= s->len) return 1;
    i = end;
  }
}

static void execute(napi_env env, void *data) {
  (void)env;
  struct engine *e = data;
  pthread_t rt;
  int err = pthread_create(&rt, NULL, reader, e);
  if (err != 0) {
    fail(e, err, 0, e->nruns > 0 ? (int64_t)e->runs[3] : 0);
    return;
  }
  for (int k = 0;; k = (k + 1) % SLOTS) {
    if (!wait_slot(e, k, SLOT_FULL)) break;
    if (e->slots[k].state == SLOT_END) break;
    int ok = write_slot(e, &e->slots[k]);
    set_slot(e, k, SLOT_FREE);
    if (!ok) break;
  }
  pthread_join(rt, NULL);
}

static void free_engine(struct engine *e) {
  for (int i = 0; i < SLOTS; i++) give_buffer(e->slots[i].buf);
  pthread_mutex_destroy(&e->mu);
  pthread_cond_destroy(&e->cv);
  free(e->runs);
  free(e);
}

static void complete(napi_env env, napi_status status, void *data) {
  struct engine *e = data;
  napi_value done, undef, args[3];
  napi_get_reference_value(env, e->done, &done);
  napi_get_undefined(env, &undef);
  int n = 2;
  if (status != napi_ok) {
    napi_create_string_utf8(env, "ECANCELED", NAPI_AUTO_LENGTH, &args[0]);
    napi_create_string_utf8(env, "write", NAPI_AUTO_LENGTH, &args[1]);
    napi_create_double(env, 0, &args[2]);
    n = 3;
  } else if (e->err != 0) {
    napi_create_string_utf8(env, errno_name(e->err), NAPI_AUTO_LENGTH, &args[0]);
    napi_create_string_utf8(env, e->err_write ? "write" : "read", NAPI_AUTO_LENGTH, &args[1]);
    napi_create_double(env, (double)e->err_at, &args[2]);
    n = 3;
  } else {
    napi_get_null(env, &args[0]);
    napi_create_double(env, (double)e->written, &args[1]);
  }
  napi_delete_reference(env, e->done);
  napi_delete_async_work(env, e->work);
  free_engine(e);
  napi_call_function(env, undef, done, (size_t)n, args, NULL);
}

static napi_value copy_runs(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int64_t dst_fd, zero_block;
  if (!get_int(env, argv, argc, 0, "dstFd", &dst_fd) || !get_int(env, argv, argc, 2, "zeroBlock", &zero_block)) return NULL;
  napi_valuetype cb_type = napi_undefined;
  if (argc > 3) napi_typeof(env, argv[3], &cb_type);
  bool is_typed = false;
  if (argc > 1) napi_is_typedarray(env, argv[1], &is_typed);
  napi_typedarray_type type = napi_int8_array;
  size_t length = 0;
  void *values = NULL;
  if (is_typed) napi_get_typedarray_info(env, argv[1], &type, &length, &values, NULL, NULL);
  if (!is_typed || type != napi_float64_array || length % 4 != 0 || zero_block <= 0 || cb_type != napi_function) {
    napi_throw_type_error(env, "EINVAL", "copyRuns(dstFd, runs: Float64Array of (srcFd, srcOffset, length, dstOffset), zeroBlock > 0, done)");
    return NULL;
  }
  struct engine *e = calloc(1, sizeof *e);
  if (e == NULL) return throw_errno(env, "copyRuns", ENOMEM);
  e->dst_fd = (int)dst_fd;
  e->zero_block = zero_block;
  e->nruns = length / 4;
  e->runs = malloc(length * sizeof(double) + 1);
  int ok = e->runs != NULL;
  for (int i = 0; ok && i < SLOTS; i++) {
    e->slots[i].buf = take_buffer();
    ok = e->slots[i].buf != NULL;
  }
  if (!ok) {
    free(e->runs);
    for (int i = 0; i < SLOTS; i++) give_buffer(e->slots[i].buf);
    free(e);
    return throw_errno(env, "copyRuns", ENOMEM);
  }
  if (length > 0) memcpy(e->runs, values, length * sizeof(double));
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
  napi_value name;
  napi_create_string_utf8(env, "vdisk.copyRuns", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, argv[3], 1, &e->done);
  if (napi_create_async_work(env, NULL, name, execute, complete, e, &e->work) != napi_ok || napi_queue_async_work(env, e->work) != napi_ok) {
    napi_delete_reference(env, e->done);
    free_engine(e);
    return throw_errno(env, "copyRuns", EAGAIN);
  }
  return NULL;
}

void copy_engine_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"copyRuns", NULL, copy_runs, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
