/** Unguessable session ids from crypto.getRandomValues (128 bits, hex), with the mode's prefix. */
export function randomHex(bytes = 16) {
  const a = new Uint8Array(bytes);
  crypto.getRandomValues(a);
  return [...a].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export function newSessionId(prefix = "") {
  return `${prefix}${randomHex(16)}`;
}
