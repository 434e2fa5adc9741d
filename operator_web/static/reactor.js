// One reactor: values, phase, exposure clocks, alarms, commands, gas forecast, log; live.
"use strict";

const RID = decodeURIComponent(location.pathname.split("/").pop());
let VIEW = null;
const SIG = {};   // what each section was last built from (rebuild only on change)

const NAMES = { o2: "O₂", co2: "CO₂", temp: "Temperature", do: "Dissolved O₂", cells: "O₂ at the cells (estimated)" };

async function command(body) {
  body.run_id = VIEW.run_id;
  const r = await Page.post(`/api/reactor/${encodeURIComponent(RID)}/command`, body);
  Page.toast(r.message || (r.ok ? "accepted" : "refused"), !r.ok);
  return r;
}

function verbs() { return (Page.session.verbs || {})[RID] || []; }
function may(verb) { return verbs().includes(verb); }

// ---------------------------------------------------------------- sections
function renderValues(v) {
  const html = ["o2", "co2", "temp", "do", "cells"].filter(k => v.values[k]).map(k => {
    const x = v.values[k], d = Page.digits[k];
    const sp = x.sp === null ? "not controlled" : `set point ${Page.num(x.sp, d)} ± ${Page.num(x.band, d)} ${x.unit}`;
    const q = x.quality && !["good", "simulated", "estimate"].includes(x.quality) ? ` · ${x.quality}: ${x.reason}` : "";
    return `<div class="value"><div class="label">${NAMES[k]}</div>
      <div class="v ${Page.valueClass(x)} num" data-var="${k}">${Page.num(x.value, d)} <small>${x.value === null ? "" : x.unit}</small></div>
      <div class="sp">${Page.esc(sp + q)}</div></div>`;
  }).join("");
  document.getElementById("values").innerHTML = html;
  if (v.values.cells && !Charts.hasCells) {  // draw the estimate from the first value on
    Charts.hasCells = true;
    if (Charts.cols) Charts.build();
  }
  const o = v.outputs || {};
  document.getElementById("outputs").textContent =
    `Outputs: N₂ ${Page.num(o.n2_lpm, 2)} · air ${Page.num(o.air_lpm, 2)} · O₂ ${Page.num(o.o2_lpm, 2)} · CO₂ ${Page.num(o.co2_lpm, 3)} L/min · heater ${Page.num(o.heater_w, 0)} W${o.pump_on ? " · harvest pump ON" : ""}`;
}

function renderPhase(v) {
  const p = v.phase || {};
  const names = p.names || [];
  const steps = names.map((n, i) => `<div class="step ${i < p.index ? "done" : i === p.index ? "now" : ""}">${i + 1}. ${Page.esc(n)}</div>`).join("");
  let text = "No phase running.";
  let pct = 0;
  if (p.name) {
    pct = p.target_s ? Math.min(100, 100 * p.done_s / p.target_s) : 0;
    const basis = p.basis === "exposure" ? "of in-spec exposure" : p.basis === "in_spec" ? "(ends once every value is in band; time-out)" : "elapsed";
    text = `<b>${Page.esc(p.name)}</b> · ${Page.esc(p.state)} · ${Page.dur(p.done_s)} of ${Page.dur(p.target_s)} ${basis}`
      + (p.basis !== "time" ? ` · running ${Page.dur(p.elapsed_s)}` : "");
  } else if (p.state === "complete") { text = "Run complete."; pct = 100; }
  document.getElementById("phase").innerHTML =
    `<div class="steps">${steps}</div><div class="bar"><span style="width:${pct.toFixed(1)}%"></span></div>
     <p class="num">${text}</p><p class="muted">${Page.esc(v.recipe || "")}<br>run ${Page.esc(v.run_id || "–")} · ${Page.dur(v.t_s)} since start</p>`;
}

function harvestLine(h, now) {
  switch (h.state) {
    case "counting":
      return `${Page.dur(h.exposure_s)} of ${Page.dur(h.target_s)} in band, due about ${Page.dayClock(h.due_utc, now)}`
        + (h.latest_utc ? ` (at the latest ${Page.dayClock(h.latest_utc, now)})` : "");
    case "due": return `DUE since ${Page.dayClock(h.released_utc, now)} after ${Page.dur(h.exposure_s)} in band — collect and confirm`;
    case "overdue": return `OVERDUE: due since ${Page.dayClock(h.released_utc, now)} — confirm now`;
    case "done": return `collected ${Page.dayClock(h.done_utc, now)} after ${Page.dur(h.exposure_s)} in band${h.forced ? " (released by its latest time)" : ""}`;
    case "planned": return `${Page.dur(h.target_s)} of exposure in phase '${h.phase}'`;
    case "missed": return "not released (its phase ended first)";
  }
  return h.state;
}

