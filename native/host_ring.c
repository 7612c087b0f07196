/*
 * An io_uring of our own for O_DIRECT host files (cache=none, directsync).
 *
 * Why: through libuv's thread pool every 4 KiB O_DIRECT request pays two
 * thread wake-ups and a completion hop, about 30 µs of wall time on a 2 vCPU
 * machine, which capped vdisk at ~31,000 requests/s where QEMU reached
 * ~55,000. A ring lets the JS thread submit a request with one syscall and
 * collect every completion of a burst with none: the kernel signals an
 * eventfd, libuv polls it, and the completions are read from the shared
 * completion queue. Node's own UV_USE_IO_URING uses an SQPOLL ring whose
 * kernel thread competes for the two vCPUs (measured slower here at low
 * depth); a ring is plain unless opened polled, which host-ring.ts does only
 * for a second ring it uses while many requests are in flight.
 *
 * Requests that the kernel cannot start without blocking (an ext4 O_DIRECT
 * write that extends the file or is not block aligned) are handed by io_uring
 * to its own workers, so submission never blocks the JS thread for long.
 *
 * JS side: src/host/host-ring.ts. The ring holds no JS memory: callers keep
 * each buffer alive (and unmoved: WebAssembly memory) until its completion.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <node_api.h>
#include <uv.h>

#include "host_ring.h"

#if defined(__has_include)
#if __has_include(<linux/io_uring.h>) && defined(__NR_io_uring_setup)
#define HAVE_IO_URING 1
#include <linux/io_uring.h>
#endif
#endif

#ifdef HAVE_IO_URING

enum { OP_READ = 0, OP_WRITE = 1, OP_DATASYNC = 2 };

struct host_ring {
  int ring_fd;
  int event_fd;
  unsigned sq_entries;
  unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
  struct io_uring_sqe *sqes;
  unsigned *cq_head, *cq_tail, *cq_mask;
  struct io_uring_cqe *cqes;
  void *sq_map, *cq_map;
  size_t sq_map_len, cq_map_len, sqes_len;
  uv_poll_t poll;
  /* Before libuv blocks: wait briefly for completions by watching the queue (see on_prepare). */
  uv_prepare_t prep;
  uint64_t spin_max_ns; /* 0: never watch the queue */
  uint64_t spin_ns;     /* the current window, adapted between 0 and spin_max_ns */
  uint64_t wait_start;  /* when on_prepare began waiting with requests in flight (0: not waiting) */
  /* Whether to watch at all is measured (see measured_wait). */
  int wait_way;              /* WAIT_WATCH or WAIT_SLEEP: how the loop waits in the current block */
  uint64_t wait_t0;          /* when the loop began a measured wait for a completion (0: none) */
  uint64_t block_start;      /* the current block's first measured completion */
  unsigned block_waits;      /* measured completions in the current block (0: its clock has not started) */
  uint64_t mean_ns[2];       /* each way's last measured block: mean time from one completion to the next (0: not yet) */
  unsigned blocks_since_probe;
  int handles_open;  /* poll and prep, until libuv has closed each */
  napi_env env;
  napi_ref on_complete; /* JS function(count) */
  napi_ref results_ref; /* Int32Array: (tag, result) pairs */
  int32_t *results;
  size_t results_pairs;
  napi_async_context async_ctx;
  unsigned in_flight;
  int sqpoll;
  /* IORING_SETUP_COOP_TASKRUN: a completion does not interrupt the JS thread (see cq_ready) */
  int cooperative;
  unsigned *sq_flags;
  int closed;        /* ringClose ran (or the ring was collected unclosed) */
  int poll_closed;   /* libuv finished closing the poll handle */
  int external_gone; /* the JS handle was collected */
};

