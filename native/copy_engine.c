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
 *
 * copyRunsPacked (below) is the same pair of threads for a qcow2 target: the
 * reader gathers whole clusters and finds those with data, the writer packs
 * them into clusters the JS thread reserved.
 */
#include <errno.h>
#include <fcntl.h>
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
/* Pieces of one pwritev. */
#define MAX_IOV 64
/*
 * A write of at least this much first reserves its range (fallocate,
 * FALLOC_FL_KEEP_SIZE). On ext4 a buffered write into unreserved space does
 * the delayed allocation's bookkeeping block by block, inside the inode lock
 * every write to the file takes; into reserved space it only finds the extent.
 * Measured on ext4 (Linux 6.18), 2 GiB in writes 2 MiB apart: 1 MiB writes
 * 0.41-0.43 s against 0.22-0.26 s with the reservation, and 1.10-1.13 s against
 * 1.02-1.06 s counting the fdatasync after, so the work is not moved to the
 * write-back; 64 KiB writes 0.80-0.83 against 0.55-0.57 s. At 4 KiB each
 * reservation is an extent of its own and the writes took 2.5 times as long,
 * at 16-32 KiB they were as often slower as faster: smaller writes go as they are.
 */
#define RESERVE_MIN (64 * 1024)

enum slot_state { SLOT_FREE, SLOT_FULL, SLOT_END };

