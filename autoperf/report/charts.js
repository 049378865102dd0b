/* autoperf report charts: vanilla JS drawing inline SVG from the embedded JSON. No external assets.
   Axes have round ticks (1, 2, 5 x 10^k; time at whole seconds, minutes, hours or days); series are placed
   by time, so gaps in the data stay gaps; legends are HTML lists with the full names (they wrap). */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
                "#9333ea", "#ea580c"];
  var DASHES = ["", "6 3", "2 3"];            // after ten series the colours repeat with another dash
  var BUCKET_S = {second: 1, "10s": 10, minute: 60, "10min": 600, hour: 3600, day: 86400};
  var TIME_STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
                      86400, 172800, 604800];
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]); }
    if (parent) parent.appendChild(e);
    return e;
  }
  function text(parent, x, y, s, attrs) {
    var a = attrs || {}; a.x = x; a.y = y;
    var t = el("text", a, parent); t.textContent = s; return t;
  }
  function fmt(v) {
    if (v === null || v === undefined || isNaN(v)) return "n/a";
    if (Math.abs(v) >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
    if (Math.abs(v) >= 10) return v.toFixed(0);
    return v.toFixed(1);
  }
  /* 0, step, 2 step … covering max, step 1, 2 or 5 x 10^k, about five ticks */
  function niceTicks(max) {
    if (!(max > 0)) max = 1;
    var raw = max / 5, p = Math.pow(10, Math.floor(Math.log(raw) / Math.LN10)), step = 10 * p;
    var m = [1, 2, 5];
    for (var i = 0; i < m.length; i++) { if (raw <= m[i] * p) { step = m[i] * p; break; } }
    var n = Math.ceil(max / step - 1e-9), ticks = [];
    for (var k = 0; k <= n; k++) ticks.push(k * step);
    return {ticks: ticks, max: n * step, step: step};
  }
  function tickLabel(v, step) {
    if (step >= 1000) return v === 0 ? "0" : (v / 1000).toLocaleString("en-US") + "k";
    var digits = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log(step) / Math.LN10 - 1e-9));
    return v.toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits});
  }
  function frame(container, w, h) {
    var svg = el("svg", {viewBox: "0 0 " + w + " " + h, width: w, height: h, role: "img", "class": "chart-svg"});
    container.appendChild(svg);
    return svg;
  }
  function yAxis(svg, L, T, W, H, y, unit) {
    for (var i = 0; i < y.ticks.length; i++) {
      var yy = T + H - H * y.ticks[i] / y.max;
      el("line", {x1: L, x2: L + W, y1: yy, y2: yy, stroke: "#e5e7eb"}, svg);
      text(svg, L - 6, yy + 4, tickLabel(y.ticks[i], y.step), {"text-anchor": "end", "class": "tick ytick"});
    }
    el("line", {x1: L, x2: L, y1: T, y2: T + H, stroke: "#9ca3af"}, svg);
    el("line", {x1: L, x2: L + W, y1: T + H, y2: T + H, stroke: "#9ca3af"}, svg);
    if (unit) text(svg, 4, T - 8, unit, {"class": "tick"});
  }
  /* drawn at the container's width (text keeps its size on a phone), between min and max */
  function widthOf(container, min, max) {
    return Math.max(min, Math.min(max, (container.clientWidth || max) - 16));
  }
  function histogram(container, h) {
    var w = widthOf(container, 300, 420), hh = 200, L = 46, T = 18, W = w - L - 8, H = hh - T - 40;
    var svg = frame(container, w, hh);
    var counts = h.counts, edges = h.edges, n = counts.length;
    var y = niceTicks(Math.max.apply(null, counts.concat([1])));
    yAxis(svg, L, T, W, H, y, "runs");
    var bw = W / n;
    for (var i = 0; i < n; i++) {
      var bh = H * counts[i] / y.max;
      var r = el("rect", {x: L + i * bw + 1, y: T + H - bh, width: Math.max(1, bw - 2), height: bh,
                          fill: edges[i] >= 3000 ? "#dc2626" : (edges[i] >= 500 ? "#d97706" : "#2563eb"),
                          "class": "bar"}, svg);
      var label = (i + 1 < n ? edges[i] + "–" + edges[i + 1] : "≥" + edges[i]) + " ms";
      var tt = el("title", {}, r); tt.textContent = label + ": " + counts[i];
      if (i % 2 === 0 || n <= 8) {
        text(svg, L + i * bw + bw / 2, T + H + 14, i + 1 < n ? String(edges[i]) : "≥" + edges[i],
             {"text-anchor": "middle", "class": "tick xtick"});
      }
    }
    text(svg, L + W / 2, hh - 6, "duration (ms, bucket lower edge)", {"text-anchor": "middle", "class": "tick"});
  }
  function parseTime(label) {    /* bucket labels are UTC: 2025-01-20, …T10:00, …T10:07, …T10:07:10 */
    var s = label.length === 10 ? label + "T00:00:00" : (label.length === 16 ? label + ":00" : label);
    return Date.parse(s + "Z");
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function timeLabel(t, step, withDate) {
    var d = new Date(t), day = pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
    if (step >= 86400) return day;
    var hm = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + (step < 60 ? ":" + pad(d.getUTCSeconds()) : "");
    return withDate ? day + " " + hm : hm;
  }
  /* ticks at whole multiples of a round step (UTC), at most about six over the range */
  function timeTicks(t0, t1) {
    var span = (t1 - t0) / 1000, step = TIME_STEPS_S[TIME_STEPS_S.length - 1];
    for (var i = 0; i < TIME_STEPS_S.length; i++) { if (span / TIME_STEPS_S[i] <= 6) { step = TIME_STEPS_S[i]; break; } }
    var ms = step * 1000, ticks = [];
    for (var t = Math.ceil(t0 / ms) * ms; t <= t1; t += ms) ticks.push(t);
    return {ticks: ticks, step: step};
  }
  /* the usual time between two points of a series (its median spacing) */
  function medianStep(times, v) {
    var steps = [], last = null;
    for (var j = 0; j < v.length; j++) {
      if (v[j] === null || v[j] === undefined) continue;
      if (last !== null) steps.push(times[j] - last);
      last = times[j];
    }
    if (!steps.length) return Infinity;
    steps.sort(function (a, b) { return a - b; });
    return steps[Math.floor(steps.length / 2)];
  }
  function legend(container, names) {
    var ul = document.createElement("ul");
    ul.className = "legend";
    for (var i = 0; i < names.length; i++) {
      var li = document.createElement("li"), sw = document.createElement("span"), nm = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = COLORS[i % COLORS.length];
      if (i >= COLORS.length) sw.style.opacity = "0.6";
      nm.className = "name";
      nm.textContent = names[i];
      li.appendChild(sw); li.appendChild(nm); ul.appendChild(li);
    }
    container.appendChild(ul);
  }
  function lines(container, labels, bucket, series, unit) {
    var names = Object.keys(series), ymax = 0, i, j;
    var w = widthOf(container, 300, 1200), hh = 240, L = 56, T = 22, W = w - L - 30, H = hh - T - 36;
    var svg = frame(container, w, hh);
    for (i = 0; i < names.length; i++) {
      var vs = series[names[i]];
      for (j = 0; j < vs.length; j++) { if (vs[j] !== null && vs[j] > ymax) ymax = vs[j]; }
    }
    var y = niceTicks(ymax);
    yAxis(svg, L, T, W, H, y, unit);
    var times = labels.map(parseTime), width = (BUCKET_S[bucket] || 60) * 1000;
    var t0 = times[0], t1 = Math.max(times[times.length - 1], t0 + width);
    function X(t) { return L + W * (t - t0) / (t1 - t0); }
    var x = timeTicks(t0, t1), withDate = (t1 - t0) > 86400000 && x.step < 86400;
    for (j = 0; j < x.ticks.length; j++) {
      var xx = X(x.ticks[j]);
      el("line", {x1: xx, x2: xx, y1: T + H, y2: T + H + 4, stroke: "#9ca3af"}, svg);
      text(svg, xx, T + H + 16, timeLabel(x.ticks[j], x.step, withDate), {"text-anchor": "middle", "class": "tick xtick"});
    }
    for (i = 0; i < names.length; i++) {
      var color = COLORS[i % COLORS.length], dash = DASHES[Math.floor(i / COLORS.length) % DASHES.length];
      var d = "", pen = false, v = series[names[i]], last = null, gap = 5 * medianStep(times, v);
      for (j = 0; j < v.length; j++) {
        if (v[j] === null || v[j] === undefined) continue;
        if (last !== null && times[j] - last > gap) pen = false;    // far longer than usual without data: a gap
        var px = X(times[j]), py = T + H - H * v[j] / y.max;
        d += (pen ? "L" : "M") + px.toFixed(1) + " " + py.toFixed(1) + " ";
        pen = true;
        last = times[j];
        var c = el("circle", {cx: px, cy: py, r: 2.5, fill: color, "class": "point"}, svg);
        var tt = el("title", {}, c); tt.textContent = names[i] + " @ " + labels[j] + ": " + fmt(v[j]);
      }
      if (d) {
        var a = {d: d, fill: "none", stroke: color, "stroke-width": 1.8, "class": "line"};
        if (dash) a["stroke-dasharray"] = dash;
        el("path", a, svg);
      }
    }
    if (names.length > 1) legend(container, names);
  }
  function draw() {
    var node = document.getElementById("autoperf-data");
    if (!node) return;
    var data = JSON.parse(node.textContent);
    var charts = document.querySelectorAll("[data-chart]");
    for (var i = 0; i < charts.length; i++) {
      var c = charts[i], kind = c.getAttribute("data-chart"), key = c.getAttribute("data-key");
      try {
        if (kind === "hist") histogram(c, data.histograms[key]);
        else if (kind === "p95") lines(c, data.series.labels, data.series.bucket, data.series.p95_ms, "p95 ms");
        else if (kind === "resource") {
          var s = {}; s[key] = data.resources.series.values[key];
          lines(c, data.resources.series.labels, data.resources.series.bucket, s, key);
        }
        c.setAttribute("data-drawn", "1");
      } catch (e) {
        c.setAttribute("data-drawn", "error");
        c.textContent = "chart failed: " + e;
      }
    }
    document.body.setAttribute("data-charts-drawn", String(charts.length));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw); else draw();
})();
