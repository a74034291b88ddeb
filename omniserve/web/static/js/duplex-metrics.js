/**
 * Full-duplex bookkeeping, pure (no DOM) so node:test covers it:
 * - DuplexMetrics: per-unit compute cost vs chunk_ms, time to first speech, kv length, tokens.
 * - BargeIn: when queued assistant audio must be dropped — the server cut the reply (a listening
 *   result after speaking, without the reply's own end_of_turn). Talking over the reply only
 *   ducks it on the page (duck.js); whether it was an interruption is the server's call.
 * - Trace: the latest microphone levels and page events (duck, restore, drop) with their times,
 *   read by measurements (window.omniserve.trace); bounded.
 */
export class DuplexMetrics {
  constructor(chunkMs = 1000, { speechRms = 0.02, silenceMs = 400 } = {}) {
    this.chunkMs = chunkMs;
    this.speechRms = speechRms;
    this.silenceMs = silenceMs;
    this.units = 0;
    this.speakUnits = 0;
    this.costSum = 0;
    this.lastCostMs = null;
    this.maxCostMs = 0;
    this.overruns = 0;
    this.kv = 0;
    this.tokens = 0;
    this.replies = 0;
    this.ttfsMs = null;          // last reply: end of the user's speech → first speaking unit
    this.ttfsSum = 0;
    this.ttfsN = 0;
    this.speaking = false;
    this.userSpeaking = false;
    this.lastLoudMs = -Infinity;
    this.speechEndMs = null;
  }

  /** Microphone level (RMS) at time nowMs: tracks when the user stopped speaking. */
  onLevel(rmsValue, nowMs) {
    if (rmsValue >= this.speechRms) {
      this.userSpeaking = true;
      this.lastLoudMs = nowMs;
    } else if (this.userSpeaking && nowMs - this.lastLoudMs > this.silenceMs) {
      this.userSpeaking = false;
      this.speechEndMs = this.lastLoudMs;
    }
  }

  /** One `result` message received at nowMs. */
  onUnit(r, nowMs) {
    this.units += 1;
    const cost = Number(r.cost_all_ms);
    if (Number.isFinite(cost)) {
      this.lastCostMs = cost;
      this.costSum += cost;
      this.maxCostMs = Math.max(this.maxCostMs, cost);
      if (cost > this.chunkMs) this.overruns += 1;
    }
    if (Number.isFinite(Number(r.kv_cache_length))) this.kv = Number(r.kv_cache_length);
    this.tokens += Number(r.n_tokens) || 0;
    if (!r.is_listen) {
      this.speakUnits += 1;
      if (!this.speaking) {
        this.replies += 1;
        if (this.speechEndMs !== null && nowMs >= this.speechEndMs) {
          this.ttfsMs = nowMs - this.speechEndMs;
          this.ttfsSum += this.ttfsMs;
          this.ttfsN += 1;
          this.speechEndMs = null;
        }
      }
      this.speaking = !r.end_of_turn;
    } else {
      this.speaking = false;
    }
  }

  get avgCostMs() { return this.units ? this.costSum / this.units : null; }
  /** Share of units computed faster than real time (cost_all_ms ≤ chunk_ms). */
  get paceRatio() { return this.units ? (this.units - this.overruns) / this.units : null; }
  get avgTtfsMs() { return this.ttfsN ? this.ttfsSum / this.ttfsN : null; }
}

export class BargeIn {
  constructor() {
    this.speaking = false;       // the model is in the middle of a reply
  }

  /** A result arrived: true when the reply was cut off and queued audio must go. */
  onResult(r) {
    let cut = false;
    if (r.is_listen) {
      cut = this.speaking;       // listening again although the reply did not end: the server cut it
      this.speaking = false;
    } else {
      this.speaking = !r.end_of_turn;
    }
    return cut;
  }
}

export class Trace {
  constructor(max = 4000) {
    this.max = max;
    this.levels = [];            // [performance.now(), rms]
    this.events = [];            // [performance.now(), "duck" | "restore" | "drop", detail?]
  }

  level(nowMs, rms) { this._push(this.levels, [nowMs, rms]); }

  event(nowMs, kind, detail = "") { this._push(this.events, [nowMs, kind, detail]); }

  _push(list, item) {
    list.push(item);
    if (list.length > this.max) list.splice(0, list.length - this.max);
  }
}
