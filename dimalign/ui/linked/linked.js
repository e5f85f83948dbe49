// dimalign's linked views in the browser (dimalign/ui/linked.py): the film player and
// Manifolds' linked panels. No build step and no npm: it speaks Streamlit's components v1
// protocol by hand (postMessage) and draws with the plotly.js that index.html loads. Everything
// that moves (a frame, a hover ring) is drawn here, without a round trip to the server; only
// what the page shows beside the view (a click, a lasso, the frame paused on) goes back.
"use strict";

// ---- Streamlit's components v1 protocol ---------------------------------------------------
function post(type, data) {
  window.parent.postMessage(Object.assign({isStreamlitMessage: true, type}, data), "*");
}

let sent = null;  // the value last sent: sending it again would only rerun the page
function report(state) {  // the view's whole state, so a frame sent never drops a click
  const text = JSON.stringify(state);
  if (text === sent) return;
  sent = text;
  post("streamlit:setComponentValue", {value: JSON.parse(text), dataType: "json"});
}

function fitHeight() {
  post("streamlit:setFrameHeight", {height: document.documentElement.scrollHeight});
}

let view = null;  // the drawn view: called with each render's payload
window.addEventListener("message", (event) => {
  if (!event.data || event.data.type !== "streamlit:render") return;
  const {kind, payload} = event.data.args;
  const views = {film: filmPlayer, panels: linkedPanels, playground: PLAYGROUND.view};
  if (!view) view = views[kind](document.getElementById("root"));
  view(payload);
  fitHeight();
});
post("streamlit:componentReady", {apiVersion: 1});

const CONFIG = {responsive: true, displaylogo: false};

// ---- the film -----------------------------------------------------------------------------
const SPLITS = [  // drawn in this order: forget on top
  {split: "retain", color: "#4C78A8", symbol: "circle", size: 5, opacity: 0.5},
  {split: "test", color: "#8c8c8c", symbol: "circle-open", size: 5, opacity: 0.7},
  {split: "forget", color: "#E45756", symbol: "x", size: 7, opacity: 0.95},
];
const GHOSTS = [["original", "#9D755D"], ["retrained", "#54A24B"]];
const MOVING = [2, 3, 4, 5, 6];  // trails, the three splits, the clicked sample's ring
const TRAIL = 5;                 // frames a trail covers
const PLAY_MS = 180;             // between frames while playing
// WebGL redraws a frame of 750 points about 3x faster than SVG (40 ms against 110 ms in
// headless Chromium, software GL); SVG where a browser has no WebGL
const WEBGL = (() => {
  try { return !!document.createElement("canvas").getContext("webgl"); } catch (e) { return false; }
})();
const STRIP_COLOURS = {da: "#B279A2", acc_forget: "#E45756", acc_retain: "#4C78A8"};

