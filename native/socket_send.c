/*
 * A reply header and then a range of a file, sent to a stream socket without
 * the data passing through user memory: send(2) for the header, sendfile(2)
 * for the data. On Linux a unix or TCP socket then takes references to the
 * file's page-cache pages (MSG_SPLICE_PAGES) instead of copying them, so a
 * READ served this way costs one copy (the client's receive) where a read
 * into a buffer and a write out of it cost three.
 *
 * sendFileNoWait(socketFd, header, fileFd, offset, length) runs on the JS
 * thread and never waits: the socket is non-blocking (libuv made it so), and
 * the call stops at the first EAGAIN. It returns how many bytes of header and
 * data the socket took, in order: all of them, or fewer when the socket is full
 * or the file ends before offset + length (the caller sends the rest its own
 * way). A socket error (EPIPE, ECONNRESET, ...) throws with the errno's name
 * as the code.
 *
 * enlargeUnixSendBuffer(socketFd, bytes) raises SO_SNDBUF of a unix-domain
 * socket to `bytes` (the kernel caps it at net.core.wmem_max) and returns the
 * size the kernel reports afterwards; for any other socket it changes nothing
 * and returns -1 (TCP sizes its buffers itself, and a fixed SO_SNDBUF would
 * turn that off).
 */
#include <errno.h>
#include <stdint.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <node_api.h>

#include "copy_range.h"
#include "socket_send.h"

static napi_value send_file_nowait(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int64_t sock, fd, offset, length;
  void *header;
  size_t header_length;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!get_int(env, argv, argc, 0, "socketFd", &sock) || !get_bytes(env, argv, argc, 1, "header", &header, &header_length) ||
      !get_int(env, argv, argc, 2, "fileFd", &fd) || !get_int(env, argv, argc, 3, "offset", &offset) ||
      !get_int(env, argv, argc, 4, "length", &length))
    return NULL;
  size_t sent = 0;
  while (sent < header_length) {
    /* MSG_MORE: the data follows at once, so over TCP header and data share packets. */
    ssize_t r = send((int)sock, (char *)header + sent, header_length - sent, MSG_DONTWAIT | MSG_NOSIGNAL | (length > 0 ? MSG_MORE : 0));
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return make_number(env, (int64_t)sent);
      return throw_errno(env, "send", errno);
    }
    sent += (size_t)r;
  }
  off_t at = (off_t)offset;
  int64_t done = 0;
  while (done < length) {
    ssize_t r = sendfile((int)sock, (int)fd, &at, (size_t)(length - done));
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      return throw_errno(env, "sendfile", errno);
    }
    if (r == 0) break; /* the file ends here */
    done += r;
  }
  return make_number(env, (int64_t)sent + done);
}

static napi_value enlarge_unix_send_buffer(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t sock, bytes;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!get_int(env, argv, argc, 0, "socketFd", &sock) || !get_int(env, argv, argc, 1, "bytes", &bytes)) return NULL;
  int domain = 0;
  socklen_t len = sizeof domain;
  if (getsockopt((int)sock, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return throw_errno(env, "getsockopt(SO_DOMAIN)", errno);
  if (domain != AF_UNIX) return make_number(env, -1);
  int want = bytes > INT32_MAX / 2 ? INT32_MAX / 2 : (int)bytes;
  int have = 0;
  len = sizeof have;
  if (getsockopt((int)sock, SOL_SOCKET, SO_SNDBUF, &have, &len) != 0) return throw_errno(env, "getsockopt(SO_SNDBUF)", errno);
  if (have < want && setsockopt((int)sock, SOL_SOCKET, SO_SNDBUF, &want, sizeof want) != 0) return throw_errno(env, "setsockopt(SO_SNDBUF)", errno);
  len = sizeof have;
  if (getsockopt((int)sock, SOL_SOCKET, SO_SNDBUF, &have, &len) != 0) return throw_errno(env, "getsockopt(SO_SNDBUF)", errno);
  return make_number(env, have);
}

void socket_send_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"sendFileNoWait", NULL, send_file_nowait, NULL, NULL, NULL, napi_enumerable, NULL},
    {"enlargeUnixSendBuffer", NULL, enlarge_unix_send_buffer, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
