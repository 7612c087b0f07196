/**
 * Runs of plain data clusters that follow each other on the host, in a
 * standard L2 table's bytes: where such a run ends (block status, a convert's
 * listing) and its entries written (the bulk write). A convert raises V8's
 * tier-up budget, so these loops run interpreted over every entry of a disk:
 * both keep offsets in 16-bit limbs, small integers all, where decoding or
 * encoding a whole entry made heap numbers (offsets and flag words pass 2^30).
 * Single entries are coded in l2-entry.ts.
 */

/**
 * Where a run of plain data clusters that follow each other on the host ends,
 * in a standard L2 table's bytes: entry `first` must be plain data (checked by
 * `plainDataOffset`); each later entry before `end` continues the run when it
 * equals the one before plus one cluster, the COPIED flag aside. Such an entry
 * is plain data too: the addition leaves its flags and reserved bits as they
 * were (an offset of 2^53 or more ends the run, as `plainDataOffset` refuses it).
 * Returns the index after the run's last entry.
 *
 * Block status and the bulk copy's listing walk every entry of a disk while
 * V8 still interprets them (a convert raises the tier-up budget): here the
 * entry is compared in 16-bit limbs, small integers all, where decoding it
 * made a heap number per word (offsets and flag words pass 2^30).
 */
export function plainRunEnd(table: Uint8Array, first: number, end: number, clusterBits: number): number {
  // The cluster size is one bit of limb 3 (bits 0-15) or of limb 2 (bits 16-31).
  const inLimb3 = clusterBits < 16;
  const add = 1 << (clusterBits & 15);
  let at = first * 8;
  let w0 = (((table[at] ?? 0) & 0x7f) << 8) | (table[at + 1] ?? 0);
  let w1 = ((table[at + 2] ?? 0) << 8) | (table[at + 3] ?? 0);
  let w2 = ((table[at + 4] ?? 0) << 8) | (table[at + 5] ?? 0);
  let w3 = ((table[at + 6] ?? 0) << 8) | (table[at + 7] ?? 0);
  for (let i = first + 1; i < end; i++) {
    if (inLimb3) {
      w3 += add;
      if (w3 > 0xffff) {
        w3 -= 0x10000;
        w2++;
      }
    } else w2 += add;
    if (w2 > 0xffff) {
      w2 -= 0x10000;
      w1++;
    }
    if (w1 > 0xffff) {
      w1 -= 0x10000;
      w0++;
    }
    // Bits 53 and up of the offset (and the flags above it) stay clear.
    if (w0 > 0x1f) return i;
    at += 8;
    if (
      (table[at + 7] ?? 0) !== (w3 & 0xff) ||
      (table[at + 6] ?? 0) !== w3 >> 8 ||
      (table[at + 5] ?? 0) !== (w2 & 0xff) ||
      (table[at + 4] ?? 0) !== w2 >> 8 ||
      (table[at + 3] ?? 0) !== (w1 & 0xff) ||
      (table[at + 2] ?? 0) !== w1 >> 8 ||
      (table[at + 1] ?? 0) !== (w0 & 0xff) ||
      ((table[at] ?? 0) & 0x7f) !== w0 >> 8
    ) {
      return i;
    }
  }
  return end;
}

/**
 * Stores the standard (not extended) L2 entries of clusters laid one after
 * another on the host from `hostOffset`, COPIED set: what writeL2Entry stores
 * for { kind: 'normal', copied: true }, without its objects and BigInts. As in
 * plainRunEnd, the offset is kept in 16-bit limbs: a bulk write links tens of
 * thousands of clusters while V8 still interprets this code, and an offset
 * past 2^30 made heap numbers for every entry (3.5 MB in a 4 GiB convert).
 */
export class CopiedEntryRun {
  /** The next cluster's host offset, most significant limb first (bits 48-63 .. 0-15). */
  #w0: number;
  #w1: number;
  #w2: number;
  #w3: number;
  /** The cluster size is one bit of limb 3 (bits 0-15) or of limb 2 (bits 16-31). */
  readonly #inLimb3: boolean;
  readonly #add: number;

  /** `hostOffset`: a multiple of the cluster size below 2^56 (bits 9-55 of an entry). */
  constructor(hostOffset: number, clusterBits: number) {
    this.#w3 = hostOffset % 0x10000;
    const high = Math.floor(hostOffset / 0x10000);
    this.#w2 = high % 0x10000;
    this.#w1 = Math.floor(high / 0x10000) % 0x10000;
    this.#w0 = Math.floor(high / 2 ** 32);
    this.#inLimb3 = clusterBits < 16;
    this.#add = 1 << (clusterBits & 15);
  }

  /**
   * Stores the next clusters as the entries of `table` that guest clusters
   * `guest[from..)` take, while they fall in [tableFirst, tableFirst +
   * entries) (guest clusters and tableFirst counted from the same base);
   * returns the index in `guest` of the first one that does not (or `to`).
   * Small integers throughout: the limbs are locals, the clusters an
   * Int32Array (a Float64Array's elements are heap numbers to interpreted code).
   */
  storeRun(table: Uint8Array, tableFirst: number, entries: number, guest: Int32Array, from: number, to: number): number {
    let w0 = this.#w0;
    let w1 = this.#w1;
    let w2 = this.#w2;
    let w3 = this.#w3;
    const add = this.#add;
    const inLimb3 = this.#inLimb3;
    const tableEnd = tableFirst + entries;
    let k = from;
    for (; k < to; k++) {
      const c = guest[k]!;
      if (c < tableFirst || c >= tableEnd) break;
      const at = (c - tableFirst) * 8;
      table[at] = 0x80 | (w0 >> 8);
      table[at + 1] = w0 & 0xff;
      table[at + 2] = w1 >> 8;
      table[at + 3] = w1 & 0xff;
      table[at + 4] = w2 >> 8;
      table[at + 5] = w2 & 0xff;
      table[at + 6] = w3 >> 8;
      table[at + 7] = w3 & 0xff;
      if (inLimb3) {
        w3 += add;
        w2 += w3 >> 16;
        w3 &= 0xffff;
      } else w2 += add;
      w1 += w2 >> 16;
      w2 &= 0xffff;
      w0 += w1 >> 16;
      w1 &= 0xffff;
    }
    this.#w0 = w0;
    this.#w1 = w1;
    this.#w2 = w2;
    this.#w3 = w3;
    return k;
  }
}
