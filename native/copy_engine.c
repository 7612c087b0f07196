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
#include <sys/mman.h>
#include <sys/uio.h>
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
  /* One transparent huge page each where the kernel allows (a 4 KiB page fault
   * costs about 10 us under some hypervisors; see adviseHugePages). */
  void *p = NULL;
  if (posix_memalign(&p, CHUNK, CHUNK) != 0) return NULL;
  madvise(p, CHUNK, MADV_HUGEPAGE);
  return p;
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

/* The arguments of a copy's done callback, (null, written) or (errnoName, side, at) when err is set; returns their count. */
static size_t done_args(napi_env env, napi_value *args, const char *err, const char *side, int64_t at, int64_t written) {
  if (err != NULL) {
    napi_create_string_utf8(env, err, NAPI_AUTO_LENGTH, &args[0]);
    napi_create_string_utf8(env, side, NAPI_AUTO_LENGTH, &args[1]);
    napi_create_double(env, (double)at, &args[2]);
    return 3;
  }
  napi_get_null(env, &args[0]);
  napi_create_double(env, (double)written, &args[1]);
  return 2;
}

static void complete(napi_env env, napi_status status, void *data) {
  struct engine *e = data;
  napi_value done, undef, args[3];
  napi_get_reference_value(env, e->done, &done);
  napi_get_undefined(env, &undef);
  size_t n;
  if (status != napi_ok) n = done_args(env, args, "ECANCELED", "write", 0, 0);
  else if (e->err != 0) n = done_args(env, args, errno_name(e->err), e->err_write ? "write" : "read", e->err_at, 0);
  else n = done_args(env, args, NULL, NULL, 0, e->written);
  napi_delete_reference(env, e->done);
  napi_delete_async_work(env, e->work);
  free_engine(e);
  napi_call_function(env, undef, done, n, args, NULL);
}

/* Reads argument i as a Float64Array whose length is a multiple of `width`. */
static int get_quads(napi_env env, napi_value *argv, size_t argc, size_t i, size_t width, double **values, size_t *count) {
  bool is_typed = false;
  napi_typedarray_type type = napi_int8_array;
  size_t length = 0;
  void *data = NULL;
  if (i < argc) napi_is_typedarray(env, argv[i], &is_typed);
  if (is_typed) napi_get_typedarray_info(env, argv[i], &type, &length, &data, NULL, NULL);
  if (!is_typed || type != napi_float64_array || length % width != 0) return 0;
  *values = data;
  *count = length / width;
  return 1;
}

static int is_function(napi_env env, napi_value *argv, size_t argc, size_t i) {
  napi_valuetype t = napi_undefined;
  if (i < argc) napi_typeof(env, argv[i], &t);
  return t == napi_function;
}

