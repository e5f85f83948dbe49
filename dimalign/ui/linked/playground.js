// The Learn page's DA playground (dimalign/ui/linked.py `playground`): synthetic retain and
// forget clouds in 2-D or 3-D that the person turns, spreads and re-measures with sliders (or
// a drag) inside this frame, so a move never waits on the server. The math is plain functions
// of arrays, with the conventions of dimalign/geometry.py (rows are samples, the Gram matrix
// FᵀF is uncentred); tests/test_playground.py runs them in node against geometry.py.
"use strict";

const PLAYGROUND = (() => {
  // ---- linear algebra on small dense matrices (arrays of rows) -----------------------------
  function gram(points, dim) {  // FᵀF (dim × dim) of the samples' first dim coordinates
    const g = Array.from({length: dim}, () => new Array(dim).fill(0));
    for (const p of points) {
      for (let i = 0; i < dim; i++) for (let j = i; j < dim; j++) g[i][j] += p[i] * p[j];
    }
    for (let i = 0; i < dim; i++) for (let j = 0; j < i; j++) g[i][j] = g[j][i];
    return g;
  }

  // eigenvalues (descending) and unit eigenvectors of a symmetric matrix, by cyclic Jacobi
  // rotations: exact to rounding for the 2×2 and 3×3 matrices drawn here
  function eigen(matrix) {
    const n = matrix.length, a = matrix.map((r) => r.slice());
    const v = a.map((_, i) => a.map((__, j) => (i === j ? 1 : 0)));
    for (let sweep = 0; sweep < 50; sweep++) {
      let off = 0;
      for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) off += a[i][j] ** 2;
      if (off < 1e-30 * (1 + a.reduce((s, r, i) => s + r[i] ** 2, 0))) break;
      for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) rotate(a, v, p, q);
    }
    const order = a.map((r, i) => i).sort((i, j) => a[j][j] - a[i][i]);
    return {values: order.map((i) => a[i][i]), vectors: order.map((i) => v.map((r) => r[i]))};
  }

  function rotate(a, v, p, q) {  // zero a[p][q] (a Jacobi rotation applied on both sides)
    if (a[p][q] === 0) return;
    const theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
    const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
    const c = 1 / Math.sqrt(t * t + 1), s = t * c, n = a.length;
    for (let k = 0; k < n; k++) {  // columns p and q
      const akp = a[k][p], akq = a[k][q];
      a[k][p] = c * akp - s * akq;
      a[k][q] = s * akp + c * akq;
    }
    for (let k = 0; k < n; k++) {  // rows p and q
      const apk = a[p][k], aqk = a[q][k];
      a[p][k] = c * apk - s * aqk;
      a[q][k] = s * apk + c * aqk;
    }
    for (let k = 0; k < n; k++) {
      const vkp = v[k][p], vkq = v[k][q];
      v[k][p] = c * vkp - s * vkq;
      v[k][q] = s * vkp + c * vkq;
    }
  }

  // singular values of the matrix whose columns are `cols`, by one-sided Jacobi: the columns
  // are made orthogonal and their norms are the values; small ones stay accurate (the sines of
  // near-zero angles), which going through MᵀM would lose
  function svdvals(cols) {
    const c = cols.map((x) => x.slice()), dot = (x, y) => x.reduce((s, xi, i) => s + xi * y[i], 0);
    for (let sweep = 0; sweep < 50; sweep++) {
      let turned = false;
      for (let p = 0; p < c.length; p++) {
        for (let q = p + 1; q < c.length; q++) {
          const alpha = dot(c[p], c[p]), beta = dot(c[q], c[q]), gamma = dot(c[p], c[q]);
          if (Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
          turned = true;
          const zeta = (beta - alpha) / (2 * gamma);
          const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
          const cs = 1 / Math.sqrt(1 + t * t), sn = cs * t;
          for (let i = 0; i < c[p].length; i++) {
            const x = c[p][i], y = c[q][i];
            c[p][i] = cs * x - sn * y;
            c[q][i] = sn * x + cs * y;
          }
        }
      }
      if (!turned) break;
    }
    return c.map((x) => Math.sqrt(dot(x, x))).sort((x, y) => y - x);
  }

  // ---- what geometry.py measures -------------------------------------------------------------
  function topBasis(points, dim, k) {  // top-k eigenvectors of FᵀF; every eigenpair too
    const e = eigen(gram(points, dim));
    return {vectors: e.vectors.slice(0, k), every: e.vectors, values: e.values, k};
  }

  function frobenius(m) { return Math.sqrt(m.reduce((s, r) => s + r.reduce((t, x) => t + x * x, 0), 0)); }

  // DA(D_f | D_r) = ‖F_f F_fᵀ U_r U_rᵀ‖_F / ‖F_f F_fᵀ‖_F (as ‖G U_r‖: U_r is orthonormal)
  function alignment(forget, basis, dim) {
    const g = gram(forget, dim);
    const gu = basis.vectors.map((u) => g.map((row) => row.reduce((s, x, i) => s + x * u[i], 0)));
    return Math.min(1, frobenius(gu) / frobenius(g));
  }

  // principal angles in degrees, ascending, between the spans of orthonormal vector lists:
  // arcsin of the sines where the cosine is large (as geometry.angles_between, after scipy)
  function principalAngles(ua, ub) {
    if (ua.length < ub.length) [ua, ub] = [ub, ua];
    const dot = (x, y) => x.reduce((s, xi, i) => s + xi * y[i], 0);
    const cross = ub.map((b) => ua.map((a) => dot(a, b)));  // columns of uaᵀ ub
    const cosines = svdvals(cross).map((x) => Math.min(1, x));
    const rest = ub.map((b, j) => b.map((x, i) => x - ua.reduce((s, a, l) => s + a[i] * cross[j][l], 0)));
    const sines = svdvals(rest).map((x) => Math.min(1, x)).reverse();
    const radians = cosines.map((c, i) => (c * c >= 0.5 ? Math.asin(sines[i]) : Math.acos(c)));
    return radians.map((r) => (r * 180) / Math.PI).sort((x, y) => x - y);
  }

  function measure(forget, retain, dim, k) {  // everything the readout and the arrows show
    const r = topBasis(retain, dim, k), f = topBasis(forget, dim, k);
    const energy = r.values.slice(0, k).reduce((s, x) => s + x, 0) / r.values.reduce((s, x) => s + x, 0);
    return {da: alignment(forget, r, dim), angles: principalAngles(f.vectors, r.vectors),
            retain: r, forget: f, energy};
  }

  // ---- the clouds ----------------------------------------------------------------------------
  function normals(seed, n) {  // n standard normal triples (mulberry32, Box-Muller): seeded
    let s = seed >>> 0;
    const uniform = () => {
      s = (s + 0x6D2B79F5) >>> 0;
      let t = Math.imul(s ^ (s >>> 15), 1 | s);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
    };
    const gauss = () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
    return Array.from({length: n}, () => [gauss(), gauss(), gauss()]);
  }

  function clouds(seed) { return {retain: normals(seed, 200), forget: normals(seed + 1, 80)}; }

  const RETAIN_SD = [3, 1.2, 0.35];  // a flat retain cloud, its axes turned RETAIN_TURN in-plane
  const RETAIN_TURN = 25;
  const FORGET_SD = 2.5;  // along the forget cloud's main direction; across: times `spread`

  function frame(azimuth, elevation) {  // orthonormal axes: the first points (azimuth, elevation)
    const r = (azimuth * Math.PI) / 180, t = (elevation * Math.PI) / 180;
    return [[Math.cos(t) * Math.cos(r), Math.cos(t) * Math.sin(r), Math.sin(t)],
            [-Math.sin(r), Math.cos(r), 0],
            [-Math.sin(t) * Math.cos(r), -Math.sin(t) * Math.sin(r), Math.cos(t)]];
  }

  function place(base, sd, axes, dim) {  // Σ sd_i n_i axis_i, cut to dim coordinates
    return base.map((n) => Array.from({length: dim}, (_, c) =>
      axes.reduce((s, axis, i) => s + sd[i] * n[i] * axis[c], 0)));
  }

  // the clouds for the sliders' settings: {rotate, tilt (3-D only), spread}
  function arrange(base, dim, s) {
    const retain = place(base.retain, RETAIN_SD, frame(RETAIN_TURN, 0), dim);
    const sd = [FORGET_SD, FORGET_SD * s.spread, FORGET_SD * s.spread];
    const forget = place(base.forget, sd, frame(s.rotate, dim === 3 ? s.tilt : 0), dim);
    return {retain, forget};
  }

  // ---- the view ------------------------------------------------------------------------------
  const CONFIG = {responsive: true, displaylogo: false, displayModeBar: false};
  const RANGE = [-9, 9];
  const STYLE = `
    .pg-controls { display: grid; grid-template-columns: 120px 1fr 70px; gap: 2px 10px;
                   align-items: center; }
    .pg-controls input[type=range] { width: 100%; }
    .pg-readout { padding: 6px 0; font-variant-numeric: tabular-nums; }
    .pg-readout b { font-size: 16px; }
    button.pg-dim { font: inherit; padding: 2px 10px; border: 1px solid #ccc; border-radius: 6px;
                    background: #fff; cursor: pointer; }`;
  const SLIDERS = [  // id, label, min, max, step, start
    ["rotate", "turn forget", -90, 90, 1, 60],
    ["tilt", "tilt forget (3-D)", -90, 90, 1, 0],
    ["spread", "spread forget", 0.05, 1.5, 0.05, 0.3],
    ["k", "k", 1, 2, 1, 1],
  ];

  function view(root) {
    root.innerHTML = `<style>${STYLE}</style>
      <div class="pg-controls">${SLIDERS.map(([id, label, lo, hi, step, start]) => `
        <label for="pg-${id}">${label}</label>
        <input id="pg-${id}" type="range" min="${lo}" max="${hi}" step="${step}" value="${start}"
               aria-label="${label}"><span id="pg-${id}-value"></span>`).join("")}
      </div>
      <div class="pg-readout" id="pg-readout">
        <button class="pg-dim" id="pg-dim">3-D</button>
        <b id="pg-da" data-value="">DA</b> · <span id="pg-kshown"></span> ·
        <span id="pg-angles"></span><br><span id="pg-spectrum" class="note"></span>
      </div>
      <div id="pg-plot" style="height:440px"></div>
      <div class="note">Blue: retain samples and the retain eigenvectors (solid: the top-k that
        span U_r; dotted: the rest). Red: forget samples and their own top-k directions (dashed).
        In 2-D, drag in the plot to turn the forget cloud.</div>`;
    const $ = (id) => document.getElementById(id), gd = $("pg-plot");
    let base = null, dim = 2, started = null;

    const settings = () => Object.fromEntries(SLIDERS.map(([id]) => [id, Number($(`pg-${id}`).value)]));

    // the readout now; the plot two frames on, so the new numbers are painted before a redraw
    // (tens of ms) and a burst of moves (a drag) redraws once per frame, with the newest clouds
    let pending = null;
    function update() {
      const s = settings(), pts = arrange(base, dim, s), m = measure(pts.forget, pts.retain, dim, s.k);
      $("pg-da").dataset.value = String(m.da);
      $("pg-da").textContent = `DA = ${m.da.toFixed(3)}`;
      $("pg-kshown").textContent = `k = ${s.k}`;
      $("pg-kshown").dataset.value = String(s.k);
      const angles = m.angles.map((a) => `${a.toFixed(1)}°`).join(", ");
      $("pg-angles").textContent = `principal angles: ${angles}`;
      $("pg-angles").dataset.value = JSON.stringify(m.angles);
      const values = m.retain.values.map((v) => v.toFixed(0)).join(", ");
      $("pg-spectrum").textContent = `retain eigenvalues ${values}: the top ${s.k} hold ` +
        `${(100 * m.energy).toFixed(1)} % of the energy`;
      for (const [id] of SLIDERS) $(`pg-${id}-value`).textContent = $(`pg-${id}`).value;
      if (pending === null) requestAnimationFrame(() => requestAnimationFrame(draw));
      pending = {pts, m};
    }

    function draw() {
      if (pending === null) return;  // drawn already (the first plot)
      Plotly.react(gd, traces(pending.pts, pending.m), layout(), CONFIG);
      pending = null;
    }

    function segments(vectors, values, n, from, to) {  // lines through 0, ±2 sd long
      const out = Array.from({length: dim}, () => []);
      vectors.slice(from, to).forEach((u, i) => {
        const half = 2 * Math.sqrt(Math.max(values[from + i], 0) / n);
        for (let c = 0; c < dim; c++) out[c].push(-half * u[c], half * u[c], null);
      });
      return out;
    }

    function trace(xyz, extra) {
      const t = Object.assign({type: dim === 3 ? "scatter3d" : "scatter", x: xyz[0], y: xyz[1],
                               hoverinfo: "skip"}, extra);
      if (dim === 3) t.z = xyz[2];
      return t;
    }

    function traces(pts, m) {
      const cols = (p) => Array.from({length: dim}, (_, c) => p.map((q) => q[c]));
      const r = m.retain, f = m.forget, k = r.k, size = dim === 3 ? 2.5 : 5;
      return [
        trace(cols(pts.retain), {mode: "markers", name: "retain",
          marker: {color: "#4C78A8", size, opacity: 0.45}}),
        trace(cols(pts.forget), {mode: "markers", name: "forget",
          marker: {color: "#E45756", size: size + 1, symbol: "x", opacity: 0.8}}),
        trace(segments(r.every, r.values, pts.retain.length, 0, k),
          {mode: "lines", name: "U_r (top-k retain)", line: {color: "#1f3b73", width: 5}}),
        trace(segments(r.every, r.values, pts.retain.length, k, dim),
          {mode: "lines", name: "other retain", line: {color: "#4C78A8", width: 2, dash: "dot"}}),
        trace(segments(f.vectors, f.values, pts.forget.length, 0, k),
          {mode: "lines", name: "forget top-k", line: {color: "#E45756", width: 3, dash: "dash"}}),
      ];
    }

    function layout() {
      const base = {margin: {l: 30, r: 10, t: 10, b: 30}, showlegend: true,
                    legend: {orientation: "h", y: 1.08}, uirevision: `pg${dim}`};
      if (dim === 3) {
        const axis = {range: RANGE, zeroline: true};
        return Object.assign(base, {scene: {xaxis: axis, yaxis: axis, zaxis: axis, aspectmode: "cube"}});
      }
      return Object.assign(base, {dragmode: false,
        xaxis: {range: RANGE, fixedrange: true, zeroline: true},
        yaxis: {range: RANGE, fixedrange: true, scaleanchor: "x", zeroline: true}});
    }

    function setDim(d) {
      dim = d;
      $("pg-dim").textContent = d === 3 ? "2-D" : "3-D";
      const k = $("pg-k");
      k.max = String(d);
      if (Number(k.value) > d) k.value = String(d);
      $("pg-tilt").disabled = d !== 3;
      update();
    }

    let dragging = false;
    function drag(e) {  // 2-D: the forget cloud's main direction follows the pointer
      if (dim !== 2 || !dragging || !(e.buttons & 1)) return;
      const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
      const x = xa.p2l(e.clientX - box.left - xa._offset), y = ya.p2l(e.clientY - box.top - ya._offset);
      let angle = (Math.atan2(y, x) * 180) / Math.PI;
      if (angle > 90) angle -= 180;
      if (angle < -90) angle += 180;
      $("pg-rotate").value = String(Math.round(angle));
      update();
    }

    for (const [id] of SLIDERS) {
      $(`pg-${id}`).addEventListener("input", () => { started = performance.now(); update(); });
    }
    $("pg-dim").onclick = () => setDim(dim === 2 ? 3 : 2);
    gd.addEventListener("pointerdown", (e) => { dragging = true; drag(e); });
    // on the window: plotly lays a cover over the page while a button is down, which takes
    // the moves from the plot
    window.addEventListener("pointermove", drag);
    window.addEventListener("pointerup", () => { dragging = false; });

    return function render(payload) {
      if (base) return;  // a rerun of the page sends the same payload: keep the person's moves
      base = clouds(payload.seed);
      setDim(2);
      draw();  // the first plot now: plotly's events exist from here on
      gd.on("plotly_afterplot", () => {  // window.__pgRedrawMs: from a slider's input to drawn
        if (started === null) return;
        window.__pgRedrawMs = performance.now() - started;
        started = null;
      });
    };
  }

  return {gram, eigen, svdvals, topBasis, alignment, principalAngles, measure, clouds, arrange, view};
})();

if (typeof module === "object") module.exports = PLAYGROUND;  // node, in the tests
