/* autoperf report charts: vanilla JS drawing inline SVG from the embedded JSON. No external assets. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
                "#9333ea", "#ea580c"];
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
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log(v) / Math.LN10));
    var m = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < m.length; i++) { if (v <= m[i] * p) return m[i] * p; }
    return 10 * p;
  }
  function frame(container, w, h) {
    var svg = el("svg", {viewBox: "0 0 " + w + " " + h, width: "100%", role: "img", "class": "chart-svg"});
    container.appendChild(svg);
    return svg;
  }
  function axes(svg, L, T, W, H, ymax, unit) {
    for (var i = 0; i <= 4; i++) {
      var y = T + H - H * i / 4;
      el("line", {x1: L, x2: L + W, y1: y, y2: y, stroke: "#e5e7eb"}, svg);
      text(svg, L - 6, y + 4, fmt(ymax * i / 4), {"text-anchor": "end", "class": "tick"});
    }
    el("line", {x1: L, x2: L, y1: T, y2: T + H, stroke: "#9ca3af"}, svg);
    el("line", {x1: L, x2: L + W, y1: T + H, y2: T + H, stroke: "#9ca3af"}, svg);
    if (unit) text(svg, 4, T - 6, unit, {"class": "tick"});
  }
  function histogram(container, h) {
    var w = 560, hh = 220, L = 50, T = 20, W = w - L - 10, H = hh - T - 50;
    var svg = frame(container, w, hh);
    var counts = h.counts, edges = h.edges, n = counts.length;
    var ymax = niceMax(Math.max.apply(null, counts.concat([1])));
    axes(svg, L, T, W, H, ymax, "runs");
    var bw = W / n;
    for (var i = 0; i < n; i++) {
      var bh = H * counts[i] / ymax;
      var r = el("rect", {x: L + i * bw + 1, y: T + H - bh, width: Math.max(1, bw - 2), height: bh,
                          fill: edges[i] >= 3000 ? "#dc2626" : (edges[i] >= 500 ? "#d97706" : "#2563eb"),
                          "class": "bar"}, svg);
      var label = (i + 1 < n ? edges[i] + "–" + edges[i + 1] : "≥" + edges[i]) + " ms";
      var tt = el("title", {}, r); tt.textContent = label + ": " + counts[i];
      text(svg, L + i * bw + bw / 2, T + H + 14, i + 1 < n ? String(edges[i]) : "≥" + edges[i],
           {"text-anchor": "middle", "class": "tick"});
    }
    text(svg, L + W / 2, hh - 8, "duration (ms, bucket lower edge)", {"text-anchor": "middle", "class": "tick"});
  }
  function lines(container, labels, series, unit) {
    var names = Object.keys(series), ymax = 0, i, j;
    var legend = names.length > 1;
    var w = legend ? 760 : 560, hh = legend ? 260 : 220, L = 56, T = 20;
    var W = w - L - (legend ? 160 : 16), H = hh - T - 40;
    var svg = frame(container, w, hh);
    for (i = 0; i < names.length; i++) {
      var vs = series[names[i]];
      for (j = 0; j < vs.length; j++) { if (vs[j] !== null && vs[j] > ymax) ymax = vs[j]; }
    }
    ymax = niceMax(ymax);
    axes(svg, L, T, W, H, ymax, unit);
    var n = labels.length;
    function X(k) { return n <= 1 ? L + W / 2 : L + W * k / (n - 1); }
    var step = Math.max(1, Math.ceil(n / 6));
    for (j = 0; j < n; j += step) {
      text(svg, X(j), T + H + 14, labels[j].replace("T", " ").slice(5, 16), {"text-anchor": "middle", "class": "tick"});
    }
    for (i = 0; i < names.length; i++) {
      var color = COLORS[i % COLORS.length], d = "", pen = false, v = series[names[i]];
      for (j = 0; j < v.length; j++) {
        if (v[j] === null || v[j] === undefined) { pen = false; continue; }
        var x = X(j), y = T + H - H * v[j] / ymax;
        d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1) + " ";
        pen = true;
        var c = el("circle", {cx: x, cy: y, r: 2.5, fill: color, "class": "point"}, svg);
        var tt = el("title", {}, c); tt.textContent = names[i] + " @ " + labels[j] + ": " + fmt(v[j]);
      }
      if (d) el("path", {d: d, fill: "none", stroke: color, "stroke-width": 1.8, "class": "line"}, svg);
      if (legend) {
        el("rect", {x: L + W + 12, y: T + i * 18, width: 10, height: 10, fill: color}, svg);
        text(svg, L + W + 28, T + i * 18 + 9, names[i].length > 22 ? names[i].slice(0, 21) + "…" : names[i],
             {"class": "legend"});
      }
    }
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
        else if (kind === "p95") lines(c, data.series.labels, data.series.p95_ms, "p95 ms");
        else if (kind === "resource") {
          var s = {}; s[key] = data.resources.series.values[key];
          lines(c, data.resources.series.labels, s, key);
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