static napi_value copy_runs(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int64_t dst_fd, zero_block;
  if (!get_int(env, argv, argc, 0, "dstFd", &dst_fd) || !get_int(env, argv, argc, 2, "zeroBlock", &zero_block)) return NULL;
  double *values = NULL;
  size_t nruns = 0;
  if (!get_quads(env, argv, argc, 1, 4, &values, &nruns) || zero_block <= 0 || !is_function(env, argv, argc, 3)) {
    napi_throw_type_error(env, "EINVAL", "copyRuns(dstFd, runs: Float64Array of (srcFd, srcOffset, length, dstOffset), zeroBlock > 0, done)");
    return NULL;
  }
  struct engine *e = calloc(1, sizeof *e);
  if (e == NULL) return throw_errno(env, "copyRuns", ENOMEM);
  e->dst_fd = (int)dst_fd;
  e->zero_block = zero_block;
  e->nruns = nruns;
  e->runs = malloc(nruns * 4 * sizeof(double) + 1);
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
  if (nruns > 0) memcpy(e->runs, values, nruns * 4 * sizeof(double));
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

/*
 * The two halves of a copy whose target decides where the data goes (a qcow2
 * target allocates clusters only where a block holds data, which it learns
 * from the read): readRuns fills a buffer and maps its data blocks, writeSlices
 * writes slices of it. Each runs on a libuv pool thread; a caller overlaps the
 * read of one buffer with the write of another. The JS buffers stay referenced
 * (and untouched by JS) until done is called.
 *
 * readRuns(buf, runs, used, zeroBlock, dataMap, done): runs is a Float64Array
 * of (srcFd, srcOffset, length, bufOffset), ascending and not overlapping,
 * within [0, used). Bytes of [0, used) no run covers become zeros; bytes past
 * a source's end read as zeros. dataMap[i] becomes 1 when block i (zeroBlock
 * bytes from i * zeroBlock) holds a non-zero byte, else 0. done(null) or
 * done(errnoName, 'read', bufOffset).
 *
 * writeSlices(dstFd, buf, slices, done): slices is a Float64Array of
 * (bufOffset, length, dstOffset); slices that follow each other in the file
 * go out as one pwritev. done(null, written) or done(errnoName, 'write', dstOffset).
 */
enum half_kind { HALF_READ, HALF_WRITE };

struct half {
  enum half_kind kind;
  int dst_fd;
  char *buf;
  int64_t used;
  int64_t zero_block;
  unsigned char *map;
  double *runs;
  size_t nruns;
  int err;
  int64_t err_at;
  int64_t written;
  napi_ref buf_ref;
  napi_ref map_ref;
  napi_ref done;
  napi_async_work work;
};

static void read_half(struct half *h) {
  int64_t zb = h->zero_block;
  int64_t covered = 0;
  memset(h->map, 0, (size_t)((h->used + zb - 1) / zb));
  for (size_t r = 0; r < h->nruns; r++) {
    int fd = (int)h->runs[4 * r];
    int64_t src = (int64_t)h->runs[4 * r + 1], len = (int64_t)h->runs[4 * r + 2], at = (int64_t)h->runs[4 * r + 3];
    if (at > covered) memset(h->buf + covered, 0, (size_t)(at - covered));
    for (int64_t got = 0; got < len;) {
      ssize_t g = pread(fd, h->buf + at + got, (size_t)(len - got), src + got);
      if (g < 0 && errno == EINTR) continue;
      if (g < 0) {
        h->err = errno;
        h->err_at = at + got;
        return;
      }
      if (g == 0) {
        memset(h->buf + at + got, 0, (size_t)(len - got)); /* past the source's end */
        break;
      }
      got += g;
    }
    covered = at + len;
    /* The whole blocks of this run while they are still in the CPU's cache; its edge blocks once their neighbours are in. */
    for (int64_t b = (at + zb - 1) / zb; (b + 1) * zb <= at + len; b++) h->map[b] = !all_zero(h->buf + b * zb, zb);
  }
  if (h->used > covered) memset(h->buf + covered, 0, (size_t)(h->used - covered));
  for (size_t r = 0; r < h->nruns; r++) {
    int64_t at = (int64_t)h->runs[4 * r + 3], end = at + (int64_t)h->runs[4 * r + 2];
    int64_t edges[2] = {at / zb, (end - 1) / zb};
    for (int i = 0; i < 2; i++) {
      int64_t b = edges[i], from = b * zb, to = from + zb < h->used ? from + zb : h->used;
      if (end > at && (from < at || from + zb > end) && !h->map[b]) h->map[b] = !all_zero(h->buf + from, to - from);
    }
  }
}

#define MAX_IOV 64

static void write_half(struct half *h) {
  struct iovec iov[MAX_IOV];
  for (size_t r = 0; r < h->nruns;) {
    int64_t dst = (int64_t)h->runs[3 * r + 2], total = 0;
    int n = 0;
    while (r < h->nruns && n < MAX_IOV && (int64_t)h->runs[3 * r + 2] == dst + total) {
      iov[n].iov_base = h->buf + (int64_t)h->runs[3 * r];
      iov[n].iov_len = (size_t)h->runs[3 * r + 1];
      total += (int64_t)h->runs[3 * r + 1];
      n++;
      r++;
    }
    struct iovec *v = iov;
    for (int64_t done = 0; done < total;) {
      ssize_t w = pwritev(h->dst_fd, v, n, dst + done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        h->err = w < 0 ? errno : EIO;
        h->err_at = dst + done;
        return;
      }
      done += w;
      h->written += w;
      /* A short write: step over what went out. */
      while (n > 0 && (size_t)w >= v->iov_len) {
        w -= (ssize_t)v->iov_len;
        v++;
        n--;
      }
      if (n > 0) {
        v->iov_base = (char *)v->iov_base + w;
        v->iov_len -= (size_t)w;
      }
    }
  }
}

static void execute_half(napi_env env, void *data) {
  (void)env;
  struct half *h = data;
  if (h->kind == HALF_READ) read_half(h);
  else write_half(h);
}

static void complete_half(napi_env env, napi_status status, void *data) {
  struct half *h = data;
  napi_value done, undef, args[3];
  napi_get_reference_value(env, h->done, &done);
  napi_get_undefined(env, &undef);
  const char *side = h->kind == HALF_READ ? "read" : "write";
  size_t n = done_args(env, args, status != napi_ok ? "ECANCELED" : h->err != 0 ? errno_name(h->err) : NULL, side, h->err_at, h->written);
  napi_delete_reference(env, h->done);
  napi_delete_reference(env, h->buf_ref);
  if (h->map_ref != NULL) napi_delete_reference(env, h->map_ref);
  napi_delete_async_work(env, h->work);
  free(h->runs);
  free(h);
  napi_call_function(env, undef, done, n, args, NULL);
}

static napi_value queue_half(napi_env env, struct half *h, napi_value *argv, size_t buf_i, size_t map_i, size_t done_i, const double *runs, size_t width) {
  h->runs = malloc(h->nruns * width * sizeof(double) + 1);
  if (h->runs == NULL) {
    free(h);
    return throw_errno(env, "copy half", ENOMEM);
  }
  if (h->nruns > 0) memcpy(h->runs, runs, h->nruns * width * sizeof(double));
  napi_create_reference(env, argv[buf_i], 1, &h->buf_ref);
  if (h->kind == HALF_READ) napi_create_reference(env, argv[map_i], 1, &h->map_ref);
  napi_create_reference(env, argv[done_i], 1, &h->done);
  napi_value name;
  napi_create_string_utf8(env, "vdisk.copyHalf", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, execute_half, complete_half, h, &h->work) != napi_ok || napi_queue_async_work(env, h->work) != napi_ok) {
    napi_delete_reference(env, h->done);
    napi_delete_reference(env, h->buf_ref);
    if (h->map_ref != NULL) napi_delete_reference(env, h->map_ref);
    free(h->runs);
    free(h);
    return throw_errno(env, "copy half", EAGAIN);
  }
  return NULL;
}

