/**
 * The two full-duplex pages share duplex.html and this module; the path picks the variant:
 * /omni — voice + camera, one JPEG frame per audio chunk, session id prefix omni_;
 * /audio_duplex — voice only, session id prefix adx_.
 */
import { runDuplexPage } from "../duplex-page.js";

const VARIANTS = {
  omni: { mode: "omni", app: "omni", prefix: "omni_", withCamera: true, i18n: "omni", title: "Omni" },
  audio_duplex: { mode: "audio_duplex", app: "audio_duplex", prefix: "adx_", withCamera: false, i18n: "adx", title: "Audio duplex" },
};

const v = location.pathname.startsWith("/omni") ? VARIANTS.omni : VARIANTS.audio_duplex;
document.title = `${v.title} · omniserve`;
document.getElementById("page-title").dataset.i18n = `${v.i18n}.title`;
document.getElementById("page-subtitle").dataset.i18n = `${v.i18n}.subtitle`;
document.getElementById(v.withCamera ? "orb-stage" : "camera-box").remove();   // before the page wires its controls

runDuplexPage(v);