static int ring_setup(unsigned entries, struct io_uring_params *p) {
  return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int ring_enter(int fd, unsigned to_submit) {
  return (int)syscall(__NR_io_uring_enter, fd, to_submit, 0, 0, NULL, 0);
}

static int ring_wake(int fd) {
  return (int)syscall(__NR_io_uring_enter, fd, 0, 0, IORING_ENTER_SQ_WAKEUP, NULL, 0);
}

static int ring_register_eventfd(int fd, int efd) {
  return (int)syscall(__NR_io_uring_register, fd, IORING_REGISTER_EVENTFD, &efd, 1);
}

/* Releases the mappings and descriptors; safe to call twice. */
static void ring_unmap(struct host_ring *r) {
  if (r->sqes && r->sqes != MAP_FAILED) munmap(r->sqes, r->sqes_len);
  if (r->cq_map && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_map_len);
  if (r->sq_map && r->sq_map != MAP_FAILED) munmap(r->sq_map, r->sq_map_len);
  if (r->event_fd >= 0) close(r->event_fd);
  if (r->ring_fd >= 0) close(r->ring_fd);
  r->sqes = NULL;
  r->cq_map = NULL;
  r->sq_map = NULL;
  r->event_fd = -1;
  r->ring_fd = -1;
}

/* Drops the requests queued but not taken by the kernel (after a failed enter). */
static void ring_unqueue(struct host_ring *r) {
  unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
  unsigned dropped = *r->sq_tail - head;
  if (dropped == 0) return;
  __atomic_store_n(r->sq_tail, head, __ATOMIC_RELEASE);
  r->in_flight -= dropped;
  if (r->in_flight == 0) uv_unref((uv_handle_t *)&r->poll);
}

/* Sets up the ring and its eventfd; 0, or an errno with nothing left open. */
static int ring_init(struct host_ring *r, unsigned entries, int polled, int cooperative) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  r->ring_fd = -1;
  r->event_fd = -1;
  /*
   * A polled ring: a kernel thread takes requests off the queue, so submitting
   * costs the JS thread no syscall (and no run of ext4's direct-write path).
   * It idles after 2 ms without requests. Only a polled ring is made here:
   * the caller decides when one is worth a thread.
   */
  if (polled) {
    p.flags = IORING_SETUP_SQPOLL;
    p.sq_thread_idle = 2;
    r->ring_fd = ring_setup(entries, &p);
    if (r->ring_fd < 0) return errno;
    r->sqpoll = 1;
  }
  /*
   * A cooperative ring (not polled: there the kernel's thread runs the
   * completions). A request's completion is work that must run in the
   * submitting thread. By default the kernel forces it there at once: the JS
   * thread, if it is running (watching the queue, or running JS), gets an
   * inter-processor interrupt, which on a VM is an exit on each side. With
   * COOP_TASKRUN the work waits for the thread's next entry into the kernel
   * (any syscall, and libuv's sleep is one), or the thread is woken if it
   * sleeps; TASKRUN_FLAG marks the queue so a watch knows to enter
   * (cq_ready). Kernels before 5.19 refuse the flags: a plain ring then.
   */
  if (r->ring_fd < 0 && cooperative) {
    p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    r->ring_fd = ring_setup(entries, &p);
    if (r->ring_fd >= 0) r->cooperative = 1;
    else memset(&p, 0, sizeof p);
  }
  if (r->ring_fd < 0) r->ring_fd = ring_setup(entries, &p);
  if (r->ring_fd < 0) return errno;
  int err = 0;
  r->sq_entries = p.sq_entries;
  r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (p.features & IORING_FEAT_SINGLE_MMAP) {
    if (r->cq_map_len > r->sq_map_len) r->sq_map_len = r->cq_map_len;
    r->cq_map_len = r->sq_map_len;
  }
  r->sq_map = mmap(NULL, r->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->ring_fd, IORING_OFF_SQ_RING);
  if (r->sq_map == MAP_FAILED) goto fail;
  if (p.features & IORING_FEAT_SINGLE_MMAP) {
    r->cq_map = r->sq_map;
  } else {
    r->cq_map = mmap(NULL, r->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->ring_fd, IORING_OFF_CQ_RING);
    if (r->cq_map == MAP_FAILED) goto fail;
  }
  r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
  r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->ring_fd, IORING_OFF_SQES);
  if (r->sqes == MAP_FAILED) goto fail;
  char *sq = r->sq_map, *cq = r->cq_map;
  r->sq_head = (unsigned *)(sq + p.sq_off.head);
  r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  r->sq_array = (unsigned *)(sq + p.sq_off.array);
  r->sq_flags = (unsigned *)(sq + p.sq_off.flags);
  r->cq_head = (unsigned *)(cq + p.cq_off.head);
  r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  r->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r->event_fd < 0) goto fail;
  if (ring_register_eventfd(r->ring_fd, r->event_fd) < 0) goto fail;
  return 0;
