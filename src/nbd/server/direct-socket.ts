/**
 * The descriptor of a plain (not TLS) socket, for replies the server sends to
 * it itself (sendfile from a host file's page cache) when Node's stream has
 * nothing queued. Node has no public call for either fact, so both come from
 * the socket's libuv handle (`fd`, `writeQueueSize`: the bytes libuv still
 * holds); where the handle lacks them the socket is not used directly.
 */
import type { Socket } from 'node:net';
import { nativeHost } from '../../host/native.js';

/**
 * What a unix socket's send buffer is raised to. Linux's default (208 KiB) is
 * less than one 256 KiB reply of nbdcopy, so each reply waited for the client
 * to drain the one before; with 4 MiB a client's sequential read of 512 MiB
 * took 0.30-0.33 s instead of 0.37-0.47 s (qemu-nbd 0.28-0.34 s), and most
 * replies can leave by sendfile. The kernel caps it at net.core.wmem_max.
 */
const UNIX_SEND_BUFFER_BYTES = 4 * 1024 * 1024;

interface HandleView {
  readonly fd?: unknown;
  readonly writeQueueSize?: unknown;
}

export class DirectSocket {
  readonly #socket: Socket;

  private constructor(socket: Socket) {
    this.#socket = socket;
  }

  /**
   * Direct access to `socket`, or null: TLS, a handle without a descriptor, no
   * addon, or `VDISK_NO_SENDFILE=1`. Raises a unix socket's send buffer.
   */
  static of(socket: Socket, env: NodeJS.ProcessEnv = process.env): DirectSocket | null {
    const native = nativeHost();
    const fd = fdOf(socket);
    if (fd === null || !native) return null;
    try {
      native.enlargeUnixSendBuffer?.(fd, UNIX_SEND_BUFFER_BYTES);
    } catch {
      // A socket that refuses the option keeps its size.
    }
    if (env.VDISK_NO_SENDFILE === '1' || !native.sendFileNoWait) return null;
    return new DirectSocket(socket);
  }

  /** The descriptor when nothing is queued on the socket (Node's stream and libuv both empty), else null. */
  idleFd(): number | null {
    const s = this.#socket;
    if (s.destroyed || s.writableLength !== 0 || s.writableCorked !== 0) return null;
    const handle = handleOf(s);
    if (!handle || handle.writeQueueSize !== 0 || typeof handle.fd !== 'number' || handle.fd < 0) return null;
    return handle.fd;
  }
}

function handleOf(socket: Socket): HandleView | null {
  const handle = (socket as unknown as { readonly _handle?: HandleView | null })._handle;
  return handle ?? null;
}

function fdOf(socket: Socket): number | null {
  const fd = handleOf(socket)?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}