static napi_value read_runs(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *buf = NULL, *map = NULL;
  size_t buf_len = 0, map_len = 0, nruns = 0;
  double *runs = NULL;
  int64_t used, zero_block;
  if (!get_bytes(env, argv, argc, 0, "buffer", &buf, &buf_len) || !get_int(env, argv, argc, 2, "used", &used) ||
      !get_int(env, argv, argc, 3, "zeroBlock", &zero_block) || !get_bytes(env, argv, argc, 4, "dataMap", &map, &map_len))
    return NULL;
  int ok = get_quads(env, argv, argc, 1, 4, &runs, &nruns) && is_function(env, argv, argc, 5) && zero_block > 0 && (size_t)used <= buf_len &&
           (size_t)((used + zero_block - 1) / zero_block) <= map_len;
  /* Every run inside [0, used), ascending: the thread writes only there. */
  for (size_t r = 0; ok && r < nruns; r++) {
    double at = runs[4 * r + 3], len = runs[4 * r + 2];
    ok = runs[4 * r] >= 0 && runs[4 * r + 1] >= 0 && len >= 0 && at >= (r > 0 ? runs[4 * r - 1] + runs[4 * r - 2] : 0) && at + len <= (double)used;
  }
  if (!ok) {
    napi_throw_type_error(env, "EINVAL", "readRuns(buffer, runs: Float64Array of ascending (srcFd, srcOffset, length, bufOffset) within used, used <= buffer.length, zeroBlock > 0, dataMap of a byte per block, done)");
    return NULL;
  }
  struct half *h = calloc(1, sizeof *h);
  if (h == NULL) return throw_errno(env, "readRuns", ENOMEM);
  h->kind = HALF_READ;
  h->buf = buf;
  h->used = used;
  h->zero_block = zero_block;
  h->map = map;
  h->nruns = nruns;
  return queue_half(env, h, argv, 0, 4, 5, runs, 4);
}

static napi_value write_slices(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *buf = NULL;
  size_t buf_len = 0, nslices = 0;
  double *slices = NULL;
  int64_t dst_fd;
  if (!get_int(env, argv, argc, 0, "dstFd", &dst_fd) || !get_bytes(env, argv, argc, 1, "buffer", &buf, &buf_len)) return NULL;
  int ok = get_quads(env, argv, argc, 2, 3, &slices, &nslices) && is_function(env, argv, argc, 3);
  for (size_t r = 0; ok && r < nslices; r++) ok = slices[3 * r] >= 0 && slices[3 * r + 1] >= 0 && slices[3 * r] + slices[3 * r + 1] <= (double)buf_len && slices[3 * r + 2] >= 0;
  if (!ok) {
    napi_throw_type_error(env, "EINVAL", "writeSlices(dstFd, buffer, slices: Float64Array of (bufOffset, length, dstOffset) within the buffer, done)");
    return NULL;
  }
  struct half *h = calloc(1, sizeof *h);
  if (h == NULL) return throw_errno(env, "writeSlices", ENOMEM);
  h->kind = HALF_WRITE;
  h->dst_fd = (int)dst_fd;
  h->buf = buf;
  h->nruns = nslices;
  return queue_half(env, h, argv, 1, 0, 3, slices, 3);
}

void copy_engine_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"copyRuns", NULL, copy_runs, NULL, NULL, NULL, napi_enumerable, NULL},
    {"readRuns", NULL, read_runs, NULL, NULL, NULL, napi_enumerable, NULL},
    {"writeSlices", NULL, write_slices, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