fail:
  err = errno ? errno : EIO;
  ring_unmap(r);
  return err;
}

static void ring_free(struct host_ring *r) {
  ring_unmap(r);
  free(r);
}

/* The struct lives until both the poll handle is closed and the JS handle is collected. */
static void on_poll_closed(uv_handle_t *h) {
  struct host_ring *r = h->data;
  if (--r->handles_open > 0) return;
  r->poll_closed = 1;
  if (r->external_gone) ring_free(r);
  else ring_unmap(r);
}

/* Hands the completions gathered so far to JS. */
static void deliver(struct host_ring *r, size_t count) {
  napi_env env = r->env;
  napi_value fn, recv, argv[1];
  if (napi_get_reference_value(env, r->on_complete, &fn) != napi_ok || fn == NULL) return;
  /* make_callback wants an object receiver; the function ignores `this`. */
  napi_get_global(env, &recv);
  napi_create_uint32(env, (uint32_t)count, &argv[0]);
  /* make_callback drains the microtask queue afterwards, so promises resolved
     by the completions run before libuv polls again. */
  napi_value ignored;
  if (napi_make_callback(env, r->async_ctx, recv, fn, 1, argv, &ignored) == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
}

/* Hands every completion in the queue to JS, a results buffer at a time. */
static void reap(struct host_ring *r) {
  napi_handle_scope scope;
  napi_open_handle_scope(r->env, &scope);
  for (;;) {
    unsigned head = *r->cq_head;
    unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    if (head == tail) break;
    size_t n = 0;
    while (head != tail && n < r->results_pairs) {
      struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
      r->results[2 * n] = (int32_t)c->user_data;
      r->results[2 * n + 1] = c->res;
      n++;
      head++;
    }
    __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
    r->in_flight -= (unsigned)n;
    if (r->in_flight == 0) uv_unref((uv_handle_t *)&r->poll);
    deliver(r, n);
    if (r->closed) break;
  }
  napi_close_handle_scope(r->env, scope);
}

static void drain_eventfd(struct host_ring *r) {
  uint64_t ticks;
  while (read(r->event_fd, &ticks, sizeof ticks) < 0 && errno == EINTR) {
  }
}

static void adapt_window(struct host_ring *r);
static void measured_wait(struct host_ring *r, uint64_t now);
static uint64_t now_ns(void);

static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  (void)status;
  struct host_ring *r = h->data;
  if (r->closed) return;
  adapt_window(r);
  if (r->wait_t0 != 0) measured_wait(r, now_ns());
  drain_eventfd(r);
  reap(r);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/*
 * Whether the completion queue has entries. On a cooperative ring a completion
 * may be waiting as work for this thread instead (the queue's TASKRUN flag):
 * entering the kernel runs it, which posts the entry.
 */
static int cq_ready(struct host_ring *r) {
  if (*r->cq_head != __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) return 1;
  if (!r->cooperative || !(__atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_TASKRUN)) return 0;
  syscall(__NR_io_uring_enter, r->ring_fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0);
  return *r->cq_head != __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
}

/* Total time one prepare callback may spend handing completions over, so other events wait at most this long. */
#define SPIN_BUDGET_NS 500000u
/* The smallest window worth watching; below it the window is 0 until a fast completion grows it again. */
#define SPIN_MIN_NS 8000u

/*
 * Watching the queue pays on some machines and costs on others, and which one
 * this is cannot be read off anything: on one 2 vCPU VM it made depth-1
 * requests 30-40% faster, on another of the same kind 20% slower (a vCPU that
 * spins is one the hypervisor cannot give to the virtual disk's work), on a
 * third 15-35% faster. So the ring measures: the waits come in blocks of
 * WAIT_BLOCK, each block either watching (within the adaptive window) or
 * sleeping at once, and the mean time from one completion to the next over
 * the block decides. Not the wait alone: watching always shortens the wait
 * itself (32-46 µs against 45-65 µs on the third machine), but where it slows
 * the rest of a request's way (the submission, the device) the requests come
 * no faster. A block whose requests all ended (the loop idle with nothing in
 * flight) starts its clock again. The better way gets WAIT_PROBE_EVERY
 * blocks, then the other one block, so a change of load or device is noticed.
 */
enum { WAIT_SLEEP = 0, WAIT_WATCH = 1 };
#define WAIT_BLOCK 32u
#define WAIT_PROBE_EVERY 8u

/* A measured wait (begun at wait_t0) ended with a completion at `now`. */
static void measured_wait(struct host_ring *r, uint64_t now) {
  r->wait_t0 = 0;
  if (r->block_waits++ == 0) {
    r->block_start = now;
    return;
  }
  if (r->block_waits <= WAIT_BLOCK) return;
  uint64_t mean = (now - r->block_start) / WAIT_BLOCK;
  r->block_waits = 0;
  r->mean_ns[r->wait_way] = mean > 0 ? mean : 1;
  int other = r->wait_way == WAIT_WATCH ? WAIT_SLEEP : WAIT_WATCH;
  if (r->mean_ns[other] == 0) {
    r->wait_way = other;
    return;
  }
  int better = r->mean_ns[WAIT_WATCH] < r->mean_ns[WAIT_SLEEP] ? WAIT_WATCH : WAIT_SLEEP;
  if (r->wait_way != better || ++r->blocks_since_probe >= WAIT_PROBE_EVERY) {
    /* Back from a probe (or the better way changed), or time for one. */
    r->wait_way = r->wait_way != better ? better : other;
    r->blocks_since_probe = 0;
  }
}

/* Whether any handle of the loop has an event waiting (its epoll descriptor is readable then). */
static int loop_has_events(uv_loop_t *loop) {
  struct pollfd p = {.fd = uv_backend_fd(loop), .events = POLLIN, .revents = 0};
  return poll(&p, 1, 0) > 0;
}

/* How often a watch looks at the rest of the loop (a socket's request must not wait for the whole window). */
#define SPIN_LOOK_NS 10000u

/*
 * Runs once per loop iteration, just before libuv would block for events.
 * With requests in flight and nothing else due, it starts a measured wait
 * (see measured_wait); in a block that watches, it watches the completion
 * queue for up to spin_ns instead of sleeping: a fast device's completion is
 * then handled without the sleep and wake-up of the eventfd path (30-60 µs of
 * a 4 KiB direct write's ~150 µs at depth 1 on a 2 vCPU VM). QEMU's event
 * loop polls its handlers the same way (aio_poll's adaptive polling). A
 * completion that comes later takes the eventfd path as before.
 */
static void on_prepare(uv_prepare_t *h) {
  struct host_ring *r = h->data;
  r->wait_start = 0;
  r->wait_t0 = 0;
  if (r->in_flight == 0) r->block_waits = 0;
  if (r->closed || r->in_flight == 0 || r->spin_max_ns == 0) return;
  uint64_t start = now_ns();
  for (;;) {
    if (uv_backend_timeout(h->loop) == 0) return;
    uint64_t t0 = now_ns(), looked = t0;
    r->wait_t0 = t0;
    if (r->wait_way == WAIT_SLEEP) return;
    while (!cq_ready(r)) {
      uint64_t t = now_ns();
      if (t - t0 >= r->spin_ns) {
        /* Not in time: libuv blocks now; on_readable learns how long the wait really was. */
        r->wait_start = t0;
        return;
      }
      if (t - looked >= SPIN_LOOK_NS) {
        if (loop_has_events(h->loop)) {
          /* Something else ends this wait: not a measure of either way. */
          r->wait_t0 = 0;
          return;
        }
        looked = t;
      }
    }
    measured_wait(r, now_ns());
    drain_eventfd(r);
    reap(r);
    if (r->closed || r->in_flight == 0 || now_ns() - start > SPIN_BUDGET_NS) return;
  }
}

/*
 * After a wait that the window did not cover: a completion that came within
 * spin_max_ns of the start of the wait widens the window (doubling, as QEMU's
 * poll-grow), one that came later halves it, so a slow device is not watched
 * for nothing.
 */
static void adapt_window(struct host_ring *r) {
  if (r->wait_start == 0) return;
  uint64_t waited = now_ns() - r->wait_start;
  r->wait_start = 0;
  if (waited <= r->spin_max_ns) {
    uint64_t grown = r->spin_ns < SPIN_MIN_NS ? SPIN_MIN_NS : 2 * r->spin_ns;
    r->spin_ns = grown > r->spin_max_ns ? r->spin_max_ns : grown;
  } else {
    r->spin_ns /= 2;
    if (r->spin_ns < SPIN_MIN_NS) r->spin_ns = 0;
  }
}

static napi_value throw_code(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

static struct host_ring *get_ring(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL) {
    throw_code(env, "EINVAL", "not a host ring");
    return NULL;
  }
  struct host_ring *r = p;
  if (r->closed) {
    throw_code(env, "EBADF", "host ring is closed");
    return NULL;
  }
  return r;
}

/* Reads up to `max` arguments into argv; the ring is argv[0]. NULL (with a JS error) when fewer than `min` came or the ring is bad. */
static struct host_ring *ring_call(napi_env env, napi_callback_info info, napi_value *argv, size_t max, size_t min, const char *usage) {
  size_t argc = max;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < min) {
    throw_code(env, "EINVAL", usage);
    return NULL;
  }
  for (size_t i = argc; i < max; i++) napi_get_undefined(env, &argv[i]);
  return get_ring(env, argv[0]);
}

