/**
 * The range of an export that block status last found to be all data, so a
 * READ inside it skips the map (for qcow2 the read maps the same L2 entries
 * again anyway). Safe however stale it gets: a range remembered as data is
 * read and sent as data, which is right whatever the disk now holds there;
 * only a hole must be current, and holes are never remembered. Still, a client
 * is told of a new hole: the memory lapses when the node's zeroing epoch moves
 * (a discard or zero write from any connection, a job, a resize).
 */
export class KnownData {
  #from = 0;
  #to = 0;
  #epoch: number | undefined = undefined;

  /** `epoch`: the node's zeroingEpoch now (undefined where the node counts none). */
  covers(offset: number, length: number, epoch: number | undefined): boolean {
    return epoch === this.#epoch && offset >= this.#from && offset + length <= this.#to;
  }

  /** `epoch`: the node's zeroingEpoch read before the map that found the range. */
  remember(offset: number, length: number, epoch: number | undefined): void {
    this.#from = offset;
    this.#to = offset + length;
    this.#epoch = epoch;
  }

  /** After a zeroing request on this connection (for nodes that count no epoch). */
  forget(): void {
    this.#from = 0;
    this.#to = 0;
  }
}
