import { VdiskError } from '../errors.js';

/**
 * Splits a byte stream into top-level JSON objects, as QEMU's JSON lexer does:
 * messages need not be newline-separated, and whitespace between them is
 * skipped. A stray character outside an object is reported as a syntax error
 * and skipped. A message larger than `maxBytes` is refused rather than
 * buffered without bound.
 */
export class JsonStreamSplitter {
  readonly #maxBytes: number;
  #buf = '';
  #depth = 0;
  #inString = false;
  #escape = false;
  #start = -1;
  #scan = 0;
  /** Inside an oversized message: track its nesting to find its end, keep none of it. */
  #discarding = false;

  constructor(maxBytes = 1 << 20) {
    this.#maxBytes = maxBytes;
  }

  /**
   * Feeds text; returns the complete messages found, each parsed, or a
   * SyntaxError for one that is not valid JSON, or a VdiskError (EINVAL) for one
   * that exceeds the cap (whose text is dropped as it arrives).
   */
  push(chunk: string): unknown[] {
    this.#buf += chunk;
    const out: unknown[] = [];
    for (; this.#scan < this.#buf.length; this.#scan++) {
      const c = this.#buf[this.#scan];
      if (this.#start < 0) {
        if (c === ' ' || c === '\n' || c === '\r' || c === '\t') continue;
        if (c !== '{' && c !== '[') {
          out.push(new SyntaxError(`JSON parse error, unexpected character '${c ?? ''}' outside an object`));
          continue;
        }
        this.#start = this.#scan;
      }
      if (this.#inString) {
        if (this.#escape) this.#escape = false;
        else if (c === '\\') this.#escape = true;
        else if (c === '"') this.#inString = false;
        continue;
      }
      if (!this.#discarding && this.#scan - this.#start >= this.#maxBytes) {
        out.push(new VdiskError('EINVAL', `JSON message exceeds ${this.#maxBytes} bytes`));
        this.#discarding = true;
      }
      if (c === '"') this.#inString = true;
      else if (c === '{' || c === '[') this.#depth++;
      else if (c === '}' || c === ']') {
        this.#depth--;
        if (this.#depth === 0) {
          if (!this.#discarding) out.push(parse(this.#buf.slice(this.#start, this.#scan + 1)));
          this.#discarding = false;
          this.#start = -1;
        }
      }
    }
    if (this.#start < 0) {
      this.#buf = '';
      this.#scan = 0;
    } else if (this.#start > 0) {
      this.#buf = this.#buf.slice(this.#start);
      this.#scan -= this.#start;
      this.#start = 0;
    }
    if (this.#discarding) {
      // Keep scanning its structure to find where it ends, but none of its text.
      this.#buf = '';
      this.#scan = 0;
      this.#start = 0;
    }
    return out;
  }
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    return e instanceof SyntaxError ? e : new SyntaxError(String(e));
  }
}
