// Live charts of one reactor (uPlot): O2, CO2, temperature against set point and band; flows.
"use strict";

const Charts = {
  cols: null,      // {t: [], o2: [], ...} as the history endpoint returns them
  plots: [],
  rangeS: 0,       // 0: everything the service keeps (48 h)
  rid: null,
  pending: null,   // the window being fetched
  hasCells: false, // the reactor estimates the O2 at the cells ([reactors.culture])
  zoom: null,      // {since, until, cols} while a dragged window is shown at full resolution
  stale: false,    // the live columns outgrew the page while zoomed: reload when back to live

  defs() {
    const band = (key, label, unit, color) => ({
      title: `${label} (${unit})`,
      series: [
        { label: `${label} measured`, key, stroke: color, width: 2 },
        { label: "set point", key: `${key}_sp`, stroke: "#1b2430", width: 1, dash: [6, 4] },
        { label: "band high", key: `${key}_hi`, stroke: "#8fbf9f", width: 1 },
        { label: "band low", key: `${key}_lo`, stroke: "#8fbf9f", width: 1 },
      ],
      bands: [{ series: [3, 4], fill: "rgba(30,123,69,0.10)" }],
    });
    const o2 = band("o2", "O₂", "%", "#1f5fa8");
    if (Charts.cols && Charts.cols.do && Charts.cols.do.some(v => v !== null)) {
      o2.series.push({ label: "DO measured", key: "do", stroke: "#7b3fa0", width: 2 });
    }
    if (Charts.hasCells || (Charts.cols && Charts.cols.cells && Charts.cols.cells.some(v => v !== null))) {
      o2.series.push({ label: "O₂ at the cells (est.)", key: "cells", stroke: "#7b3fa0", width: 1.5 });
    }
    return [
      o2,
      band("co2", "CO₂", "%", "#b35c00"),
      band("temp", "Temperature", "°C", "#b3261e"),
      {
        title: "Gas flows (L/min)",
        series: [
          { label: "N₂", key: "n2_lpm", stroke: "#1f5fa8", width: 1.5 },
          { label: "air", key: "air_lpm", stroke: "#6b7785", width: 1.5 },
          { label: "O₂", key: "o2_lpm", stroke: "#1e7b45", width: 1.5 },
          { label: "CO₂", key: "co2_lpm", stroke: "#b35c00", width: 1.5 },
        ],
      },
    ];
  },

  derive(c) {
    for (const key of ["o2", "co2", "temp"]) {
      const sp = c[`${key}_sp`], bd = c[`${key}_band`];
      c[`${key}_hi`] = sp.map((v, i) => v === null || bd[i] === null ? null : v + bd[i]);
      c[`${key}_lo`] = sp.map((v, i) => v === null || bd[i] === null ? null : v - bd[i]);
    }
    return c;
  },

  async load(rid) {
    Charts.rid = rid;
    Charts.setZoom(null);
    Charts.stale = false;
    const last = Charts.cols && Charts.cols.t.length ? Charts.cols.t[Charts.cols.t.length - 1] : null;
    let url = `/api/reactor/${encodeURIComponent(rid)}/history?points=2000`;
    if (Charts.rangeS && last) url += `&since=${last - Charts.rangeS}`;
    Charts.cols = Charts.derive(await Page.get(url));
    Charts.build();
  },

  tick(v, seconds = false) {
    const d = new Date(v * 1000);
    const opts = { hour: "2-digit", minute: "2-digit", hour12: false };
    if (seconds) opts.second = "2-digit";
    return d.toLocaleTimeString([], opts);
  },

  ticks(u, splits) {  // seconds on the axis once a window is narrower than half an hour
    const span = u.scales.x.max - u.scales.x.min;
    return splits.map(v => Charts.tick(v, span < 1800));
  },

  // Drag across any chart: that window is fetched again from the service at full resolution
  // (up to 2000 points, min/max buckets beyond), instead of stretching the downsampled view.
  onSelect(u) {
    const sel = u.select;
    if (!sel || sel.width < 4) return;
    const since = u.posToVal(sel.left, "x"), until = u.posToVal(sel.left + sel.width, "x");
    for (const p of Charts.plots) p.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    Charts.zoomTo(since, until);
  },

  async zoomTo(since, until) {
    if (!(until > since)) return;
    const key = `${since}:${until}`;
    if (Charts.pending === key) return;  // the synced charts select together: fetch once
    Charts.pending = key;
    try {
      const url = `/api/reactor/${encodeURIComponent(Charts.rid)}/history?points=2000`
        + `&since=${since}&until=${until}`;
      const cols = Charts.derive(await Page.get(url));
      Charts.setZoom({ since, until, cols });
      Charts.build();
    } finally {
      Charts.pending = null;
    }
  },

  async backToLive() {
    Charts.setZoom(null);
    if (Charts.stale) { await Charts.load(Charts.rid); return; }
    Charts.build();
  },

  setZoom(zoom) {
    Charts.zoom = zoom;
    const btn = document.getElementById("live-btn");
    if (btn) btn.hidden = zoom === null;
  },

  shown() {
    return Charts.zoom ? Charts.zoom.cols : Charts.cols;
  },

  pointsText() {
    const n = Charts.shown().t.length;
    if (!Charts.zoom) return `${n} points drawn`;
    const { since, until } = Charts.zoom;
    return `zoomed: ${Charts.tick(since)}–${Charts.tick(until)}, ${n} points drawn `
      + "(fetched again at full resolution; drag to narrow)";
  },

  lastT() {
    const t = Charts.cols ? Charts.cols.t : [];
    return t.length ? t[t.length - 1] : null;
  },

  build() {
    const box = document.getElementById("charts");
    box.innerHTML = "";
    Charts.plots = [];
    const width = Math.max(320, box.clientWidth - 4);
    for (const def of Charts.defs()) {
      const div = document.createElement("div");
      div.className = "chart";
      box.appendChild(div);
      const opts = {
        title: def.title, width, height: 170,
        cursor: { sync: { key: "reactor" }, drag: { x: true, y: false, setScale: false } },
        hooks: { setSelect: [u => Charts.onSelect(u)] },
        scales: { x: { time: true } },
        series: [{}, ...def.series.map(s => ({
          label: s.label, stroke: s.stroke, width: s.width, dash: s.dash, spanGaps: false,
          points: { show: false },
        }))],
        bands: def.bands || [],
        axes: [{ values: Charts.ticks }, { size: 56 }],
        legend: { live: false },
      };
      const plot = new uPlot(opts, Charts.data(def), div);
      plot._def = def;
      Charts.plots.push(plot);
    }
    document.getElementById("points").textContent = Charts.pointsText();
  },

  data(def) {
    const c = Charts.shown();
    return [c.t, ...def.series.map(s => c[s.key] || c.t.map(() => null))];
  },

  append(rows) {
    if (!Charts.cols || !rows || !rows.t || !rows.t.length) return;
    const c = Charts.cols;
    Charts.derive(rows);
    for (const key of Object.keys(c)) {
      if (rows[key]) c[key].push(...rows[key]);
    }
    if (Charts.rangeS) {
      const cut = c.t[c.t.length - 1] - Charts.rangeS;
      let drop = 0;
      while (drop < c.t.length && c.t[drop] < cut) drop++;
      if (drop) for (const key of Object.keys(c)) c[key].splice(0, drop);
    }
    if (Charts.zoom) {  // the live columns keep growing; the zoomed window stays as fetched
      if (c.t.length > 8000) Charts.stale = true;
      return;
    }
    if (c.t.length > 8000) { Charts.load(Charts.rid); return; }  // redraw downsampled
    for (const plot of Charts.plots) plot.setData(Charts.data(plot._def));
    document.getElementById("points").textContent = Charts.pointsText();
  },
};