static void finalize_ring(napi_env env, void *data, void *hint) {
  (void)hint;
  struct host_ring *r = data;
  r->external_gone = 1;
  if (!r->closed) {
    /* Collected without ringClose: nothing can be in flight (the JS side holds
       the handle while it waits), so tear down here. */
    r->closed = 1;
    napi_delete_reference(env, r->on_complete);
    napi_delete_reference(env, r->results_ref);
    uv_poll_stop(&r->poll);
    uv_prepare_stop(&r->prep);
    uv_close((uv_handle_t *)&r->poll, on_poll_closed);
    uv_close((uv_handle_t *)&r->prep, on_poll_closed);
  } else if (r->poll_closed) {
    ring_free(r);
  }
}

/* ringOpen(entries, results: Int32Array, onComplete, polled?, spinMicros?, cooperative?) → ring, or null without io_uring. */
static napi_value ring_open(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], result;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool polled = false;
  if (argc >= 4 && napi_get_value_bool(env, argv[3], &polled) != napi_ok) {
    return throw_code(env, "EINVAL", "ringOpen: polled must be a boolean");
  }
  uint32_t spin_us = 0;
  if (argc >= 5 && (napi_get_value_uint32(env, argv[4], &spin_us) != napi_ok || spin_us > 10000)) {
    return throw_code(env, "EINVAL", "ringOpen: spinMicros must be 0..10000");
  }
  bool cooperative = false;
  if (argc >= 6 && napi_get_value_bool(env, argv[5], &cooperative) != napi_ok) {
    return throw_code(env, "EINVAL", "ringOpen: cooperative must be a boolean");
  }
  uint32_t entries = 0;
  napi_typedarray_type type;
  size_t length, byte_offset;
  void *data;
  napi_value ab;
  bool is_ta = false;
  napi_valuetype fn_type;
  if (argc < 3 || napi_get_value_uint32(env, argv[0], &entries) != napi_ok || entries == 0 || entries > 4096 ||
      napi_is_typedarray(env, argv[1], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, argv[1], &type, &length, &data, &ab, &byte_offset) != napi_ok ||
      type != napi_int32_array || length < 2 || napi_typeof(env, argv[2], &fn_type) != napi_ok || fn_type != napi_function) {
    return throw_code(env, "EINVAL", "ringOpen(entries 1..4096, results: Int32Array, onComplete: function, polled?: boolean, spinMicros?: number)");
  }
  struct host_ring *r = calloc(1, sizeof *r);
  if (r == NULL) return throw_code(env, "ENOMEM", "host ring: out of memory");
  if (ring_init(r, entries, polled, cooperative) != 0) {
    /* No io_uring here (old kernel, seccomp, io_uring_disabled), or no polling thread allowed: callers fall back. */
    free(r);
    napi_get_null(env, &result);
    return result;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &r->poll, r->event_fd) != 0) {
    ring_free(r);
    return throw_code(env, "EIO", "host ring: cannot poll its eventfd");
  }
  r->poll.data = r;
  uv_poll_start(&r->poll, UV_READABLE, on_readable);
  uv_unref((uv_handle_t *)&r->poll);
  uv_prepare_init(loop, &r->prep);
  r->prep.data = r;
  uv_prepare_start(&r->prep, on_prepare);
  uv_unref((uv_handle_t *)&r->prep);
  r->handles_open = 2;
  r->spin_max_ns = r->sqpoll ? 0 : (uint64_t)spin_us * 1000u;
  r->spin_ns = r->spin_max_ns;
  r->wait_way = r->spin_max_ns > 0 ? WAIT_WATCH : WAIT_SLEEP;
  r->env = env;
  r->results = data;
  r->results_pairs = length / 2;
  napi_create_reference(env, argv[2], 1, &r->on_complete);
  napi_create_reference(env, argv[1], 1, &r->results_ref);
  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "vdisk:host-ring", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &r->async_ctx);
  napi_create_external(env, r, finalize_ring, NULL, &result);
  return result;
}

