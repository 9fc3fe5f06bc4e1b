// Drives chroma-ha's status page in headless Chromium for
// crates/chroma-ha/tests/status_page.rs.
//
//   node tests/browser/status_page.mjs GATEWAY_URL
//
// Opens GATEWAY_URL/ once and keeps it open (the page refreshes itself),
// then answers one command per line on stdin with one JSON line on stdout:
//
//   snapshot              what the page shows now
//   wait-down NAME        waits (≤ 20 s) until server NAME's row shows it down
//   wait-lag NAME N       waits (≤ 20 s) until NAME's lag is N in the table and the chart
//   screenshot PATH       saves a full-page PNG
//   quit                  closes the browser; also reports requests the page made
//                         to any other origin and console errors (both must be none)
//
// Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM); playwright-core
// downloads nothing and gives it a fresh profile directory.
import { chromium } from "playwright-core";
import readline from "node:readline";

const base = process.argv[2];
if (!base) {
  console.error("usage: node status_page.mjs GATEWAY_URL");
  process.exit(2);
}
const origin = new URL(base).origin;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const elsewhere = [];
const consoleErrors = [];
page.on("request", r => { if (!r.url().startsWith(origin)) elsewhere.push(r.url()); });
page.on("console", m => { if (m.type() === "error") consoleErrors.push(`${m.text()} (${m.location().url})`); });
page.on("response", r => { if (r.status() >= 400) consoleErrors.push(`${r.status()} from ${r.url()}`); });
page.on("pageerror", e => consoleErrors.push(String(e)));

const say = value => process.stdout.write(JSON.stringify(value) + "\n");

// What the page shows, read from its DOM.
const snapshot = () => page.evaluate(() => {
  const rows = [...document.querySelectorAll("#rows tr")].map(tr => {
    const cells = [...tr.children].map(td => td.textContent.trim());
    return {
      server: tr.dataset.server,
      health: tr.querySelector("[data-health]")?.dataset.health,
      state: cells[2],
      applied_lsn: Number(cells[4]),
      lag_entries: Number(cells[5]),
    };
  });
  const charts = {};
  for (const svg of document.querySelectorAll("svg[data-chart]")) {
    const series = {};
    for (const line of svg.querySelectorAll("polyline[data-series]")) {
      series[line.dataset.series] = {
        last: Number(line.dataset.last),
        points: line.getAttribute("points").trim() ? line.getAttribute("points").trim().split(/\s+/).length : 0,
      };
    }
    charts[svg.dataset.chart] = { samples: Number(svg.dataset.points), series };
  }
  const events = [...document.querySelectorAll("#events li[data-kind]")].map(li => ({
    kind: li.dataset.kind, text: li.textContent,
  }));
  return {
    refreshes: Number(document.body.dataset.refreshes || 0),
    subtitle: document.getElementById("sub").textContent,
    rows, charts, events,
    dead_letters: document.querySelectorAll("#letters tr[data-letter]").length,
  };
});

async function waitFor(what, ok) {
  const start = Date.now();
  for (;;) {
    const shown = await snapshot();
    if (ok(shown)) return { waited_ms: Date.now() - start, page: shown };
    if (Date.now() - start > 20000) return { error: `timed out waiting for ${what}`, page: shown };
    await new Promise(r => setTimeout(r, 100));
  }
}

try {
  await page.goto(base + "/", { waitUntil: "load" });
  const loaded = await waitFor("two refreshes with servers listed",
    s => s.refreshes >= 2 && s.rows.length > 0 && Object.keys(s.charts).length === 4);
  say({ stage: "loaded", ...loaded });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [command, ...args] = line.trim().split(/\s+/);
    if (command === "snapshot") {
      say({ stage: "snapshot", page: await snapshot() });
    } else if (command === "wait-down") {
      say({ stage: "down", ...await waitFor(`${args[0]} shown down`,
        s => s.rows.some(r => r.server === args[0] && r.health === "down")) });
    } else if (command === "wait-lag") {
      const n = Number(args[1]);
      say({ stage: "lag", ...await waitFor(`${args[0]} shown ${n} entries behind`,
        s => s.rows.some(r => r.server === args[0] && r.lag_entries === n)
          && s.charts.lag_entries?.series[args[0]]?.last === n) });
    } else if (command === "screenshot") {
      await page.screenshot({ path: args[0], fullPage: true });
      say({ stage: "screenshot", path: args[0] });
    } else if (command === "quit") {
      break;
    } else {
      say({ error: `unknown command ${command}` });
    }
  }
  say({ stage: "quit", requests_elsewhere: elsewhere, console_errors: consoleErrors });
} catch (e) {
  say({ error: String(e?.stack || e) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
