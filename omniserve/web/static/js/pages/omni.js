/** Omni full-duplex: voice + camera (one JPEG frame per audio chunk), session id prefix omni_. */
import { runDuplexPage } from "../duplex-page.js";

runDuplexPage({ mode: "omni", app: "omni", prefix: "omni_", withCamera: true });
