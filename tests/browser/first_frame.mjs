// Opens ffwhep's player page N times in Debian's Chromium (headless), each
// at a random moment of the stream's GOP, and reports what the page's own
// timeline says: ms since navigation start for each step of the start, up
// to the first frame that requestVideoFrameCallback reports; a load also
// waits for the page's first trickled candidate to be accepted (PATCH). Each
// page is closed, and the server has answered its DELETE (sent on pagehide),
// before the next opens.
// Prints one JSON line per load, then {"summary": {...}} with p50/p95.
// usage: node first_frame.mjs PLAYER_URL [N=20] [GOP_SECONDS=4]
// (PLAYER_FILE=path serves that file as the page instead: for trying a
// change to the player without rebuilding ffwhep. WAIT_PATH=1 also waits for
// the page to name the path its media takes, e.g. "relay (udp)".)
import { launchChromium } from "./chromium.mjs";

const [url, n = "20", gop = "4"] = process.argv.slice(2);
const browser = await launchChromium();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pick = (xs, q) => xs.length ? xs[Math.min(xs.length - 1, Math.floor(q * xs.length))] : null;
const frames = [], failures = [];
try {
  const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  if (process.env.PLAYER_FILE) {
    // Trying a change to the page without rebuilding ffwhep: serve it from disk.
    const { readFileSync } = await import("node:fs");
    await context.route(url, (r) => r.fulfill({ contentType: "text/html", body: readFileSync(process.env.PLAYER_FILE, "utf8") }));
  }
  // One page first, to warm the browser's process and codec up: what users
  // see on a second visit is not a cold browser start either.
  for (let i = 0; i <= Number(n); i++) {
    await sleep(Math.random() * Number(gop) * 1000);
    const page = await context.newPage();
    try {
      await page.goto(url);
      await page.waitForFunction(() => window.ffwhep && window.ffwhep.timeline.frame !== undefined, null, { timeout: 15000 });
      // The candidates gathering found go by PATCH once the session is known,
      // which may be after the first frame: wait for one to be taken.
      await page.waitForFunction(() => window.ffwhep.trickled > 0, null, { timeout: 15000 });
      if (process.env.WAIT_PATH) await page.waitForFunction(() => window.ffwhep.path, null, { timeout: 15000 });
      const seen = await page.evaluate(() => ({ timeline: window.ffwhep.timeline, trickled: window.ffwhep.trickled,
        iceServers: window.ffwhep.iceServers, path: window.ffwhep.path, shown: document.getElementById("timeline").textContent }));
      if (i > 0) {
        frames.push(seen.timeline.frame);
        console.log(JSON.stringify({ load: i, ...seen }));
      }
    } catch (e) {
      if (i > 0) failures.push(String(e));
      console.log(JSON.stringify({ load: i, error: String(e) }));
    } finally {
      // The page's pagehide handler sends DELETE. It is fired while the page
      // is still open, and its answer awaited (`ffwhep.leaving`): no load
      // overlaps the next, and the browser is not closed under the last
      // DELETE. Closing the page then sends nothing more.
      await page.evaluate(async () => {
        dispatchEvent(new PageTransitionEvent("pagehide"));
        await window.ffwhep.leaving;
      }).catch((e) => console.error("leaving:", String(e)));
      await page.close({ runBeforeUnload: true });
    }
  }
} finally {
  await browser.close();
}
frames.sort((a, b) => a - b);
console.log(JSON.stringify({ summary: { loads: frames.length, failures: failures.length,
  p50: pick(frames, 0.5), p95: pick(frames, 0.95), max: frames[frames.length - 1] ?? null } }));