enum { SUBMIT_DEFER = 1, SUBMIT_ASYNC = 2 };

/*
 * ringSubmit(ring, op, fd, buf: Uint8Array | null, offset, tag, flags) — queues
 * one request; without SUBMIT_DEFER it is submitted at once, with it the next
 * ringEnter submits every queued request in one syscall. SUBMIT_ASYNC sends it
 * straight to io_uring's workers instead of first trying it inline.
 */
static napi_value ring_submit(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  struct host_ring *r = ring_call(env, info, argv, 7, 6, "ringSubmit(ring, op, fd, buf, offset, tag, flags)");
  if (r == NULL) return NULL;
  uint32_t op, tag;
  int32_t fd;
  int64_t offset;
  if (napi_get_value_uint32(env, argv[1], &op) != napi_ok || op > OP_DATASYNC ||
      napi_get_value_int32(env, argv[2], &fd) != napi_ok || fd < 0 ||
      napi_get_value_int64(env, argv[4], &offset) != napi_ok || offset < 0 ||
      napi_get_value_uint32(env, argv[5], &tag) != napi_ok) {
    return throw_code(env, "EINVAL", "ringSubmit: bad op, fd, offset or tag");
  }
  uint32_t flags = 0;
  napi_valuetype flags_type;
  napi_typeof(env, argv[6], &flags_type);
  if (flags_type != napi_undefined && napi_get_value_uint32(env, argv[6], &flags) != napi_ok) return throw_code(env, "EINVAL", "ringSubmit: bad flags");
  void *data = NULL;
  size_t length = 0;
  if (op != OP_DATASYNC) {
    napi_typedarray_type type;
    napi_value ab;
    size_t byte_offset;
    bool is_ta = false;
    if (napi_is_typedarray(env, argv[3], &is_ta) != napi_ok || !is_ta ||
        napi_get_typedarray_info(env, argv[3], &type, &length, &data, &ab, &byte_offset) != napi_ok ||
        type != napi_uint8_array || length > 0x7fffffff) {
      return throw_code(env, "EINVAL", "ringSubmit: buffer must be a Uint8Array under 2 GiB");
    }
  }
  unsigned tail = *r->sq_tail;
  unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
  /* The JS side bounds requests in flight by the ring's size; this is the backstop. */
  if (tail - head >= r->sq_entries || r->in_flight >= r->sq_entries) return throw_code(env, "EAGAIN", "host ring is full");
  unsigned idx = tail & *r->sq_mask;
  struct io_uring_sqe *s = &r->sqes[idx];
  memset(s, 0, sizeof *s);
  s->fd = fd;
  s->user_data = tag;
  if (op == OP_DATASYNC) {
    s->opcode = IORING_OP_FSYNC;
    s->fsync_flags = IORING_FSYNC_DATASYNC;
  } else {
    s->opcode = op == OP_READ ? IORING_OP_READ : IORING_OP_WRITE;
    s->addr = (uint64_t)(uintptr_t)data;
    s->len = (uint32_t)length;
    s->off = (uint64_t)offset;
  }
  if (flags & SUBMIT_ASYNC) s->flags |= IOSQE_ASYNC;
  r->sq_array[idx] = idx;
  __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
  if (r->in_flight++ == 0) uv_ref((uv_handle_t *)&r->poll);
  if (flags & SUBMIT_DEFER) return NULL;
  int n;
  do {
    n = ring_enter(r->ring_fd, 1);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    /* Not consumed: take the entry back so the queue stays as the JS side knows it. */
    int err = errno;
    ring_unqueue(r);
    return throw_code(env, err == EAGAIN || err == EBUSY ? "EAGAIN" : "EIO", "io_uring_enter failed");
  }
  return NULL;
}

