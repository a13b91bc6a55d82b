// Plays an ffwhep stream in headless Chromium with the npm package
// whip-whep's WHEPClient (a WHEP player nobody here wrote), once with the
// token and once without, and prints one JSON line of what the page saw.
// usage: node whep_client.mjs WHEP_URL TOKEN
import http from "node:http";
import fs from "node:fs";
import { launchChromium } from "./chromium.mjs";

const [url, token] = process.argv.slice(2);
const whepJs = fs.readFileSync(new URL("./node_modules/whip-whep/whep.js", import.meta.url));
const page = (useToken) => `<!doctype html><video autoplay muted playsinline></video>
<script type="module">
import { WHEPClient } from "/whep.js";
const pc = window.pc = new RTCPeerConnection();
pc.addTransceiver("video", { direction: "recvonly" });
pc.addTransceiver("audio", { direction: "recvonly" });
const media = new MediaStream();
pc.ontrack = (e) => { media.addTrack(e.track); document.querySelector("video").srcObject = media; };
window.result = { error: null };
try { await new WHEPClient().view(pc, ${JSON.stringify(url)}, ${useToken ? JSON.stringify(token) : "undefined"}); }
catch (e) { window.result.error = String(e); }
window.result.done = true;
</script>`;

// The page comes from another origin than ffwhep: CORS is exercised too.
const server = http.createServer((req, res) => {
  if (req.url === "/whep.js") {
    res.writeHead(200, { "content-type": "text/javascript" });
    return res.end(whepJs);
  }
  res.writeHead(200, { "content-type": "text/html" });
  res.end(page(req.url === "/with-token"));
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const origin = `http://127.0.0.1:${server.address().port}`;

const browser = await launchChromium();
const out = {};
try {
  const p = await browser.newPage();
  await p.goto(`${origin}/with-token`);
  await p.waitForFunction(() => window.result && window.result.done, null, { timeout: 20000 });
  await p.waitForFunction(async () => {
    const stats = await window.pc.getStats();
    let frames = 0;
    stats.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") frames = s.framesDecoded || 0; });
    return frames > 30;
  }, null, { timeout: 20000, polling: 250 });
  // The element reports its size once a frame has been rendered.
  await p.waitForFunction(() => document.querySelector("video").videoWidth > 0, null, { timeout: 10000 });
  out.withToken = await p.evaluate(async () => {
    const v = document.querySelector("video");
    return { error: window.result.error, width: v.videoWidth, height: v.videoHeight };
  });
  const q = await browser.newPage();
  await q.goto(`${origin}/without-token`);
  await q.waitForFunction(() => window.result && window.result.done, null, { timeout: 20000 });
  out.withoutToken = await q.evaluate(() => window.result);
} catch (e) {
  out.error = String(e);
  process.exitCode = 1;
} finally {
  console.log(JSON.stringify(out));
  await browser.close();
  server.close();
}
