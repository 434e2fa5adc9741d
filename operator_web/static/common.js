// Shared by every view: session, API calls with the CSRF token, formatting, live stream.
"use strict";

const Page = {
  session: null,

  async loadSession() {
    const r = await fetch("/api/session", { credentials: "same-origin" });
    if (r.status === 401) { location.href = "/login"; throw new Error("not logged in"); }
    Page.session = await r.json();
    const who = document.getElementById("who");
    if (who) who.textContent = `${Page.session.user} · ${Page.session.role}`;
    const site = document.getElementById("site");
    if (site) site.textContent = Page.session.site;
    const out = document.getElementById("logout");
    if (out) out.onclick = async () => { await Page.post("/api/logout", {}); location.href = "/login"; };
    return Page.session;
  },

  async get(url) {
    const r = await fetch(url, { credentials: "same-origin" });
    if (r.status === 401) { location.href = "/login"; throw new Error("not logged in"); }
    return r.json();
  },

  async post(url, body) {
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": Page.session ? Page.session.csrf : "" },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await r.json(); } catch (e) { data = { ok: false, message: `HTTP ${r.status}` }; }
    return data;
  },

  updates: [],  // [run time of the cycle shown, wall ms when drawn]: bench/operator_page.py reads it
  updated(tS) {
    Page.updates.push([tS, Date.now()]);
    if (Page.updates.length > 200) Page.updates.shift();
  },

  toast(text, bad) {
    const t = document.getElementById("toast");
    if (!t) return;
    t.textContent = text;
    t.className = bad ? "bad" : "";
    t.style.display = "block";
    clearTimeout(Page._toastTimer);
    Page._toastTimer = setTimeout(() => { t.style.display = "none"; }, 6000);
  },

  // ---- formatting
  num(v, d) { return v === null || v === undefined ? "–" : Number(v).toFixed(d); },
  digits: { o2: 2, co2: 2, temp: 1, do: 1, cells: 2 },
  dur(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    s = Math.max(0, Math.round(s));
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    const m = Math.floor(s % 3600 / 60), sec = s % 60;
    if (d) return `${d} d ${h} h`;
    if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
    if (m) return `${m} min ${String(sec).padStart(2, "0")} s`;
    return `${sec} s`;
  },
  clock(iso) {
    if (!iso) return "–";
    const t = new Date(iso);
    return t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  },
  dayClock(iso, nowIso) {
    if (!iso) return "–";
    const t = new Date(iso), now = nowIso ? new Date(nowIso) : new Date();
    const same = t.toDateString() === now.toDateString();
    const hm = t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return same ? hm : `${t.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" })} ${hm}`;
  },
  esc(s) {
    return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  },
  alarmState: {
    active_unacknowledged: "ACTIVE · unacknowledged",
    active_acknowledged: "active · acknowledged",
    returned_unacknowledged: "returned · unacknowledged",
    shelved: "shelved",
  },
  valueClass(v) {
    if (v.value === null || v.value === undefined) return "none";
    if (v.in_band === false) return "warn";
    return "ok";
  },
  stateChip(view) {
    const p = view.phase || {};
    if (view.finished && p.state !== "complete") return ["idle", "not controlled"];
    const s = p.state || "idle";
    if (s === "running") return ["", "running"];
    if (s === "held") return ["warn", "held"];
    if (s === "complete") return ["info", "complete"];
    if (s === "aborted" || s === "stopped") return ["bad", s];
    return ["idle", s];
  },
  harvestText(h, nowIso) {
    if (!h) return "no harvest pending";
    if (h.state === "overdue") return `${h.name}: OVERDUE — released ${Page.clock(h.released_utc)}, confirm now`;
    if (h.state === "due") return `${h.name}: DUE — collect and confirm`;
    return `${h.name}: ${Page.dur(h.exposure_s)} of ${Page.dur(h.target_s)} in band, due about ${Page.dayClock(h.due_utc, nowIso)} (in ${Page.dur(h.remaining_s)})`;
  },

  // ---- live stream (server-sent events), reconnecting by itself
  stream(url, handlers, onState) {
    let es = null;
    const open = () => {
      es = new EventSource(typeof url === "function" ? url() : url);
      for (const [name, fn] of Object.entries(handlers)) {
        es.addEventListener(name, ev => fn(JSON.parse(ev.data)));
      }
      es.onopen = () => onState && onState(true);
      es.onerror = () => { onState && onState(false); es.close(); setTimeout(open, 2000); };
    };
    open();
    return () => es && es.close();
  },
  connection(ok) {
    const b = document.getElementById("conn");
    if (!b) return;
    b.style.display = ok ? "none" : "block";
  },
  scaleBanner(view) {
    const b = document.getElementById("scale");
    if (!b) return;
    if (view && view.time_scale && view.time_scale !== 1) {
      b.textContent = `Simulation: the service's clock runs ${view.time_scale}× faster than real time; times shown are simulated.`;
      b.style.display = "block";
    } else b.style.display = "none";
  },
};