/*
 * ringEnter(ring) → how many queued requests the kernel took (the rest stay
 * queued for the next call), or a negated errno when it took none: those are
 * then dropped from the queue and the caller fails them.
 */
static napi_value ring_enter_js(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  struct host_ring *r = ring_call(env, info, argv, 1, 1, "ringEnter(ring)");
  if (r == NULL) return NULL;
  unsigned queued = *r->sq_tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
  int n = 0;
  if (r->sqpoll) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(r->sq_flags, __ATOMIC_RELAXED) & IORING_SQ_NEED_WAKEUP) ring_wake(r->ring_fd);
    /* The kernel's thread takes every queued request (some already have): all count as taken. */
    (void)queued;
    napi_create_int32(env, INT32_MAX, &result);
    return result;
  }
  if (queued > 0) {
    do {
      n = ring_enter(r->ring_fd, queued);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      n = -errno;
      ring_unqueue(r);
    }
  }
  napi_create_int32(env, n, &result);
  return result;
}

/* ringClose(ring): the JS side calls it once nothing is in flight. */
static napi_value ring_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct host_ring *r = ring_call(env, info, argv, 1, 1, "ringClose(ring)");
  if (r == NULL) return NULL;
  if (r->in_flight != 0) return throw_code(env, "EBUSY", "host ring still has requests in flight");
  r->closed = 1;
  napi_delete_reference(env, r->on_complete);
  napi_delete_reference(env, r->results_ref);
  napi_async_destroy(env, r->async_ctx);
  uv_poll_stop(&r->poll);
  uv_prepare_stop(&r->prep);
  uv_close((uv_handle_t *)&r->poll, on_poll_closed);
  uv_close((uv_handle_t *)&r->prep, on_poll_closed);
  return NULL;
}

