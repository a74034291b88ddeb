/** Conversation turns for the voice pages: "You" and "Assistant" entries that grow as text arrives. */
import { h, scrollToEnd } from "./dom.js";
import { t } from "./i18n.js";

export class TranscriptView {
  constructor(box, empty) {
    this.box = box;
    this.empty = empty;
  }

  /** Adds a turn; returns an object with set(text)/append(delta)/setNote(text). */
  add(role, text = "") {
    if (this.empty) this.empty.hidden = true;
    const body = h("div.text", text);
    const note = h("small.faint");
    const el = h(`div.turn.${role}`, { dataset: { testid: `turn-${role}` } },
      h("div.who", t(role === "user" ? "turn.user" : "turn.assistant")), body, note);
    this.box.append(el);
    scrollToEnd(this.box);
    let value = text;
    return {
      el,
      get text() { return value; },
      set: (s) => { value = s; body.textContent = s; scrollToEnd(this.box); },
      append: (d) => { value += d; body.textContent = value; scrollToEnd(this.box); },
      setNote: (s) => { note.textContent = s; },
    };
  }

  clear() {
    for (const el of [...this.box.querySelectorAll(".turn")]) el.remove();
    if (this.empty) this.empty.hidden = false;
  }
}

/** The user's transcript, wherever the server put it (extra fields of generating/chunk/turn_done). */
export function userTextOf(m) {
  for (const k of ["user_text", "user_transcript", "transcript", "asr_text"]) {
    if (typeof m[k] === "string" && m[k].trim()) return m[k].trim();
  }
  return "";
}
