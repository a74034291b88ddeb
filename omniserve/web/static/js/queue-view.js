/**
 * Shows the queue position and a countdown while a request waits for a worker. The countdown
 * ticks locally each second and is corrected by every queue_update from the gateway.
 */
import { h, fill, fmtSeconds } from "./dom.js";
import { t } from "./i18n.js";

export class QueueView {
  /** @param {HTMLElement} el an (initially hidden) container */
  constructor(el) {
    this.el = el;
    this.timer = null;
    this.deadline = 0;
    this.info = null;
  }

  /** Pass the queued/queue_update message, or null when a worker has been assigned. */
  update(q) {
    if (!q) { this.hide(); return; }
    this.info = q;
    this.deadline = performance.now() + Math.max(0, Number(q.estimated_wait_s) || 0) * 1000;
    this.render();
    if (!this.timer) this.timer = setInterval(() => this.render(), 1000);
  }

  render() {
    if (!this.info) return;
    const left = Math.max(0, (this.deadline - performance.now()) / 1000);
    this.el.hidden = false;
    this.el.className = "queue-banner";
    fill(this.el, h("span.spinner"),
      h("span", { dataset: { testid: "queue-position" } },
        t("queue.position", { position: this.info.position, length: this.info.queue_length ?? "?" })),
      h("span.grow"),
      h("span", left > 0 ? t("queue.eta", { time: fmtSeconds(left) }) : t("queue.soon")));
  }

  hide() {
    clearInterval(this.timer);
    this.timer = null;
    this.info = null;
    this.el.hidden = true;
  }
}