function filmPlayer(root) {
  root.innerHTML = `
    <div class="bar">
      <button id="film-play">Play</button>
      <input id="film-scrub" type="range" min="0" max="0" step="1" value="0" aria-label="Step">
      <span id="film-step" data-step=""></span>
      <button id="film-3d">3-D</button>
    </div>
    <div id="film-points" style="height:420px"></div>
    <div id="film-strip" data-marker-step="" style="height:170px"></div>
    <div class="note">Drag a lasso round samples to follow only their tracks (double-click
      clears it); click a sample to see it below; hover or click the curves to show a step.</div>`;
  const $ = (id) => document.getElementById(id);
  const gd = $("film-points"), strip = $("film-strip"), scrub = $("film-scrub");
  const label = $("film-step"), play = $("film-play"), toggle = $("film-3d");
  let p = null, sig = "", frame = 0, playing = false, three = false, timer = null;
  let seekNonce = null;  // the last step the page's curves sent (each is shown once)
  let bySplit = {}, group = null, clicked = null, ranges = null, scrubStart = null;
  const state = {};  // what goes back to the page: {frame, clicked, lasso}
  const last = () => p.steps.length - 1;

  // up the side: the residual in the linear view; an embedding's second axis ("plane": "xy",
  // the aligned UMAP) in 2-D; the 3-D view always adds the residual as z
  const up = (c) => (three || p.plane === "xy" ? c.y : c.residual);

  function at(t, idx) {  // frame t's coordinates of the samples idx: 2-D (x, up) or 3-D
    const xs = p.x[t], ys = up(p)[t], out = {x: [], y: []};
    for (const i of idx) { out.x.push(xs[i]); out.y.push(ys[i]); }
    if (three) out.z = idx.map((i) => p.residual[t][i]);
    return out;
  }

  function trails(t) {  // each followed sample's last TRAIL frames, a gap between samples
    const out = {x: [], y: [], z: []}, from = Math.max(0, t - TRAIL + 1);
    for (const i of group || bySplit.forget) {
      for (let s = from; s <= t; s++) {
        out.x.push(p.x[s][i]);
        out.y.push(up(p)[s][i]);
        out.z.push(p.residual[s][i]);
      }
      out.x.push(null); out.y.push(null); out.z.push(null);
    }
    if (!three) delete out.z;
    return out;
  }

  function moving(t) {  // restyle's update of MOVING: x and y (and z) only
    const parts = [trails(t), ...SPLITS.map((s) => at(t, bySplit[s.split])),
                   at(t, clicked === null ? [] : [clicked])];
    const out = {x: parts.map((c) => c.x), y: parts.map((c) => c.y)};
    if (three) out.z = parts.map((c) => c.z);
    return out;
  }

  function traces() {
    const type = three ? "scatter3d" : (WEBGL ? "scattergl" : "scatter"), ts = [];
    for (const [name, colour] of GHOSTS) {
      const g = (p.ghosts || {})[name];
      ts.push({type, mode: "markers", name: `${name} (fixed)`, hoverinfo: "skip",
               x: g ? g.x : [], y: g ? up(g) : [],
               z: g && three ? g.residual : undefined,
               marker: {color: colour, size: three ? 2 : 4, opacity: 0.2}});
    }
    ts.push({type, mode: "lines", name: "trails", hoverinfo: "skip", showlegend: false,
             line: {color: "rgba(228, 87, 86, 0.45)", width: 1.2}});
    for (const s of SPLITS) {
      const idx = bySplit[s.split];
      ts.push({type, mode: "markers", name: s.split, customdata: idx,
               text: idx.map((i) => `${p.splits[i]} sample ${p.rows[i]} · label ${p.labels[i]}`),
               hovertemplate: "%{text}<extra></extra>",
               marker: {color: s.color, symbol: s.symbol, size: three ? 3 : s.size,
                        opacity: s.opacity}});
    }
    ts.push({type, mode: "markers", name: "clicked", hoverinfo: "skip", showlegend: false,
             marker: {symbol: "circle-open", size: three ? 8 : 16, color: "#111", line: {width: 2}}});
    const m = moving(frame);
    MOVING.forEach((k, j) => {
      ts[k].x = m.x[j]; ts[k].y = m.y[j];
      if (three) ts[k].z = m.z[j];
    });
    return ts;
  }

  function layout() {
    const xy = p.plane === "xy", xt = xy ? "UMAP 1" : "retain direction 1";
    const yt = xy ? "UMAP 2" : "retain direction 2";
    const rt = xy ? yt : "distance off the retain plane (residual)";
    const base = {margin: {l: 55, r: 10, t: 10, b: 40}, uirevision: three ? "3d" : "2d",
                  legend: {orientation: "h", y: 1.1}, hovermode: "closest"};
    if (three) {
      return Object.assign(base, {scene: {
        xaxis: {title: {text: xt}, range: ranges.x}, yaxis: {title: {text: yt},
        range: ranges.y}, zaxis: {title: {text: "residual"}, range: ranges.r}}});
    }
    return Object.assign(base, {dragmode: "lasso",
      xaxis: {title: {text: xt}, range: ranges.x, zeroline: false},
      yaxis: {title: {text: rt}, range: xy ? ranges.y : ranges.r}});
  }

  function extent(arrays) {  // fixed axes over every frame and ghost: the film never jumps
    let lo = Infinity, hi = -Infinity;
    for (const a of arrays) for (const v of a) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (!isFinite(lo)) return [0, 1];
    const pad = 0.04 * (hi - lo || 1);
    return [lo - pad, hi + pad];
  }

  function stripTraces() {
    const c = p.curves || {step: []};
    const ts = Object.keys(c).filter((k) => k !== "step").map((k) => ({
      type: "scatter", mode: "lines", name: k, x: c.step, y: c[k],
      line: {color: STRIP_COLOURS[k] || "#666", width: 1.5},
      hovertemplate: `${k} %{y:.3f}<extra></extra>`}));
    ts.push({type: "scatter", mode: "markers", name: "frames", x: p.steps,  // a tick per frame
             y: p.steps.map(() => 0), hovertemplate: "frame at step %{x}<extra></extra>",
             marker: {symbol: "line-ns-open", size: 8, color: "#999"}});
    return ts;
  }

  function stripLayout() {
    const shapes = (p.spans || []).map(([name, x0, x1, colour]) => ({
      type: "rect", xref: "x", yref: "paper", x0, x1, y0: 0, y1: 1, layer: "below",
      fillcolor: colour, line: {width: 0}, label: {text: name, textposition: "top center",
      font: {size: 9, color: "#888"}}}));
    shapes.push({type: "line", xref: "x", yref: "paper", x0: 0, x1: 0, y0: 0, y1: 1,
                 line: {color: "#31333F", width: 2}});  // the current frame's step
    const end = Math.max(p.total || 0, ...p.steps, ...((p.curves || {}).step || []));
    return {margin: {l: 55, r: 10, t: 10, b: 35}, shapes, hovermode: "x",
            xaxis: {title: {text: "step"}, range: [0, end || 1]}, yaxis: {range: [-0.05, 1.05]},
            legend: {orientation: "h", y: 1.25}, uirevision: "strip"};
  }

  function show(t) {  // draw frame t: restyle x/y only, move the strip's marker
    frame = Math.max(0, Math.min(t, last()));
    const step = p.steps[frame];
    scrub.value = frame;
    label.dataset.step = step;
    label.textContent = `step ${step} of ${p.total} · ${p.phases[frame]} · frame ${frame + 1}/${p.steps.length}`;
    Plotly.restyle(gd, moving(frame), MOVING);
    const marker = `shapes[${(p.spans || []).length}]`;
    Plotly.relayout(strip, {[`${marker}.x0`]: step, [`${marker}.x1`]: step});
    strip.dataset.markerStep = step;
  }

  function pause(send) {
    playing = false;
    play.textContent = "Play";
    clearTimeout(timer);
    if (send) { state.frame = frame; report(state); }
  }

  function tick() {  // a live run's film waits at its newest frame for the next one
    timer = setTimeout(() => {
      if (!playing) return;
      if (frame < last()) show(frame + 1);
      else if (p.complete) return pause(true);
      tick();
    }, PLAY_MS);
  }

  function nearest(step) {  // the frame whose step is closest to `step`
    let best = 0;
    p.steps.forEach((s, i) => { if (Math.abs(s - step) < Math.abs(p.steps[best] - step)) best = i; });
    return best;
  }

  play.onclick = () => {
    if (playing) return pause(true);
    if (frame >= last() && p.complete) show(0);
    playing = true;
    play.textContent = "Pause";
    tick();
  };
  scrub.addEventListener("input", () => {
    scrubStart = performance.now();  // window.__filmRedrawMs: from here to plotly_afterplot
    pause(false);
    show(Number(scrub.value));
  });
  scrub.addEventListener("change", () => { state.frame = frame; report(state); });
  toggle.onclick = () => {
    three = !three;
    toggle.textContent = three ? "2-D" : "3-D";
    Plotly.react(gd, traces(), layout(), CONFIG);
  };

  function wire() {  // plotly's events, once the plots exist
    gd.on("plotly_afterplot", () => {
      if (scrubStart === null) return;
      window.__filmRedrawMs = performance.now() - scrubStart;
      scrubStart = null;
    });
    gd.on("plotly_click", (e) => {
      const q = e.points.find((pt) => pt.curveNumber >= 3 && pt.curveNumber <= 5);
      if (!q) return;
      clicked = q.customdata;
      show(frame);
      state.clicked = p.ids[clicked];
      report(state);
    });
    gd.on("plotly_selected", (e) => {
      if (!e) return;
      const idx = e.points.filter((q) => q.curveNumber >= 3 && q.curveNumber <= 5)
        .map((q) => q.customdata);
      group = idx.length ? idx : null;
      state.lasso = idx.map((i) => p.ids[i]);
      show(frame);
      report(state);
    });
    gd.on("plotly_deselect", () => {
      group = null;
      delete state.lasso;
      show(frame);
      report(state);
    });
    strip.on("plotly_hover", (e) => { pause(false); show(nearest(e.points[0].x)); });
    strip.on("plotly_click", (e) => { pause(false); show(nearest(e.points[0].x)); state.frame = frame; report(state); });
  }

  return function update(next) {
    const s = [next.steps.length, next.complete, (next.curves || {step: []}).step.length,
               next.ids.length, next.seek ? next.seek.nonce : ""].join("|");
    if (s === sig) return;  // a rerun of the page sends the same film again
    if (!next.steps.length) { label.textContent = "no frames yet"; return; }
    const first = p === null;
    sig = s;
    p = next;
    bySplit = {forget: [], retain: [], test: []};
    p.splits.forEach((sp, i) => (bySplit[sp] = bySplit[sp] || []).push(i));
    const g = Object.values(p.ghosts || {});
    ranges = {x: extent([...p.x, ...g.map((v) => v.x)]), y: extent([...p.y, ...g.map((v) => v.y)]),
              r: extent([...p.residual, ...g.map((v) => v.residual), [0]])};
    scrub.max = last();
    strip.dataset.steps = p.steps.join(",");  // the frames' steps, for a reader of the page
    if (first) {  // a live film follows its newest frame, unless the page names the frame
      playing = !p.complete && p.frame == null;  // (the one paused on before a redraw)
      play.textContent = playing ? "Pause" : "Play";
      frame = p.frame ?? (p.complete ? 0 : last());
    } else if (playing) {
      frame = last();  // the person's frame is kept only while paused
    }
    const seek = p.seek && p.seek.nonce !== seekNonce ? p.seek : null;
    if (seek) {  // a step clicked on the page's live curves: that frame, paused there
      seekNonce = seek.nonce;
      playing = false;
      play.textContent = "Play";
      frame = nearest(seek.step);
    }
    frame = Math.min(frame, last());
    Plotly.react(gd, traces(), layout(), CONFIG);
    Plotly.react(strip, stripTraces(), stripLayout(), CONFIG);
    if (first) wire();
    show(frame);
    if (seek) { state.frame = frame; report(state); }  // kept across the page's redraws
    if (playing) { clearTimeout(timer); tick(); }
  };
}

