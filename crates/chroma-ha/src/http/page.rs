//! The status page at `/`: one HTML file that polls `/status`. With
//! several gateways on one log it also lists them, with the leader and its
//! lease.

use axum::response::Html;

/// `GET /`.
pub async fn status_page() -> Html<&'static str> {
    Html(PAGE)
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chroma-ha</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#1d2330;background:#f7f8fa}
 h1{font-size:1.4rem;margin:0 0 .2rem} .sub{color:#667;margin-bottom:1.2rem}
 .cards{display:flex;gap:1rem;flex-wrap:wrap;margin-bottom:1.2rem}
 .card{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:.8rem 1rem;min-width:9rem}
 .card b{display:block;font-size:1.3rem}
 table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e8}
 th,td{padding:.45rem .7rem;border-bottom:1px solid #eef0f4;text-align:left}
 th{background:#f0f2f6;font-weight:600}
 .ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}.warn{color:#a15c00;font-weight:600}
 code{background:#eef0f4;padding:0 .3rem;border-radius:4px}
 td.err{max-width:26rem;overflow-wrap:anywhere;color:#556}
 h2{font-size:1.1rem;margin:1.4rem 0 .3rem}
</style></head><body>
<h1>chroma-ha</h1><div class="sub" id="sub">loading…</div>
<div class="cards" id="cards"></div>
<table><thead><tr><th>server</th><th>role</th><th>health</th><th>applier</th>
<th>applied LSN</th><th>lag (entries)</th><th>lag (s)</th><th>success</th><th>dead letters</th><th>last error</th></tr></thead>
<tbody id="rows"></tbody></table>
<div id="cluster" hidden><h2>gateways</h2><div class="sub" id="lease"></div>
<table><thead><tr><th>gateway</th><th>role</th><th>epoch</th><th>seen</th><th>up</th><th>address</th></tr></thead>
<tbody id="gateways"></tbody></table></div>
<p class="sub">Refreshes every 2 s from <code>/status</code>. Metrics: <code>/metrics</code>.</p>
<script>
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
async function refresh() {
  try {
    const s = await (await fetch("/status")).json();
    const w = s.write_ahead_log || {};
    document.getElementById("sub").innerHTML =
      (s.ready ? '<span class="ok">ready</span>' : '<span class="bad">not ready</span> ' + esc(s.not_ready_reason)) +
      ` · executor <b>${esc(s.executor ?? "none")}</b> · version ${esc(s.version)}`;
    const pct = w.max_bytes ? (100 * w.used_bytes / w.max_bytes).toFixed(1) : "0";
    document.getElementById("cards").innerHTML = [
      ["healthy", `${s.healthy_instances}/${s.total_instances}`],
      ["last LSN", w.last_lsn], ["pending", w.pending_writes],
      ["log used", pct + " %"], ["replayed", w.total_replayed], ["dead letters", w.dead_letters],
    ].map(([k, v]) => `<div class="card">${esc(k)}<b>${esc(v)}</b></div>`).join("");
    document.getElementById("rows").innerHTML = (s.instances || []).map(i => `<tr>
      <td>${esc(i.name)}<br><small>${esc(i.url)}</small></td><td>${esc(i.role)}</td>
      <td class="${i.healthy ? "ok" : "bad"}">${esc(i.state)}</td>
      <td class="${i.applier === "running" ? "" : "warn"}">${esc(i.applier)}</td>
      <td>${i.applied_lsn}</td><td>${i.lag_entries}</td><td>${i.lag_seconds.toFixed(1)}</td>
      <td>${(100 * i.success_rate).toFixed(1)} %</td><td>${i.dead_letters}</td>
      <td class="err"><small>${esc(i.last_error ?? "")}</small></td></tr>`).join("");
    const c = s.cluster;
    document.getElementById("cluster").hidden = !c;
    if (c) {
      const l = c.leader;
      document.getElementById("lease").innerHTML =
        `this gateway <b>${esc(c.name)}</b> is <b>${esc(c.role)}</b> · ` +
        (l ? `leader <b>${esc(l.name)}</b> at ${esc(l.address)}, epoch ${esc(l.epoch)}, term ${(l.term_age_seconds ?? 0).toFixed(0)} s old, ` +
             `renewed ${(l.last_renewal_seconds_ago ?? 0).toFixed(1)} s ago, lease runs ${l.lease_expires_in_seconds.toFixed(1)} s more`
           : '<span class="bad">no leader known</span>') +
        (c.postgres_error ? ` · <span class="bad">PostgreSQL: ${esc(c.postgres_error)}</span>` : "");
      document.getElementById("gateways").innerHTML = c.gateways.map(g => `<tr>
        <td>${esc(g.name)}</td><td class="${g.alive ? (g.role === "leader" ? "ok" : "") : "bad"}">${esc(g.alive ? g.role : "gone (" + g.role + ")")}</td>
        <td>${esc(g.epoch)}</td><td>${g.seen_seconds_ago.toFixed(1)} s ago</td>
        <td>${g.started_seconds_ago.toFixed(0)} s</td><td>${esc(g.address)}</td></tr>`).join("");
    }
  } catch (e) {
    document.getElementById("sub").innerHTML = '<span class="bad">gateway unreachable</span>';
  }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"#;
