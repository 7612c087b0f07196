/**
 * The range of an export that block status last found to be all data, so a
 * READ inside it skips the map (for qcow2 the read maps the same L2 entries
 * again anyway). Safe however stale it gets: a range remembered as data is
 * read and sent as data, which is right whatever the disk now holds there;
 * only a hole must be current, and holes are never remembered.
 */
export class KnownData {
  #from = 0;
  #to = 0;

  covers(offset: number, length: number): boolean {
    return offset >= this.#from && offset + length <= this.#to;
  }

  remember(offset: number, length: number): void {
    this.#from = offset;
    this.#to = offset + length;
  }

  /** After a zeroing request: its range may read as a hole now, which the client would rather be told. */
  forget(): void {
    this.#from = 0;
    this.#to = 0;
  }
}
