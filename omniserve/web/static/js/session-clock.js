/** A mm:ss session timer shown in an element, started on `prepared` and stopped at the end. */
import { fmtSeconds } from "./dom.js";

export class SessionClock {
  constructor(el) { this.el = el; this.t0 = 0; this.timer = null; }
  start() {
    this.t0 = performance.now();
    this.el.textContent = "0:00";
    clearInterval(this.timer);
    this.timer = setInterval(() => { this.el.textContent = fmtSeconds(this.elapsed); }, 500);
  }
  get elapsed() { return this.t0 ? (performance.now() - this.t0) / 1000 : 0; }
  stop() { clearInterval(this.timer); this.timer = null; }
}
