/*
 * The floor of a convert on this machine, for reference: copies the data of a
 * raw file (found with SEEK_DATA / SEEK_HOLE) to the same offsets of a new
 * sparse file, with plain pread and pwrite of 1 MiB on one thread, and nothing
 * else: no image format, no zero detection, no process start beyond a C
 * program's. bench/run.mjs builds it with cc and times it next to the convert
 * rows; a convert can only approach this from above.
 *
 *   copy-floor SRC DST
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STEP (1 << 20)

static int fail(const char *what, const char *file) {
  fprintf(stderr, "copy-floor: %s %s: %s\n", what, file, strerror(errno));
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: copy-floor SRC DST\n");
    return 2;
  }
  int src = open(argv[1], O_RDONLY);
  if (src < 0) return fail("open", argv[1]);
  int dst = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (dst < 0) return fail("create", argv[2]);
  struct stat st;
  if (fstat(src, &st) != 0) return fail("stat", argv[1]);
  if (ftruncate(dst, st.st_size) != 0) return fail("truncate", argv[2]);
  char *buf = NULL;
  if (posix_memalign((void **)&buf, 4096, STEP) != 0) return fail("allocate a buffer for", argv[1]);
  for (off_t pos = 0; pos < st.st_size;) {
    off_t data = lseek(src, pos, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break; /* only a hole is left */
    if (data < 0) return fail("seek data in", argv[1]);
    off_t hole = lseek(src, data, SEEK_HOLE);
    if (hole < 0) return fail("seek a hole in", argv[1]);
    for (off_t at = data; at < hole;) {
      size_t n = hole - at < STEP ? (size_t)(hole - at) : STEP;
      ssize_t got = pread(src, buf, n, at);
      if (got <= 0) return fail("read", argv[1]);
      for (ssize_t put = 0; put < got;) {
        ssize_t w = pwrite(dst, buf + put, (size_t)(got - put), at + put);
        if (w <= 0) return fail("write", argv[2]);
        put += w;
      }
      at += got;
    }
    pos = hole;
  }
  if (close(dst) != 0) return fail("close", argv[2]);
  return 0;
}
