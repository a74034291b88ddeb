/** Audio full-duplex: voice only, session id prefix adx_. */
import { runDuplexPage } from "../duplex-page.js";

runDuplexPage({ mode: "audio_duplex", app: "audio_duplex", prefix: "adx_", withCamera: false });
