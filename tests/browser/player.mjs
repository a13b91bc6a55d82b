// Drives Debian's Chromium (headless) through ffwhep's player page and reports
// what the page itself sees, one JSON line per step on stdout:
//   {"event":"playing",...}  frames decoded, size, audio packets; screenshot taken
//   {"event":"ended",...}    after the test kills FFmpeg, the page shows it ended
//   {"event":"replaying",...} and plays again once the stream is back
//   {"event":"hidden",...}   hidden while muted, it has hung up
//   {"event":"shown",...}    shown again, it plays again
// usage: node player.mjs PLAYER_URL SCREENSHOT_PATH
import { launchChromium } from "./chromium.mjs";

const [url, screenshot] = process.argv.slice(2);
const browser = await launchChromium();
const say = async (event, page) => {
  const s = await page.evaluate(() => ({ ...window.ffwhep, stateText: document.getElementById("state").textContent }));
  console.log(JSON.stringify({ event, ...s }));
};
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 760 } });
  page.on("console", (m) => console.error("page:", m.text()));
  await page.goto(url);
  await page.waitForFunction(() => window.ffwhep.framesDecoded > 45 && window.ffwhep.audioPackets > 50, null, { timeout: 30000 });
  await page.screenshot({ path: screenshot });
  await say("playing", page);
  await page.waitForFunction(() => window.ffwhep.ended > 0, null, { timeout: 30000 });
  await say("ended", page);
  await page.waitForFunction(
    () => window.ffwhep.connects > 1 && window.ffwhep.state === "playing" && window.ffwhep.framesDecoded > 20,
    null,
    { timeout: 30000 },
  );
  await say("replaying", page);
  // Hidden while muted: the page hangs up (DELETE); shown again, it plays.
  const hide = (state) => page.evaluate((state) => {
    Object.defineProperty(document, "visibilityState", { value: state, configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  }, state);
  const connects = await page.evaluate(() => window.ffwhep.connects);
  await hide("hidden");
  await page.waitForFunction(() => window.ffwhep.state === "paused", null, { timeout: 30000 });
  await say("hidden", page);
  await hide("visible");
  await page.waitForFunction(
    (n) => window.ffwhep.connects > n && window.ffwhep.state === "playing" && window.ffwhep.framesDecoded > 10,
    connects,
    { timeout: 30000 },
  );
  await say("shown", page);
} catch (e) {
  console.log(JSON.stringify({ event: "error", error: String(e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
