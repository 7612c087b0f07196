/**
 * Buffers whose first byte is on a page boundary.
 *
 * Node's ArrayBuffers come from malloc and start 16 bytes into a page. The
 * kernel's copy between such a buffer and the page cache then runs unaligned:
 * measured here, a 1 MiB page-cache read into one took about twice as long as
 * into a page-aligned one. A WebAssembly memory is mapped by V8's page
 * allocator, so its buffer starts on a page (64 KiB wasm pages). O_DIRECT
 * bounce buffers come from here too (host/direct-file.ts): ext4 treats direct
 * I/O from memory that is not block aligned as unaligned and serialises it.
 */
const WASM_PAGE = 65536;

/** The compiler's lib has no WebAssembly types (no DOM lib); Node has the global. */
interface WasmMemoryConstructor {
  new (descriptor: { initial: number; maximum: number }): { readonly buffer: ArrayBuffer };
}

/** `length` zeroed bytes starting on a page boundary (not resizable, not shared). */
export function pageAlignedBytes(length: number): Uint8Array {
  const pages = Math.max(1, Math.ceil(length / WASM_PAGE));
  const Memory = (globalThis as unknown as { WebAssembly: { Memory: WasmMemoryConstructor } }).WebAssembly.Memory;
  return new Uint8Array(new Memory({ initial: pages, maximum: pages }).buffer, 0, length);
}
