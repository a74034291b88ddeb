/**
 * Gap-free playback of 24 kHz float32 speech chunks: each chunk becomes an AudioBufferSourceNode
 * scheduled right after the previous one on one AudioContext. A small start delay absorbs
 * network jitter; `flush()` drops everything queued at once (barge-in); `setVolume()` ducks it.
 * Counts underruns (gaps).
 */
export const SPEECH_RATE = 24000;

export class PcmPlayer {
  /** @param {{startDelayMs?: number, sinkId?: string, onIdle?: () => void, onStart?: () => void}} o */
  constructor({ startDelayMs = 120, sinkId = "", onIdle, onStart } = {}) {
    this.startDelay = startDelayMs / 1000;
    this.sinkId = sinkId;
    this.onIdle = onIdle || (() => {});
    this.onStart = onStart || (() => {});
    this.ctx = null;
    this.nextTime = 0;
    this.sources = new Set();
    this.gaps = 0;
    this.chunks = 0;
    this.receivedSec = 0;
    this.playedSec = 0;
    this.flushes = 0;
  }

  /** Creates (or resumes) the context; call from a user gesture so autoplay rules allow sound. */
  async ensure() {
    if (!this.ctx) {
      this.ctx = new AudioContext({ sampleRate: SPEECH_RATE, latencyHint: "interactive" });
      this.gain = this.ctx.createGain();
      this.gain.connect(this.ctx.destination);
      if (this.sinkId) await this.setSink(this.sinkId);
    }
    if (this.ctx.state === "suspended") await this.ctx.resume().catch(() => {});
    return this.ctx;
  }

  /** Output device choice where the browser supports AudioContext.setSinkId. */
  async setSink(id) {
    this.sinkId = id;
    if (this.ctx && typeof this.ctx.setSinkId === "function") {
      try { await this.ctx.setSinkId(id || ""); } catch (e) { console.warn("setSinkId failed", e); }
    }
  }

  get playing() { return this.sources.size > 0; }

  /** Volume of everything played (ducking): ramps from where it is to `value` in rampMs. */
  setVolume(value, rampMs = 30) {
    if (!this.ctx || !this.gain) return;
    const g = this.gain.gain;
    const now = this.ctx.currentTime;
    g.cancelScheduledValues(now);
    g.setValueAtTime(g.value, now);
    g.linearRampToValueAtTime(value, now + rampMs / 1000);
  }

  /** Seconds of audio scheduled but not yet heard. */
  get bufferAheadMs() {
    if (!this.ctx || !this.playing) return 0;
    return Math.max(0, (this.nextTime - this.ctx.currentTime) * 1000);
  }

  /** Queues one chunk (Float32Array at 24 kHz). */
  enqueue(pcm) {
    if (!pcm || !pcm.length) return;
    if (!this.ctx) { this.ensure(); }
    const ctx = this.ctx;
    const buf = ctx.createBuffer(1, pcm.length, SPEECH_RATE);
    buf.copyToChannel(pcm, 0);
    const src = ctx.createBufferSource();
    src.buffer = buf;
    src.connect(this.gain);
    const now = ctx.currentTime;
    if (!this.playing) {
      this.nextTime = now + this.startDelay;
      this.onStart();
    } else if (this.nextTime < now) {
      this.gaps += 1;  // the queue ran dry mid-reply: an audible gap
      this.nextTime = now + 0.02;
    }
    src.start(this.nextTime);
    const dur = pcm.length / SPEECH_RATE;
    this.nextTime += dur;
    this.chunks += 1;
    this.receivedSec += dur;
    this.sources.add(src);
    src.onended = () => {
      if (!this.sources.delete(src)) return;
      this.playedSec += dur;
      if (!this.sources.size) this.onIdle();
    };
  }

  /** Drops everything queued or playing (barge-in, stop). */
  flush() {
    if (!this.sources.size) return false;
    const srcs = [...this.sources];
    this.sources.clear();
    for (const s of srcs) { try { s.stop(); } catch { /* not started */ } }
    this.flushes += 1;
    this.onIdle();
    return true;
  }

  close() {
    this.flush();
    if (this.ctx) { this.ctx.close().catch(() => {}); this.ctx = null; }
  }
}
