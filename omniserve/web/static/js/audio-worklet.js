/**
 * AudioWorklet processor: microphone → mono float32 at 16 kHz. When the AudioContext already
 * runs at 16 kHz it passes samples through; otherwise it resamples linearly (keeping the
 * fractional read position across blocks so there are no seams). Posts blocks of ~20 ms
 * ({pcm}) and a level every ~50 ms ({level}); chunking to protocol sizes happens on the main thread.
 */
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.target = (options.processorOptions && options.processorOptions.targetRate) || 16000;
    this.ratio = sampleRate / this.target;
    this.pos = 0;           // fractional read position into the pending input
    this.pending = new Float32Array(0);
    this.out = [];
    this.outLen = 0;
    this.blockOut = Math.round(this.target * 0.02);
    this.levelSum = 0;
    this.levelN = 0;
    this.levelEvery = Math.round(sampleRate * 0.05);
    this.running = true;
    this.port.onmessage = (e) => { if (e.data === "stop") this.running = false; };
  }

  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch && ch.length) {
      for (let i = 0; i < ch.length; i++) this.levelSum += ch[i] * ch[i];
      this.levelN += ch.length;
      if (this.levelN >= this.levelEvery) {
        this.port.postMessage({ level: Math.sqrt(this.levelSum / this.levelN) });
        this.levelSum = 0;
        this.levelN = 0;
      }
      this.emit(this.ratio === 1 ? ch.slice() : this.resample(ch));
    }
    return this.running;
  }

  resample(ch) {
    const src = new Float32Array(this.pending.length + ch.length);
    src.set(this.pending);
    src.set(ch, this.pending.length);
    const out = [];
    let x = this.pos;
    while (x + 1 < src.length) {
      const i = Math.floor(x);
      const f = x - i;
      out.push(src[i] * (1 - f) + src[i + 1] * f);
      x += this.ratio;
    }
    const keep = Math.floor(x);
    this.pending = src.slice(keep);
    this.pos = x - keep;
    return Float32Array.from(out);
  }

  emit(block) {
    this.out.push(block);
    this.outLen += block.length;
    if (this.outLen >= this.blockOut) {
      const pcm = new Float32Array(this.outLen);
      let o = 0;
      for (const b of this.out) { pcm.set(b, o); o += b.length; }
      this.out = [];
      this.outLen = 0;
      this.port.postMessage({ pcm }, [pcm.buffer]);
    }
  }
}

registerProcessor("omniserve-capture", CaptureProcessor);
