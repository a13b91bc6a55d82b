// (experiment) Chromium's own floor: two peer connections in one page,
// connected to each other with no server: ms since navigation start to
// each step.
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
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu",
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"] });
const ctx = await browser.newContext();
for (let i = 0; i < 8; i++) {
  const p = await ctx.newPage(); await p.goto(url);
  await p.waitForFunction(() => window.done, null, { timeout: 10000 });
  console.log(JSON.stringify(await p.evaluate(() => window.done)));
  await p.close();
}
await browser.close(); server.close();
