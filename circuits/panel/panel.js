// The P0 patching panel's front end (anywidget ES module). It draws what Python sends and
// reports clicks and control changes; every number is computed in Python (circuits.panel).
const SVG = "http://www.w3.org/2000/svg";
const LOWERS = "#2166ac";
const RAISES = "#b2182b";

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function fmt(x, digits = 4) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function ranges(xs) {
  // [2,3,4,5,8] -> "2-5,8"
  const out = [];
  for (let i = 0; i < xs.length; i++) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j] + 1) j++;
    out.push(j > i ? `${xs[i]}-${xs[j]}` : `${xs[i]}`);
    i = j;
  }
  return out.join(",");
}

function parseRanges(text) {
  // "2-5,8" -> [2,3,4,5,8]; anything unreadable is sent as -1 (refused by name in Python)
  const out = [];
  for (const part of text.split(",").map((p) => p.trim()).filter((p) => p)) {
    const m = part.match(/^(\d+)\s*[-–]\s*(\d+)$/);
    if (m) for (let x = parseInt(m[1], 10); x <= parseInt(m[2], 10); x++) out.push(x);
    else out.push(/^\d+$/.test(part) ? parseInt(part, 10) : -1);
  }
  return out;
}

function toggle(model, name) {
  const selected = [...model.get("selected")];
  const i = selected.indexOf(name);
  if (i >= 0) selected.splice(i, 1);
  else selected.push(name);
  model.set("selected", selected);
  model.save_changes();
}

function drawMap(model, root) {
  root.innerHTML = "";
  const comps = model.get("components");
  const nLayers = model.get("n_layers");
  const nHeads = model.get("n_heads");
  const nExperts = model.get("n_experts") || 0;
  const selected = new Set(model.get("selected"));
  const layers = Math.max(...comps.map((c) => c.layer)) + 1;
  const cell = 16, hw = Math.max(6, Math.min(12, 120 / Math.max(nHeads, 1)));
  const expertX = 60 + 3 * cell + 10 + nHeads * hw + 10;
  const width = expertX + (nExperts ? nExperts * hw + 10 : 0) + 40;
  const height = (layers + 1) * (cell + 3) + 36;  // room for the head indices on top
  const map = svg("svg", { width, height, class: "p0-map" });
  const y = (layer) => height - 20 - (layer + 2) * (cell + 3);
  for (let layer = -1; layer < layers; layer++) {
    const label = svg("text", { x: 4, y: y(layer) + cell - 4, class: "p0-axis" });
    label.textContent = layer < 0 ? "embed" : `L${layer}`;
    map.appendChild(label);
  }
  const headX = 60 + 3 * cell + 10;
  for (const c of comps) {
    let x, w = cell;
    if (c.kind === "embed") x = 60;
    else if (c.kind === "attn") x = 60;
    else if (c.kind === "mlp") x = 60 + 2 * cell;
    else if (c.kind === "expert") { x = expertX + c.expert * hw; w = hw - 1; }
    else { x = headX + c.head * hw; w = hw - 1; }
    const rect = svg("rect", {
      x, y: y(c.layer), width: w, height: cell, fill: c.color,
      class: "p0-cell" + (c.circuit ? " p0-circuit" : "") + (selected.has(c.name) ? " p0-selected" : ""),
      "data-name": c.name,
    });
    const tip = svg("title");
    const rel = c.relative === null ? "not measured"
      : `${(100 * c.relative).toFixed(1)}% of the clean sink (${c.exact ? "exact" : "P0-stream estimate"})`;
    tip.textContent = `${c.name}: ${rel}${c.circuit ? " (in the circuit)" : ""}; click to patch`;
    rect.appendChild(tip);
    rect.addEventListener("click", () => toggle(model, c.name));
    map.appendChild(rect);
  }
  const columns = [[60, "attn"], [60 + 2 * cell, "mlp"], [headX, "heads"]];
  if (nExperts) columns.push([expertX, "experts"]);
  for (const [x, text] of columns) {
    const t = svg("text", { x, y: height - 4, class: "p0-axis" });
    t.textContent = text;
    map.appendChild(t);
  }
  // head (expert) indices above their columns, every one that has room
  const step = hw >= 10 ? 1 : Math.ceil(10 / hw);
  for (const [x0, n] of [[headX, nHeads], [expertX, nExperts]]) {
    for (let i = 0; i < n; i += step) {
      const t = svg("text", { x: x0 + i * hw + 1, y: 10, class: "p0-index" });
      t.textContent = String(i);
      map.appendChild(t);
    }
  }
  root.appendChild(map);
  root.appendChild(drawScale(model));
  const label = model.get("effects_label");
  root.appendChild(el("div", { class: "p0-note p0-map-legend" },
    `colour: each component's single effect at P0 on the ${label}: (patched − clean) / clean; ` +
    "blue: the patch lowers it, red: raises it; grey: not measured; thick outline: the circuit; " +
    "orange outline: selected"));
}

