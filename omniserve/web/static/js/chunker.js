/**
 * Cuts a stream of variable-size PCM blocks into chunks of a fixed sample count, as the protocol
 * wants (0.5 s half-duplex, chunk_ms in duplex). Pure; used by capture.js and node:test.
 */
export class Chunker {
  /** @param {number} size samples per chunk */
  constructor(size) {
    if (!(size > 0)) throw new Error("chunk size must be positive");
    this.size = Math.round(size);
    this.buf = new Float32Array(this.size);
    this.fill = 0;
  }

  /** Adds samples; returns the list of completed chunks (each a fresh Float32Array). */
  push(block) {
    const out = [];
    let i = 0;
    while (i < block.length) {
      const n = Math.min(this.size - this.fill, block.length - i);
      this.buf.set(block.subarray(i, i + n), this.fill);
      this.fill += n;
      i += n;
      if (this.fill === this.size) {
        out.push(this.buf);
        this.buf = new Float32Array(this.size);
        this.fill = 0;
      }
    }
    return out;
  }

  /** The partial chunk so far (used when push-to-talk ends). */
  flush() {
    const rest = this.buf.slice(0, this.fill);
    this.fill = 0;
    return rest;
  }
}
