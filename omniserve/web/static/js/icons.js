/**
 * Inline SVG icons (stroke style, 24×24), drawn from our own path data so pages need no icon
 * font, CDN or emoji font. `icon(name)` returns an <svg>; `applyIcons()` fills [data-icon] spans.
 */
const PATHS = {
  chat: ["M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z"],
  mic: ["M12 2a3 3 0 0 0-3 3v7a3 3 0 0 0 6 0V5a3 3 0 0 0-3-3z", "M19 10v2a7 7 0 0 1-14 0v-2", "M12 19v4", "M8 23h8"],
  image: ["M5 3h14a2 2 0 0 1 2 2v14a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z", "M8.5 10a1.5 1.5 0 1 0 0-3 1.5 1.5 0 0 0 0 3z", "M21 15l-5-5L5 21"],
  video: ["M23 7l-7 5 7 5V7z", "M3 5h11a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H3a2 2 0 0 1-2-2V7a2 2 0 0 1 2-2z"],
  headphones: ["M3 18v-6a9 9 0 0 1 18 0v6", "M21 19a2 2 0 0 1-2 2h-1a2 2 0 0 1-2-2v-3a2 2 0 0 1 2-2h3z", "M3 19a2 2 0 0 0 2 2h1a2 2 0 0 0 2-2v-3a2 2 0 0 0-2-2H3z"],
  wave: ["M3 10v4", "M7 6v12", "M11 3v18", "M15 7v10", "M19 10v4"],
  send: ["M22 2L11 13", "M22 2l-7 20-4-9-9-4 20-7z"],
  refresh: ["M23 4v6h-6", "M1 20v-6h6", "M3.5 9a9 9 0 0 1 14.9-3.4L23 10", "M1 14l4.6 4.4A9 9 0 0 0 20.5 15"],
  upload: ["M21 15v4a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2v-4", "M17 8l-5-5-5 5", "M12 3v12"],
  pause: ["M6 4h4v16H6z", "M14 4h4v16h-4z"],
  play: ["M6 4l14 8-14 8z"],
  ear: ["M6 8.5a6 6 0 0 1 12 0c0 5-5 5-5 9a3.5 3.5 0 0 1-6.5 1.5", "M10 8.5a2 2 0 1 1 4 0"],
  stop: { fill: true, d: ["M6 6h12v12H6z"] },
  record: { fill: true, d: ["M12 5a7 7 0 1 0 0 14 7 7 0 0 0 0-14z"] },
};

const NS = "http://www.w3.org/2000/svg";

export function icon(name, size = 18) {
  const spec = PATHS[name] || PATHS.chat;
  const fillMode = !Array.isArray(spec) && spec.fill;
  const svg = document.createElementNS(NS, "svg");
  for (const [k, v] of Object.entries({
    viewBox: "0 0 24 24", width: size, height: size, fill: fillMode ? "currentColor" : "none", stroke: "currentColor",
    "stroke-width": fillMode ? 0 : 2, "stroke-linecap": "round", "stroke-linejoin": "round", "aria-hidden": "true", class: "icon",
  })) svg.setAttribute(k, String(v));
  for (const d of Array.isArray(spec) ? spec : spec.d) {
    const p = document.createElementNS(NS, "path");
    p.setAttribute("d", d);
    svg.append(p);
  }
  return svg;
}

export function applyIcons(root = document) {
  for (const el of root.querySelectorAll("[data-icon]")) {
    if (!el.firstChild) el.append(icon(el.dataset.icon, Number(el.dataset.size) || 18));
  }
}
