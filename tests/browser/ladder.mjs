// Drives Debian's Chromium (headless) through ffwhep's player page for the
// ladder test: prints {"session": URL, "playing": true} once it plays, then,
// when its stdin closes, one JSON line with every video frame the page
// presented ([Unix ms, height], from requestVideoFrameCallback) and the
// browser's own freeze counts (getStats). With LADDER_STATS set, it also
// prints the video's inbound getStats to stderr every 200 ms ("STATS {...}").
// usage: node ladder.mjs PLAYER_URL
import { launchChromium } from "./chromium.mjs";

const [url] = process.argv.slice(2);
const browser = await launchChromium();
try {
  const page = await browser.newPage();
  page.on("console", (m) => console.error("page:", m.text()));
  await page.goto(url);
  if (process.env.LADDER_STATS) {
    globalThis.statsTimer = setInterval(async () => {
      try {
        const s = await page.evaluate(async () => {
          const pc = window.ffwhep.pc;
          if (!pc) return null;
          const out = { t: Date.now() };
          (await pc.getStats()).forEach((r) => {
            if (r.type === "inbound-rtp" && r.kind === "video") {
              for (const k of ["packetsReceived", "packetsLost", "nackCount", "pliCount", "framesDecoded", "keyFramesDecoded", "framesDropped", "frameHeight", "jitterBufferDelay", "jitterBufferEmittedCount", "freezeCount", "framesReceived"]) out[k] = r[k];
            }
          });
          return out;
        });
        if (s) console.error("STATS " + JSON.stringify(s));
      } catch (e) {}
    }, 200);
  }
  await page.waitForFunction(() => window.ffwhep.framesDecoded > 10 && window.ffwhep.session, null, { timeout: 30000 });
  await page.evaluate(() => {
    window.presented = [];
    const video = document.getElementById("video");
    const each = (now, meta) => {
      window.presented.push([Math.round(performance.timeOrigin + now), meta.height]);
      video.requestVideoFrameCallback(each);
    };
    video.requestVideoFrameCallback(each);
  });
  console.log(JSON.stringify({ session: await page.evaluate(() => window.ffwhep.session), playing: true }));
  await new Promise((done) => { process.stdin.on("end", done); process.stdin.resume(); });
  if (globalThis.statsTimer) clearInterval(globalThis.statsTimer);
  const report = await page.evaluate(() => ({
    frames: window.presented,
    freezeCount: window.ffwhep.freezeCount,
    totalFreezesDuration: window.ffwhep.totalFreezesDuration,
  }));
  console.log(JSON.stringify(report));
} catch (e) {
  console.log(JSON.stringify({ error: String(e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