// ---- Manifolds: three linked panels ---------------------------------------------------------
const SYMBOLS = {retain: "circle", test: "circle-open", forget: "x"};

function linkedPanels(root) {
  root.innerHTML = `<div id="panels" data-highlight=""><div id="panels-plot" style="height:460px"></div></div>`;
  const box = document.getElementById("panels"), gd = document.getElementById("panels-plot");
  let p = null, sig = "", wired = false;
  const n = () => p.models.length, axis = (k, a) => (k ? `${a}${k + 1}` : a);

  function traces() {
    const type = p.webgl ? "scattergl" : "scatter", pal = p.palette;
    const text = p.splits.map((s, i) => `${s} sample ${p.rows[i]}<br>label ${p.labels[i]}`);
    const ts = p.models.map((m, k) => ({
      type, mode: "markers", name: m, showlegend: false, x: p.coords[m].x, y: p.coords[m].y,
      xaxis: axis(k, "x"), yaxis: axis(k, "y"),
      text: text.map((t, i) => `${t}, predicted ${p.predictions[m][i]}`),
      hovertemplate: "%{text}<extra></extra>",
      marker: {color: p.labels.map((l) => pal[l % pal.length]),
               symbol: p.splits.map((s) => SYMBOLS[s] || "circle"),
               size: p.splits.map((s) => (s === "forget" ? 8 : 5))},
      unselected: {marker: {opacity: 0.12}}}));
    for (const c of [...new Set(p.labels)].sort((a, b) => a - b)) {  // legend keys only
      ts.push({type, x: [null], y: [null], mode: "markers", name: `class ${c}`,
               marker: {color: pal[c % pal.length], size: 8}});
    }
    for (const s of ["retain", "test", "forget"]) {
      ts.push({type, x: [null], y: [null], mode: "markers", name: s,
               marker: {color: "#666", symbol: SYMBOLS[s], size: 8}});
    }
    return ts;
  }

  function layout() {
    const out = {margin: {l: 10, r: 10, t: 30, b: 10}, dragmode: "lasso", hovermode: "closest",
                 annotations: [], shapes: [], uirevision: "panels"};
    const gap = 0.015, w = (1 - gap * (n() - 1)) / n();
    p.models.forEach((m, k) => {
      // one aligned frame: the panels share their axes (a zoom in one zooms all three)
      out[k ? `xaxis${k + 1}` : "xaxis"] = {domain: [k * (w + gap), k * (w + gap) + w],
        anchor: axis(k, "y"), showticklabels: false, zeroline: false,
        matches: k ? "x" : undefined};
      out[k ? `yaxis${k + 1}` : "yaxis"] = {anchor: axis(k, "x"), showticklabels: false,
        zeroline: false, matches: k ? "y" : undefined};
      out.annotations.push({text: m, showarrow: false, xref: "paper", yref: "paper",
        x: k * (w + gap) + w / 2, y: 1.0, yanchor: "bottom", font: {size: 14}});
    });
    return out;
  }

  function highlight(i) {  // a ring round sample i in every panel (shapes: no trace redrawn)
    box.dataset.highlight = i === null ? "" : String(i);
    const shapes = i === null ? [] : p.models.map((m, k) => ({
      type: "circle", xref: axis(k, "x"), yref: axis(k, "y"), xsizemode: "pixel",
      ysizemode: "pixel", xanchor: p.coords[m].x[i], yanchor: p.coords[m].y[i],
      x0: -9, x1: 9, y0: -9, y1: 9, line: {color: "#111", width: 2}}));
    Plotly.relayout(gd, {shapes});
  }

  function ours(e) {  // the event's points on a panel (not on a legend key)
    return ((e && e.points) || []).filter((q) => q.curveNumber < n());
  }

  function wire() {
    gd.on("plotly_hover", (e) => { const q = ours(e)[0]; if (q) highlight(q.pointNumber); });
    gd.on("plotly_unhover", () => highlight(null));
    gd.on("plotly_selected", (e) => {  // a lasso in one panel selects the same samples in all
      const ids = [...new Set(ours(e).map((q) => q.pointNumber))];
      if (!ids.length) return;
      // plotly keeps the lasso as a layout selection and recomputes its own panel from it at
      // the next restyle (which emptied that panel): drop it, then select in every panel
      Plotly.relayout(gd, {selections: []}).then(() => Plotly.restyle(
        gd, {selectedpoints: p.models.map(() => ids)}, p.models.map((_, k) => k)));
    });
    gd.on("plotly_deselect", () => {
      Plotly.restyle(gd, {selectedpoints: p.models.map(() => null)}, p.models.map((_, k) => k));
    });
    gd.on("plotly_click", (e) => {
      const q = ours(e)[0];
      if (!q) return;
      const m = p.models[q.curveNumber], i = q.pointNumber;
      report({clicked: {split: p.splits[i], label: p.labels[i], predicted: p.predictions[m][i],
                        row: p.rows[i], model: m}});
    });
  }

  return function update(next) {
    const s = JSON.stringify([next.models, next.rows, next.coords[next.models[0]].x.slice(0, 8)]);
    if (s === sig) return;
    sig = s;
    p = next;
    Plotly.react(gd, traces(), layout(), CONFIG);
    if (!wired) { wire(); wired = true; }
  };
}