function renderHarvests(v) {
  const box = document.getElementById("harvests");
  const sig = v.harvests.map(h => `${h.name}:${h.state}`).join("|") + may("confirm_harvest");
  if (SIG.harvests !== sig) {
    SIG.harvests = sig;
    box.innerHTML = v.harvests.length ? v.harvests.map(h => {
      const form = (h.state === "due" || h.state === "overdue") && h.action === "confirm" && may("confirm_harvest")
        ? `<form data-harvest="${Page.esc(h.name)}">
             <input name="container" placeholder="container id" required maxlength="128" size="14">
             <input name="volume_ml" type="number" min="0.1" step="0.1" placeholder="mL" required style="width:90px">
             <button class="primary" type="submit">Confirm harvest</button></form>` : "";
      return `<div class="harv ${h.state}" data-name="${Page.esc(h.name)}">
        <div class="line"><b>${Page.esc(h.name)}</b><span class="chip ${h.state === "due" ? "warn" : h.state === "overdue" ? "bad" : h.state === "done" ? "info" : "idle"}">${h.state}</span></div>
        <div class="bar ${h.state === "counting" ? "" : "ok"}"><span data-role="bar"></span></div>
        <div class="num" data-role="text"></div>${form}</div>`;
    }).join("") : '<p class="muted">This recipe has no harvests.</p>';
    box.querySelectorAll("form").forEach(f => f.addEventListener("submit", async ev => {
      ev.preventDefault();
      const r = await command({ verb: "confirm_harvest", harvest: f.dataset.harvest,
        container: f.container.value, volume_ml: Number(f.volume_ml.value) });
      if (r.ok) f.reset();
    }));
  }
  for (const h of v.harvests) {
    const el = box.querySelector(`.harv[data-name="${CSS.escape(h.name)}"]`);
    if (!el) continue;
    el.querySelector('[data-role="text"]').textContent = harvestLine(h, v.utc);
    const pct = h.state === "counting" ? 100 * h.exposure_s / h.target_s : ["due", "overdue", "done"].includes(h.state) ? 100 : 0;
    el.querySelector('[data-role="bar"]').style.width = `${Math.min(100, pct).toFixed(1)}%`;
  }
  const due = v.harvests.filter(h => h.state === "due" || h.state === "overdue");
  document.getElementById("due").innerHTML = due.map(h =>
    `<div class="due-notice ${h.state}" data-harvest="${Page.esc(h.name)}">Harvest ${Page.esc(h.name)} is ${h.state === "overdue" ? "OVERDUE" : "due"}: `
    + (h.action === "pump" ? "the harvest pump is collecting it." : "collect the conditioned medium and confirm container and volume below.")
    + "</div>").join("");
}

function renderAlarms(v) {
  const box = document.getElementById("alarms");
  const sig = v.alarms.map(a => `${a.name}:${a.state}`).join("|");
  if (SIG.alarms === sig) return;
  SIG.alarms = sig;
  if (!v.alarms.length) { box.innerHTML = '<p class="muted">No alarms.</p>'; return; }
  box.innerHTML = `<table><tr><th>alarm</th><th>priority</th><th>state (ISA-18.2)</th></tr>${v.alarms.map(a => {
    const ack = may("acknowledge") && (a.state === "active_unacknowledged" || a.state === "returned_unacknowledged")
      ? `<button type="button" data-ack="${Page.esc(a.name)}">Acknowledge</button>` : "";
    const shelve = may("shelve") && a.state !== "shelved"
      ? `<form data-shelve="${Page.esc(a.name)}">shelve for <input name="minutes" type="number" min="1" max="1440" value="60" style="width:64px"> min,
         <input name="reason" placeholder="reason" required size="10"><button type="submit">Shelve</button></form>` : "";
    const until = a.state === "shelved" && a.shelved_until_s !== null ? ` until run time ${Page.dur(a.shelved_until_s)}` : "";
    const tools = ack || shelve ? `<tr class="p-${a.priority} tools"><td colspan="3"><div class="alarm-tools">${ack}${shelve}</div></td></tr>` : "";
    return `<tr class="p-${a.priority}" data-alarm="${Page.esc(a.name)}"><td><b>${Page.esc(a.name)}</b><br><span class="muted">${Page.esc(a.message)}</span></td>
      <td>${Page.esc(a.priority)}</td><td>${Page.esc(Page.alarmState[a.state] || a.state)}${until}</td></tr>${tools}`;
  }).join("")}</table>`;
  box.querySelectorAll("[data-ack]").forEach(b => b.addEventListener("click", () =>
    command({ verb: "acknowledge", alarm: b.dataset.ack })));
  box.querySelectorAll("[data-shelve]").forEach(f => f.addEventListener("submit", ev => {
    ev.preventDefault();
    command({ verb: "shelve", alarm: f.dataset.shelve, minutes: Number(f.minutes.value), reason: f.reason.value });
  }));
}

