// Live charts of one reactor (uPlot): O2, CO2, temperature against set point and band; flows.
"use strict";

const Charts = {
  cols: null,      // {t: [], o2: [], ...} as the history endpoint returns them
  plots: [],
  rangeS: 0,       // 0: everything the service keeps (48 h)
  rid: null,
  hasCells: false, // the reactor estimates the O2 at the cells ([reactors.culture])

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
    const last = Charts.cols && Charts.cols.t.length ? Charts.cols.t[Charts.cols.t.length - 1] : null;
    let url = `/api/reactor/${encodeURIComponent(rid)}/history?points=2000`;
    if (Charts.rangeS && last) url += `&since=${last - Charts.rangeS}`;
    Charts.cols = Charts.derive(await Page.get(url));
    Charts.build();
  },

  tick(v) {
    const d = new Date(v * 1000);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
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
        cursor: { sync: { key: "reactor" } },
        scales: { x: { time: true } },
        series: [{}, ...def.series.map(s => ({
          label: s.label, stroke: s.stroke, width: s.width, dash: s.dash, spanGaps: false,
          points: { show: false },
        }))],
        bands: def.bands || [],
        axes: [{ values: (u, splits) => splits.map(Charts.tick) }, { size: 56 }],
        legend: { live: false },
      };
      const plot = new uPlot(opts, Charts.data(def), div);
      plot._def = def;
      Charts.plots.push(plot);
    }
    document.getElementById("points").textContent = `${Charts.cols.t.length} points drawn`;
  },

  data(def) {
    return [Charts.cols.t, ...def.series.map(s => Charts.cols[s.key] || Charts.cols.t.map(() => null))];
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
    if (c.t.length > 8000) { Charts.load(Charts.rid); return; }  // redraw downsampled
    for (const plot of Charts.plots) plot.setData(Charts.data(plot._def));
    document.getElementById("points").textContent = `${c.t.length} points drawn`;
  },
};