struct slot {
  char *buf;
  int64_t dst;
  int64_t len;
  enum slot_state state;
  /* copyRunsPacked: the guest cluster of each cluster the buffer holds, and whether it holds data. */
  int64_t *guest;
  unsigned char *has_data;
  int64_t n;
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
  /* Cleared after the target declines a reservation (a block device, a file system without fallocate). */
  int reserve;
  napi_async_work work;
  napi_ref done;
  /* copyRunsPacked: the cluster size, where the data clusters go, and which guest cluster went to each (counted from first_cluster). */
  int64_t cs;
  int64_t host_start;
  int64_t first_cluster;
  int32_t *out;
  size_t cap;
  size_t count;
  napi_ref out_ref;
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

/*
 * Reserves [at, at + len) of the target ahead of a write there (see
 * RESERVE_MIN). Only a speed-up: a failure changes nothing for the write
 * that follows (out of space, it fails itself), and a target that does not
 * reserve is not asked again.
 */
static void reserve_ahead(struct engine *e, int64_t at, int64_t len) {
  if (!e->reserve || len < RESERVE_MIN) return;
  if (fallocate(e->dst_fd, FALLOC_FL_KEEP_SIZE, (off_t)at, (off_t)len) != 0 && errno != ENOSPC && errno != EINTR) e->reserve = 0;
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
      reserve_ahead(e, s->dst + run, i - run);
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

/* Runs a copy's two threads: `read_side` on a thread of its own filling the slots, `write_side` on this one emptying them. */
static void run_pair(struct engine *e, void *(*read_side)(void *), int (*write_side)(struct engine *, const struct slot *)) {
  pthread_t rt;
  int err = pthread_create(&rt, NULL, read_side, e);
  if (err != 0) {
    fail(e, err, 0, e->nruns > 0 ? (int64_t)e->runs[3] : 0);
    return;
  }
  for (int k = 0;; k = (k + 1) % SLOTS) {
    if (!wait_slot(e, k, SLOT_FULL)) break;
    if (e->slots[k].state == SLOT_END) break;
    int ok = write_side(e, &e->slots[k]);
    set_slot(e, k, SLOT_FREE);
    if (!ok) break;
  }
  pthread_join(rt, NULL);
}

static void execute(napi_env env, void *data) {
  (void)env;
  run_pair(data, reader, write_slot);
}

static void free_engine(struct engine *e) {
  for (int i = 0; i < SLOTS; i++) {
    give_buffer(e->slots[i].buf);
    free(e->slots[i].guest);
    free(e->slots[i].has_data);
  }
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
  else n = done_args(env, args, NULL, NULL, 0, e->out != NULL ? (int64_t)e->count : e->written);
  napi_delete_reference(env, e->done);
  if (e->out_ref != NULL) napi_delete_reference(env, e->out_ref);
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

/* argv[i] as an Int32Array: its elements and their count. */
static int get_int32s(napi_env env, napi_value *argv, size_t argc, size_t i, int32_t **values, size_t *count) {
  bool is_typed = false;
  napi_typedarray_type type = napi_int8_array;
  void *data = NULL;
  if (i < argc) napi_is_typedarray(env, argv[i], &is_typed);
  if (is_typed) napi_get_typedarray_info(env, argv[i], &type, count, &data, NULL, NULL);
  if (!is_typed || type != napi_int32_array) return 0;
  *values = data;
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
  e->reserve = 1;
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
 * copyRunsPacked(dstFd, runs, clusterSize, hostStart, clusters, done): a bulk
 * copy into a qcow2 image's fresh clusters, on the same two threads. runs is
 * a Float64Array of ascending, non-overlapping quadruples (srcFd, srcOffset,
 * length, guestOffset). The reader gathers the guest clusters the runs touch
 * into the buffers, whole (bytes no run covers are zeros), and marks which
 * hold a non-zero byte; the writer gives those, in guest order, the clusters
 * from hostStart on, one after another, and writes them, so that an image
 * whose clusters of zeros are left out is laid out as the copy loop lays it.
 * clusters (an Int32Array) says which guest cluster went where: clusters[i]
 * is written at hostStart + i * clusterSize, and counts from the cluster
 * holding the first run's start (small integers, which JS reads without
 * making a heap number of each; the runs may span up to 2^31 clusters).
 * done(null, count) with the clusters written, or
 * done(errnoName, side, at): a failed read names its guest offset, a failed
 * write its host offset. The JS thread only places the copy before and links
 * it after, so the reads, writes and zero checks never wait for it.
 */

/* Ends a slot of the reader: the rest of its last cluster becomes zeros, and each cluster is checked for data. */
static void finish_packed_slot(struct engine *e, struct slot *s, int64_t filled) {
  int64_t end = s->n * e->cs;
  if (filled < end) memset(s->buf + filled, 0, (size_t)(end - filled));
  for (int64_t i = 0; i < s->n; i++) s->has_data[i] = !all_zero(s->buf + i * e->cs, e->cs);
}

static void *packer(void *arg) {
  struct engine *e = arg;
  const int64_t cs = e->cs, per_slot = CHUNK / cs;
  int k = 0;
  struct slot *s = &e->slots[0];
  if (!wait_slot(e, k, SLOT_FREE)) return NULL;
  s->n = 0;
  /* Bytes of the slot's buffer holding read or zeroed data. */
  int64_t filled = 0;
  for (size_t r = 0; r < e->nruns; r++) {
    int fd = (int)e->runs[4 * r];
    int64_t src = (int64_t)e->runs[4 * r + 1], len = (int64_t)e->runs[4 * r + 2], guest = (int64_t)e->runs[4 * r + 3];
    for (int64_t pos = guest; pos < guest + len;) {
      int64_t c = pos / cs;
      if (s->n == 0 || s->guest[s->n - 1] != c) {
        if (s->n == per_slot) {
          finish_packed_slot(e, s, filled);
          set_slot(e, k, SLOT_FULL);
          k = (k + 1) % SLOTS;
          s = &e->slots[k];
          if (!wait_slot(e, k, SLOT_FREE)) return NULL;
          s->n = 0;
          filled = 0;
        }
        /* The rest of the cluster before, then this one up to where the run starts. */
        memset(s->buf + filled, 0, (size_t)(s->n * cs - filled));
        s->guest[s->n++] = c;
        filled = (s->n - 1) * cs;
      }
      int64_t at = (s->n - 1) * cs + pos % cs;
      if (at > filled) memset(s->buf + filled, 0, (size_t)(at - filled));
      int64_t take = (c + 1) * cs - pos < guest + len - pos ? (c + 1) * cs - pos : guest + len - pos;
      int64_t got = 0;
      while (got < take) {
        ssize_t g = pread(fd, s->buf + at + got, (size_t)(take - got), src + (pos - guest) + got);
        if (g < 0 && errno == EINTR) continue;
        if (g < 0) {
          fail(e, errno, 0, pos + got);
          return NULL;
        }
        if (g == 0) {
          memset(s->buf + at + got, 0, (size_t)(take - got)); /* past the source's end */
          break;
        }
        got += g;
      }
      filled = at + take;
      pos += take;
    }
  }
  if (s->n > 0) {
    finish_packed_slot(e, s, filled);
    set_slot(e, k, SLOT_FULL);
    k = (k + 1) % SLOTS;
    if (!wait_slot(e, k, SLOT_FREE)) return NULL;
  }
  set_slot(e, k, SLOT_END);
  return NULL;
}

/* Writes the clusters of a full slot that hold data to the next host clusters; returns 0 after a failure. */
static int write_packed_slot(struct engine *e, const struct slot *s) {
  struct iovec iov[MAX_IOV];
  const int64_t cs = e->cs;
  for (int64_t i = 0; i < s->n;) {
    int n = 0;
    int64_t total = 0;
    const int64_t dst = e->host_start + (int64_t)e->count * cs;
    /* Up to MAX_IOV pieces of clusters that follow each other in the buffer; all go to consecutive host clusters. */
    while (i < s->n && n < MAX_IOV) {
      if (!s->has_data[i]) {
        i++;
        continue;
      }
      if (e->count >= e->cap) {
        fail(e, EOVERFLOW, 1, dst + total);
        return 0;
      }
      e->out[e->count++] = (int32_t)(s->guest[i] - e->first_cluster);
      if (n > 0 && (char *)iov[n - 1].iov_base + iov[n - 1].iov_len == s->buf + i * cs) iov[n - 1].iov_len += (size_t)cs;
      else {
        iov[n].iov_base = s->buf + i * cs;
        iov[n].iov_len = (size_t)cs;
        n++;
      }
      total += cs;
      i++;
    }
    reserve_ahead(e, dst, total);
    struct iovec *v = iov;
    for (int64_t done = 0; done < total;) {
      ssize_t w = pwritev(e->dst_fd, v, n, dst + done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        fail(e, w < 0 ? errno : EIO, 1, dst + done);
        return 0;
      }
      done += w;
      e->written += w;
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
  return 1;
}

static void execute_packed(napi_env env, void *data) {
  (void)env;
  run_pair(data, packer, write_packed_slot);
}

static napi_value copy_runs_packed(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int64_t dst_fd, cs, host_start;
  if (!get_int(env, argv, argc, 0, "dstFd", &dst_fd) || !get_int(env, argv, argc, 2, "clusterSize", &cs) || !get_int(env, argv, argc, 3, "hostStart", &host_start)) return NULL;
  double *values = NULL;
  size_t nruns = 0;
  int32_t *out = NULL;
  size_t cap = 0;
  int ok = get_quads(env, argv, argc, 1, 4, &values, &nruns) && get_int32s(env, argv, argc, 4, &out, &cap) && is_function(env, argv, argc, 5) && cs >= 512 &&
           cs <= CHUNK && (cs & (cs - 1)) == 0 && host_start % cs == 0;
  /* Ascending and apart: the reader fills the clusters in order. */
  for (size_t r = 0; ok && r < nruns; r++) {
    double len = values[4 * r + 2], at = values[4 * r + 3];
    ok = values[4 * r] >= 0 && values[4 * r + 1] >= 0 && len >= 0 && at >= (r > 0 ? values[4 * r - 1] + values[4 * r - 2] : 0) && at + len <= 9007199254740992.0;
  }
  int64_t first_cluster = nruns > 0 ? (int64_t)values[3] / cs : 0;
  /* Every cluster touched counts from the first within an int32. */
  if (ok && nruns > 0) ok = ((int64_t)(values[4 * nruns - 1] + values[4 * nruns - 2]) / cs) - first_cluster < INT32_MAX;
  if (!ok) {
    napi_throw_type_error(env, "EINVAL",
                          "copyRunsPacked(dstFd, runs: Float64Array of ascending (srcFd, srcOffset, length, guestOffset) within 2^31 clusters, clusterSize: a power of two from 512 to 2 MiB, hostStart: a multiple of it, clusters: Int32Array, done)");
    return NULL;
  }
  struct engine *e = calloc(1, sizeof *e);
  if (e == NULL) return throw_errno(env, "copyRunsPacked", ENOMEM);
  e->dst_fd = (int)dst_fd;
  e->reserve = 1;
  e->cs = cs;
  e->host_start = host_start;
  e->first_cluster = first_cluster;
  e->out = out;
  e->cap = cap;
  e->nruns = nruns;
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
  e->runs = malloc(nruns * 4 * sizeof(double) + 1);
  ok = e->runs != NULL;
  for (int i = 0; ok && i < SLOTS; i++) {
    e->slots[i].buf = take_buffer();
    e->slots[i].guest = malloc((size_t)(CHUNK / cs) * sizeof(int64_t));
    e->slots[i].has_data = malloc((size_t)(CHUNK / cs));
    ok = e->slots[i].buf != NULL && e->slots[i].guest != NULL && e->slots[i].has_data != NULL;
  }
  if (!ok) {
    free_engine(e);
    return throw_errno(env, "copyRunsPacked", ENOMEM);
  }
  if (nruns > 0) memcpy(e->runs, values, nruns * 4 * sizeof(double));
  napi_value name;
  napi_create_string_utf8(env, "vdisk.copyRunsPacked", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, argv[5], 1, &e->done);
  napi_create_reference(env, argv[4], 1, &e->out_ref);
  if (napi_create_async_work(env, NULL, name, execute_packed, complete, e, &e->work) != napi_ok || napi_queue_async_work(env, e->work) != napi_ok) {
    napi_delete_reference(env, e->done);
    napi_delete_reference(env, e->out_ref);
    free_engine(e);
    return throw_errno(env, "copyRunsPacked", EAGAIN);
  }
  return NULL;
}

void copy_engine_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"copyRuns", NULL, copy_runs, NULL, NULL, NULL, napi_enumerable, NULL},
    {"copyRunsPacked", NULL, copy_runs_packed, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