function drawScale(model) {
  // the map's colour scale with its numbers (% of the clean value)
  const lim = 100 * (model.get("effects_scale") || 0);
  const width = 220, height = 30;
  const box = svg("svg", { width, height, class: "p0-scale" });
  const defs = svg("defs");
  const grad = svg("linearGradient", { id: "p0-grad", x1: "0", x2: "1", y1: "0", y2: "0" });
  for (const [offset, color] of [["0", LOWERS], ["0.5", "#f7f7f7"], ["1", RAISES]]) {
    grad.appendChild(svg("stop", { offset, "stop-color": color }));
  }
  defs.appendChild(grad);
  box.appendChild(defs);
  box.appendChild(svg("rect", { x: 10, y: 2, width: 200, height: 10, fill: "url(#p0-grad)", stroke: "#999" }));
  for (const [x, text, anchor] of [[10, `−${lim.toFixed(1)}%`, "start"], [110, "0", "middle"], [210, `+${lim.toFixed(1)}%`, "end"]]) {
    const t = svg("text", { x, y: 26, class: "p0-axis", "text-anchor": anchor });
    t.textContent = text;
    box.appendChild(t);
  }
  return box;
}

function drawCurve(model, result) {
  // the readout per receiver layer (or its one value), clean and patched, with its axes
  const layers = result.layers || [];
  const axis = model.get("readout_axis") || "readout";
  const width = 360, height = 200, left = 52, right = 12, top = 36, bottom = 36;
  const box = svg("svg", { width, height, class: "p0-curve" });
  const series = [["clean", result.clean, "#222"]];
  if (result.patched) series.push(["patched", result.patched, LOWERS]);
  const all = series.flatMap((s) => s[1]);
  const hi = Math.max(...all, 1e-9), lo = Math.min(0, ...all);
  const py = (v) => height - bottom - ((v - lo) * (height - top - bottom)) / (hi - lo || 1);
  const line = (x1, y1, x2, y2) => box.appendChild(svg("line", { x1, y1, x2, y2, stroke: "#555" }));
  line(left, top, left, height - bottom);
  line(left, height - bottom, width - right, height - bottom);
  for (const v of [lo, (lo + hi) / 2, hi]) {  // value ticks
    line(left - 4, py(v), left, py(v));
    const t = svg("text", { x: left - 6, y: py(v) + 3, class: "p0-axis p0-ytick", "text-anchor": "end" });
    t.textContent = Number(v).toPrecision(3);
    box.appendChild(t);
  }
  const ylab = svg("text", { x: 4, y: 12, class: "p0-axis p0-ylabel" });
  ylab.textContent = axis;
  box.appendChild(ylab);
  if (layers.length > 1) {
    const px = (i) => left + 8 + (i * (width - left - right - 16)) / (layers.length - 1);
    for (const [name, values, color] of series) {
      const pts = values.map((v, i) => `${px(i)},${py(v)}`).join(" ");
      box.appendChild(svg("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2, class: `p0-line-${name}` }));
    }
    const every = Math.ceil(layers.length / 8);
    layers.forEach((layer, i) => {
      if (i % every && i !== layers.length - 1) return;
      const t = svg("text", { x: px(i), y: height - bottom + 13, class: "p0-axis p0-xtick", "text-anchor": "middle" });
      t.textContent = String(layer);
      box.appendChild(t);
    });
    const xl = svg("text", { x: (left + width) / 2, y: height - 4, class: "p0-axis", "text-anchor": "middle" });
    xl.textContent = "receiver layer";
    box.appendChild(xl);
  } else {  // one value: a bar per series
    series.forEach(([name, values, color], i) => {
      const x = left + 30 + i * 110, y = py(values[0]);
      box.appendChild(svg("rect", { x, y: Math.min(y, py(0)), width: 60, height: Math.abs(py(0) - y), fill: color, class: `p0-bar-${name}` }));
      const t = svg("text", { x: x + 30, y: height - bottom + 13, class: "p0-axis", "text-anchor": "middle" });
      t.textContent = `${name}: ${fmt(values[0])}`;
      box.appendChild(t);
    });
  }
  series.forEach(([name, , color], i) => {  // legend
    const x = width - right - 150 + i * 75;
    box.appendChild(svg("line", { x1: x, y1: 24, x2: x + 16, y2: 24, stroke: color, "stroke-width": 3 }));
    const t = svg("text", { x: x + 20, y: 27, class: "p0-axis p0-legend" });
    t.textContent = name;
    box.appendChild(t);
  });
  return box;
}

let cvLoaded = null;

function circuitsvis(model) {
  // run circuitsvis' IIFE bundle once, in the page's global scope (it defines CircuitsVis)
  if (cvLoaded === null) {
    try {
      if (!window.CircuitsVis && model.get("circuitsvis_js")) {
        const script = document.createElement("script");
        script.textContent = model.get("circuitsvis_js");
        document.head.appendChild(script);
      }
      cvLoaded = !!window.CircuitsVis;
    } catch (e) {
      cvLoaded = false;
    }
  }
  return cvLoaded ? window.CircuitsVis : null;
}

let cvCount = 0;

function drawHeads(model, r) {
  // the receiver head before and after, as circuitsvis AttentionHeads (two "heads")
  const cv = circuitsvis(model);
  if (!cv || !r.pattern_clean) return null;
  const n = r.pattern_clean.length;
  const id = `p0-cv-${++cvCount}`;
  const box = el("div", { id, class: "p0-cv" });
  const [hl, hh] = model.get("head");
  setTimeout(() => {
    try {
      cv.render(id, cv.AttentionHeads, {
        attention: [r.pattern_clean, r.pattern_patched],
        tokens: model.get("tokens").slice(0, n),
        attentionHeadNames: [`L${hl}H${hh} clean`, `L${hl}H${hh} patched`],
        maxValue: 1.0, minValue: 0.0, maskUpperTri: true,
      });
    } catch (e) {
      box.textContent = "circuitsvis could not draw the pattern: " + e;
    }
  }, 0);
  return box;
}

function drawPattern(values, title) {
  const wrap = el("div", { class: "p0-pattern" });
  wrap.appendChild(el("div", { class: "p0-note" }, title));
  if (!values) return wrap;
  const n = values.length, px = Math.max(3, Math.floor(140 / n));
  const canvas = el("canvas", { width: n * px, height: n * px });
  const ctx = canvas.getContext("2d");
  for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) {
    const v = Math.sqrt(Math.max(0, values[q][k]));
    ctx.fillStyle = `rgb(${255 - 200 * v},${255 - 150 * v},255)`;
    ctx.fillRect(k * px, q * px, px, px);
  }
  wrap.appendChild(canvas);
  return wrap;
}

function drawReadout(model, root) {
  root.innerHTML = "";
  const r = model.get("result") || {};
  const mean = (xs) => (xs && xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
  const lines = el("div", { class: "p0-readout-values" });
  const sel = r.selection || [];
  lines.appendChild(el("div", {}, `patched: ${sel.length ? sel.join(", ") : "(nothing selected: click a component)"}`));
  lines.appendChild(el("div", {}, `clean: ${fmt(mean(r.clean))}`));
  if (r.estimate !== null && r.estimate !== undefined && !r.patched)
    lines.appendChild(el("div", { class: "p0-estimate" }, `estimate (sum of P0-stream single effects): ${fmt(r.estimate)}`));
  if (r.patched) lines.appendChild(el("div", { class: "p0-exact", "data-value": mean(r.patched) }, `patched (exact): ${fmt(mean(r.patched))}`));
  if (r.kept !== undefined) lines.appendChild(el("div", {}, `selection as a circuit: kept ${fmt(100 * r.kept, 1)}% (every other P0 component patched), ablated ${fmt(100 * r.ablated, 1)}% (the selection patched), of the clean ${model.get("readout")}`));
  if (r.paths) for (const [k, v] of Object.entries(r.paths)) lines.appendChild(el("div", {}, `path ${k}: ${fmt(v)}`));
  root.appendChild(lines);
  if (r.clean) root.appendChild(drawCurve(model, r));
  const heads = drawHeads(model, r);
  if (heads) {
    root.appendChild(heads);
  } else {  // circuitsvis unavailable: the panel's own heat maps
    const pats = el("div", { class: "p0-patterns" });
    const [hl, hh] = model.get("head");
    pats.appendChild(drawPattern(r.pattern_clean, `head ${hl}.${hh} clean`));
    pats.appendChild(drawPattern(r.pattern_patched, `head ${hl}.${hh} patched`));
    root.appendChild(pats);
  }
}

function control(label, input) {
  const wrap = el("label", { class: "p0-control" }, label + " ");
  wrap.appendChild(input);
  return wrap;
}

function drawControls(model, root) {
  const cf = el("input", { type: "text", value: model.get("counterfactual"), size: 12, class: "p0-cf" });
  cf.addEventListener("change", () => { model.set("counterfactual", cf.value); model.save_changes(); });
  const readout = el("select", { class: "p0-readout-select" });
  for (const name of model.get("readout_choices")) {
    const o = el("option", { value: name }, name);
    if (name === model.get("readout")) o.selected = true;
    readout.appendChild(o);
  }
  readout.addEventListener("change", () => { model.set("readout", readout.value); model.save_changes(); });
  const recv = el("input", { type: "text", value: ranges(model.get("receivers")), size: 10, class: "p0-receivers",
    title: "receiver layers: a list and ranges, e.g. 2-29 or 2,4,6-9" });
  recv.addEventListener("change", () => { model.set("receivers", parseRanges(recv.value)); model.save_changes(); });
  const [hl, hh] = model.get("head");
  const head = el("input", { type: "text", value: `L${hl}H${hh}`, size: 6, class: "p0-head",
    title: "the receiver head whose pattern is drawn: L<layer>H<head>, e.g. L5H3" });
  head.addEventListener("change", () => {
    const m = head.value.trim().match(/^L?(\d+)\s*[.Hh ]\s*(\d+)$/);
    model.set("head", m ? [parseInt(m[1], 10), parseInt(m[2], 10)] : [-1, -1]);  // -1: refused by Python
    model.save_changes();
  });
  const mode = el("select");
  for (const [v, t] of model.get("path_choices")) {
    const o = el("option", { value: v }, t);
    if (v === model.get("path_mode")) o.selected = true;
    mode.appendChild(o);
  }
  mode.addEventListener("change", () => { model.set("path_mode", mode.value); model.save_changes(); });
  const layer = el("input", { type: "number", value: model.get("path_layer"), style: "width:4em" });
  layer.addEventListener("change", () => { model.set("path_layer", parseInt(layer.value, 10)); model.save_changes(); });
  const clear = el("button", { class: "p0-clear" }, "clear");
  clear.addEventListener("click", () => { model.set("selected", []); model.save_changes(); });
  const exp = el("button", { class: "p0-export" }, "export selection");
  exp.addEventListener("click", () => { model.set("export_request", model.get("export_request") + 1); model.save_changes(); });
  root.append(control("counterfactual", cf), control("readout", readout), control("receiver layers", recv),
    control("receiver head", head), control("mode", mode), control("paths into layer", layer), clear, exp);
}

function render({ model, el: host }) {
  host.classList.add("p0-panel");
  const title = el("div", { class: "p0-title" });
  const status = el("div", { class: "p0-status", id: "p0-status" });
  const controls = el("div", { class: "p0-controls" });
  const body = el("div", { class: "p0-body" });
  const map = el("div", { class: "p0-mapbox" });
  const readout = el("div", { class: "p0-readout" });
  body.append(map, readout);
  host.append(title, controls, status, body);
  const update = () => {
    title.textContent = model.get("title");
    const err = model.get("error");
    status.textContent = (model.get("busy") ? "⏳ " : "") + (err ? "error: " + err : model.get("status"))
      + (model.get("exported") ? ` — exported to ${model.get("exported")}` : "");
    status.classList.toggle("p0-busy", model.get("busy"));
  };
  drawControls(model, controls);
  drawMap(model, map);
  drawReadout(model, readout);
  update();
  model.on("change:components", () => drawMap(model, map));
  for (const name of ["effects_kind", "effects_label", "effects_scale"]) model.on(`change:${name}`, () => drawMap(model, map));
  model.on("change:readout_axis", () => drawReadout(model, readout));
  for (const name of ["counterfactual", "readout", "receivers", "head", "path_mode", "path_layer"])
    model.on(`change:${name}`, () => { controls.innerHTML = ""; drawControls(model, controls); });
  model.on("change:selected", () => drawMap(model, map));
  model.on("change:result", () => drawReadout(model, readout));
  for (const name of ["status", "busy", "error", "exported", "title"]) model.on(`change:${name}`, update);
}

export default { render };
