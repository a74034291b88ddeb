/**
 * Ducking the assistant's voice while the user talks over it (full duplex). As soon as the
 * microphone shows the user's voice over the playing reply, the page lowers the reply's volume;
 * once the user has been quiet for releaseMs it restores it. A backchannel ("yeah", "mm-hm") only
 * dips the voice: the server lets the reply go on. A real interruption is the server's call: it
 * cuts the reply (a listening end_of_turn) and the page drops its queued audio (BargeIn in
 * duplex-metrics.js). The server's thresholds are in engine/backends/embedded/duplex/tuning.py.
 * Pure (the page applies the gain), so node:test covers it.
 */
export const DUCK = Object.freeze({
  level: 0.04,      // microphone RMS that counts as the user's voice (the browser's echo cancellation is on)
  onsetMs: 40,      // loud this long ducks: levels come every ~50 ms, so the second loud reading does
  releaseMs: 450,   // quiet this long restores the volume
  gain: 0.25,       // the ducked volume (about -12 dB)
  rampMs: 30,       // volume changes take this long (no clicks)
});

export class Ducker {
  /** @param {Partial<typeof DUCK>} [o] */
  constructor(o = {}) {
    Object.assign(this, DUCK, o);
    this.ducked = false;
    this.loudSince = null;
    this.lastLoudMs = -Infinity;
  }

  /**
   * One microphone level (RMS) at nowMs; `audible`: the assistant's voice is playing.
   * @returns {"duck" | "restore" | null} what the page must do now
   */
  onLevel(rms, nowMs, audible) {
    if (rms >= this.level) {
      if (this.loudSince === null) this.loudSince = nowMs;
      this.lastLoudMs = nowMs;
    } else {
      this.loudSince = null;
    }
    if (!this.ducked) {
      if (audible && this.loudSince !== null && nowMs - this.loudSince >= this.onsetMs) {
        this.ducked = true;
        return "duck";
      }
      return null;
    }
    if (!audible || nowMs - this.lastLoudMs >= this.releaseMs) {
      this.ducked = false;
      return "restore";
    }
    return null;
  }
}
