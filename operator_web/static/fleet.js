// Fleet view: one tile per reactor, live.
"use strict";

const LABELS = { o2: "O₂", co2: "CO₂", temp: "Temp", do: "DO" };

function tileClass(t) {
  if (t.finished && (t.phase || {}).state !== "complete") return "idle";
  const prio = t.alarms.filter(a => a.state.startsWith("active")).map(a => a.priority);
  const h = t.next_harvest;
  if (prio.includes("critical") || prio.includes("high") || (h && h.state === "overdue")) return "bad";
  if (t.alarms.length || (h && h.state === "due") || (t.phase || {}).state === "held") return "warn";
  if ((t.phase || {}).state === "complete") return "idle";
  return "";
}

function valueRow(key, v) {
  const d = Page.digits[key];
  const cls = Page.valueClass(v);
  const sp = v.sp === null || v.sp === undefined ? "not controlled"
    : `set ${Page.num(v.sp, d)} ± ${Page.num(v.band, d)} ${v.unit}`;
  const q = v.quality && v.quality !== "good" && v.quality !== "simulated" ? ` (${v.quality})` : "";
  return `<span class="muted">${LABELS[key]}</span>
    <span><span class="v ${cls} num" data-var="${key}">${Page.num(v.value, d)} ${v.value === null ? "" : v.unit}</span><span class="sp">${Page.esc(sp)}${Page.esc(q)}</span></span>`;
}

function tile(t) {
  const [chipCls, chipText] = Page.stateChip(t);
  const p = t.phase || {};
  const phase = p.name ? `${Page.esc(p.name)} · phase ${p.index + 1} of ${p.count}` : (p.state === "complete" ? "run complete" : "no phase running");
  const vals = ["o2", "co2", "temp", "do"].filter(k => t.values[k]).map(k => valueRow(k, t.values[k])).join("");
  const h = t.next_harvest;
  const hcls = h ? h.state : "";
  const alarms = t.alarms.map(a => `<span class="chip ${a.priority === "medium" || a.priority === "low" ? "warn" : "bad"}" title="${Page.esc(a.message)}">${Page.esc(a.name)} · ${Page.esc(Page.alarmState[a.state] || a.state)}</span>`).join("");
  return `<a class="tile ${tileClass(t)}" href="/reactor/${encodeURIComponent(t.reactor)}" data-reactor="${Page.esc(t.reactor)}">
    <div class="head"><span class="name">${Page.esc(t.name)}</span><span class="chip ${chipCls}">${Page.esc(chipText)}</span></div>
    <div class="phase">${phase}${t.recipe ? " · " + Page.esc(t.recipe) : ""}</div>
    <div class="vals">${vals}</div>
    <div class="harvest ${hcls}" data-role="harvest">${Page.esc(Page.harvestText(h, t.utc))}</div>
    <div class="alarms">${alarms || '<span class="muted">no active alarms</span>'}</div>
  </a>`;
}

function render(data) {
  document.getElementById("tiles").innerHTML = data.tiles.map(tile).join("");
  Page.scaleBanner(data.tiles[0]);
}

(async () => {
  await Page.loadSession();
  render(await Page.get("/api/fleet"));
  Page.stream("/api/stream", { fleet: render }, Page.connection);
})();