function buildActions() {
  const parts = [];
  const state = [["hold", "Hold"], ["restart", "Restart"], ["stop", "Stop run"], ["abort", "Abort run"]].filter(([v]) => may(v));
  if (state.length) {
    parts.push(`<form id="state-form"><input name="reason" placeholder="reason (required for stop, abort)" size="28">
      ${state.map(([v, l]) => `<button type="submit" value="${v}" class="${v === "abort" || v === "stop" ? "danger" : ""}">${l}</button>`).join("")}</form>`);
  }
  if (may("set_setpoint")) {
    parts.push(`<form id="sp-form"><select name="variable"><option value="o2_pct">O₂ %</option><option value="co2_pct">CO₂ %</option><option value="temp_c">Temperature °C</option></select>
      <input name="value" type="number" step="0.01" required placeholder="new value" style="width:110px">
      <input name="reason" required placeholder="reason" size="16"><button class="primary" type="submit">Change set point</button></form>`);
  }
  if (may("note")) {
    parts.push(`<form id="note-form"><input name="text" required placeholder="note for the run record" size="34" maxlength="2000"><button type="submit">Add note</button></form>`);
  }
  document.getElementById("actions").innerHTML = parts.join("") || '<p class="muted">Your role may only view this reactor.</p>';
  const sf = document.getElementById("state-form");
  if (sf) sf.addEventListener("submit", async ev => {
    ev.preventDefault();
    const verb = ev.submitter.value;
    if ((verb === "stop" || verb === "abort") && !confirm(`${verb} the run on ${RID}? Outputs go to their safe state.`)) return;
    const r = await command({ verb, reason: sf.reason.value });
    if (r.ok) sf.reset();
  });
  const sp = document.getElementById("sp-form");
  if (sp) sp.addEventListener("submit", async ev => {
    ev.preventDefault();
    const r = await command({ verb: "set_setpoint", variable: sp.variable.value, value: Number(sp.value.value), reason: sp.reason.value });
    if (r.ok) sp.reset();
  });
  const nf = document.getElementById("note-form");
  if (nf) nf.addEventListener("submit", async ev => {
    ev.preventDefault();
    const r = await command({ verb: "note", text: nf.text.value });
    if (r.ok) nf.reset();
  });
}

function renderGas(v) {
  const rows = (v.gas || []).map(g => `<tr><td>${g.gas.toUpperCase()}</td><td class="num">${Page.num(g.used_l, 0)} L</td>
    <td class="num">${Page.num(g.needed_l, 0)} L</td>
    <td>${g.content_l === null ? '<span class="muted">no cylinder configured</span>'
      : g.empty_utc ? `<b style="color:#b3261e">runs out ${Page.dayClock(g.empty_utc, v.utc)}</b>` : `${Page.num(g.content_l, 0)} L left: lasts the run`}</td></tr>`).join("");
  document.getElementById("gas").innerHTML = rows
    ? `<table><tr><th>gas</th><th>used</th><th>to finish</th><th>cylinder</th></tr>${rows}</table>`
    : '<p class="muted">No phase running.</p>';
}

function renderLog(v) {
  const box = document.getElementById("log");
  const sig = v.log.length ? `${v.log.length}:${v.log[v.log.length - 1].t_s}` : "0";
  if (SIG.log === sig) return;
  SIG.log = sig;
  box.innerHTML = v.log.slice().reverse().map(l =>
    `<div><span class="muted">${Page.dayClock(l.utc, v.utc)}</span> ${Page.esc(l.text)}</div>`).join("");
}

function render(v) {
  VIEW = v;
  document.getElementById("title").textContent = `${v.name} (${v.reactor})`;
  document.title = `${v.reactor} · hypoxia`;
  const [cls, text] = Page.stateChip(v);
  const chip = document.getElementById("state");
  chip.className = `chip ${cls}`;
  chip.textContent = text;
  Page.scaleBanner(v);
  renderValues(v); renderPhase(v); renderHarvests(v); renderAlarms(v); renderGas(v); renderLog(v);
  renderGrafana(v);
}

let GRAFANA = null;  // the reactor-run dashboard's address from /api/reactor ([page] grafana_url)

function renderGrafana(v) {
  if (v.grafana_url !== undefined) GRAFANA = v.grafana_url;
  const link = document.getElementById("grafana");
  link.hidden = !GRAFANA;
  if (GRAFANA) link.href = GRAFANA + (v.run_id ? `&var-run_id=${encodeURIComponent(v.run_id)}` : "");
}

(async () => {
  await Page.loadSession();
  buildActions();
  render(await Page.get(`/api/reactor/${encodeURIComponent(RID)}`));
  await Charts.load(RID);
  document.body.dataset.paintedMs = performance.now().toFixed(0);  // read by bench/operator_page.py
  document.body.dataset.painted = "1";
  document.querySelectorAll("#range button[data-s]").forEach(b => b.addEventListener("click", async () => {
    document.querySelectorAll("#range button[data-s]").forEach(x => x.classList.toggle("on", x === b));
    Charts.rangeS = Number(b.dataset.s);
    await Charts.load(RID);
  }));
  Page.stream(() => `/api/stream?reactor=${encodeURIComponent(RID)}&since=${Charts.lastT() ?? 0}`,
    { reactor: m => { render(m.view); Charts.append(m.rows); Page.updated(m.view.t_s); } }, Page.connection);
  document.getElementById("live-btn").addEventListener("click", () => Charts.backToLive());
  window.addEventListener("resize", () => Charts.build());
})();