/* ringWaits(ring) → [watching now (0/1), mean time between completions watching (ns), the same sleeping (ns), cooperative (0/1)]; a mean is 0 until measured. */
static napi_value ring_waits(napi_env env, napi_callback_info info) {
  napi_value argv[1], out, v;
  struct host_ring *r = ring_call(env, info, argv, 1, 1, "ringWaits(ring)");
  if (r == NULL) return NULL;
  napi_create_array_with_length(env, 4, &out);
  napi_create_uint32(env, r->wait_way == WAIT_WATCH ? 1 : 0, &v);
  napi_set_element(env, out, 0, v);
  napi_create_double(env, (double)r->mean_ns[WAIT_WATCH], &v);
  napi_set_element(env, out, 1, v);
  napi_create_double(env, (double)r->mean_ns[WAIT_SLEEP], &v);
  napi_set_element(env, out, 2, v);
  napi_create_uint32(env, r->cooperative ? 1 : 0, &v);
  napi_set_element(env, out, 3, v);
  return out;
}

void host_ring_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"ringWaits", NULL, ring_waits, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ringOpen", NULL, ring_open, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ringSubmit", NULL, ring_submit, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ringEnter", NULL, ring_enter_js, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ringClose", NULL, ring_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

#else

/* Built without io_uring headers: the functions are absent and callers use the thread pool. */
void host_ring_register(napi_env env, napi_value exports) {
  (void)env;
  (void)exports;
}

#endif
