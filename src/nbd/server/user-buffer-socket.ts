/**
 * Turns an accepted socket's reads to buffers the server supplies. Node does
 * this for sockets it creates with the `onread` option; an accepted socket
 * takes no options, so the same three settings are made on it here (its
 * `kBuffer*` properties and the handle's `useUserBuffer`). Where this Node
 * lacks any of them the socket is left as it was and the caller reads it
 * through its stream.
 *
 * Why: through the stream, libuv reads at most 64 KiB per call into a fresh
 * buffer each time, so a 256 KiB WRITE arrives in four or five buffers that
 * are gathered into one (a copy) and then collected; in a sequential write of
 * 512 MiB that was 50-90 ms of the server's 0.45 s. Reads into the server's
 * own buffers take whatever the socket holds in one call, land next to each
 * other, and nothing is allocated per read.
 */
import type { Socket } from 'node:net';

/**
 * Called with the count of bytes the socket put at the start of the buffer
 * last supplied; returns false to stop reading until the socket is resumed.
 */
export type UserBufferReceiver = (nread: number) => boolean;

interface UserBufferHandle {
  readonly useUserBuffer?: unknown;
}

/** The socket's own properties for `onread`, found by their names (Node keeps them as unexported symbols). */
function onreadSymbols(socket: Socket): { buffer: symbol; callback: symbol; generator: symbol } | null {
  const byName = new Map<string, symbol>();
  for (const s of Object.getOwnPropertySymbols(socket)) if (s.description !== undefined) byName.set(s.description, s);
  const buffer = byName.get('kBuffer');
  const callback = byName.get('kBufferCb');
  const generator = byName.get('kBufferGen');
  return buffer && callback && generator ? { buffer, callback, generator } : null;
}

/**
 * Makes every later read of `socket` land in the buffer `next()` returns
 * (called once now and once after each read), and reports it to `receive`.
 * Returns false, with nothing changed, when this Node does not allow it or the
 * socket's stream still holds bytes (they would come out of order).
 * The socket is left paused: `resume()` starts the reads.
 */
export function readIntoUserBuffers(socket: Socket, next: () => Uint8Array, receive: UserBufferReceiver): boolean {
  const handle = (socket as unknown as { readonly _handle?: UserBufferHandle | null })._handle;
  const symbols = onreadSymbols(socket);
  if (!handle || typeof handle.useUserBuffer !== 'function' || symbols === null) return false;
  socket.pause();
  if (socket.readableLength > 0 || socket.destroyed) return false;
  const first = next();
  const target = socket as unknown as Record<symbol, unknown>;
  target[symbols.buffer] = first;
  target[symbols.generator] = next;
  target[symbols.callback] = (nread: number): boolean => receive(nread);
  (handle.useUserBuffer as (this: UserBufferHandle, buf: Uint8Array) => void).call(handle, first);
  return true;
}
