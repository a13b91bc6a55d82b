// Chromium's own floor for a WebRTC start on this machine: a page whose two
// peer connections (recvonly video + audio offered, as the player does)
// connect to each other, with no server and no media. Prints one JSON line
// per load (ms since navigation start for each step), then a summary with
// the p50/p95 of "dtls" (both connected). Used by scripts/bench-join as the
// reference for the player's figures.
// usage: node chromium_floor.mjs [N=20]
import { chromium } from "playwright-core";
import http from "node:http";
const html = `<!doctype html><script>
const t = {}; const m = (k) => { if (t[k] === undefined) t[k] = Math.round(performance.now()); };
(async () => {
  m("start");
  const a = new RTCPeerConnection({ bundlePolicy: "max-bundle" }), b = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  m("pc");
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  a.oniceconnectionstatechange = () => { if (a.iceConnectionState === "connected") m("ice"); };
  a.onconnectionstatechange = () => { if (a.connectionState === "connected") { m("dtls"); window.done = t; } };
  a.addTransceiver("video", { direction: "recvonly" }); a.addTransceiver("audio", { direction: "recvonly" });
  const o = await a.createOffer(); m("offer");
  await a.setLocalDescription(o); m("sld");
  await b.setRemoteDescription(o); m("srd_b");
  const ans = await b.createAnswer(); await b.setLocalDescription(ans); m("answer");
  await a.setRemoteDescription(ans); m("srd");
})();
</script>`;
const server = http.createServer((q, r) => { r.setHeader("content-type", "text/html"); r.end(html); }).listen(0, "127.0.0.1");
await new Promise((r) => server.on("listening", r));
const url = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"] });
const ctx = await browser.newContext();
const n = Number(process.argv[2] || 20), done = [];
let failures = 0;
for (let i = 0; i <= n; i++) {
  const p = await ctx.newPage();
  try {
    await p.goto(url, { timeout: 10000 });
    await p.waitForFunction(() => window.done, null, { timeout: 10000 });
    const t = await p.evaluate(() => window.done);
    if (i > 0) { done.push(t.dtls); console.log(JSON.stringify(t)); } // the first load warms up
  } catch (e) {
    failures += 1;
    console.log(JSON.stringify({ load: i, error: String(e) }));
  } finally {
    await p.close();
  }
}
await browser.close(); server.close();
done.sort((a, b) => a - b);
const pick = (q) => done[Math.min(done.length - 1, Math.floor(q * done.length))];
console.log(JSON.stringify({ summary: { loads: done.length, failures, p50: pick(0.5), p95: pick(0.95) } }));
