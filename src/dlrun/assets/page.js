/* dlrun's pages: sortable tables, interactive learning curves, a hyperparameter scatter.
   Plain JavaScript inlined into each page; no library, nothing fetched. */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var COLOURS = ["#1f6fb2", "#e07b00", "#1a7f37", "#8e44ad", "#c62828", "#00838f"];

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function html(name, attrs, parent) {
    var node = document.createElement(name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function finite(v) { return typeof v === "number" && isFinite(v); }

  function fmt(v) {
    if (!finite(v)) { return "n/a"; }
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) { return v.toExponential(2); }
    return String(Number(v.toPrecision(4)));
  }

  /* ---- sortable tables: a click on a header sorts by that column, again reverses ---- */
  function sortKey(cell) {
    if (!cell) { return null; }
    var raw = cell.getAttribute("data-sort");
    if (raw !== null && cell.getAttribute("data-kind") === "num") {
      var n = parseFloat(raw);
      return isNaN(n) ? null : n;
    }
    var text = raw !== null ? raw : cell.textContent.trim();
    if (text === "" || text === "n/a") { return null; }
    var number = Number(text);  /* "0.1" and "0.003" are numbers, not words */
    return isFinite(number) ? number : text;
  }

  function compare(a, b) {
    if (a === null || b === null) { return a === b ? 0 : (a === null ? 1 : -1); }
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  function sortTable(table, column, header) {
    var body = table.tBodies[0];
    var descending = header.getAttribute("aria-sort") === "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
      return { row: row, key: sortKey(row.cells[column]), i: i };
    });
    rows.sort(function (x, y) {
      if (x.key === null || y.key === null) { return compare(x.key, y.key) || x.i - y.i; }
      var order = compare(x.key, y.key);
      return (descending ? -order : order) || x.i - y.i;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
  }

  function initTables() {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (t) {
      Array.prototype.forEach.call(t.tHead.rows[0].cells, function (th, column) {
        var button = th.querySelector("button") || th;
        button.addEventListener("click", function () { sortTable(t, column, th); });
      });
    });
  }

  /* ---- a small chart: axes with round ticks, scales, a readout line ---- */
  function ticks(lo, hi, count) {
    if (lo === hi) { return [lo]; }
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / count)));
    var err = (hi - lo) / count / step;
    step *= err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1;
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Number(v.toPrecision(12)));
    }
    return out;
  }

  function linear(lo, hi, a, b, pad) {
    if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 0.5; hi += Math.abs(hi) * 0.1 || 0.5; }
    if (pad) { var extra = (hi - lo) * pad; lo -= extra; hi += extra; }
    var f = function (v) { return a + (v - lo) / (hi - lo) * (b - a); };
    f.ticks = function (n) { return ticks(lo, hi, n); };
    f.label = fmt;
    return f;
  }

  function logScale(lo, hi, a, b) {
    var l0 = Math.log10(lo), l1 = Math.log10(hi);
    var f = function (v) { return a + (Math.log10(v) - l0) / (l1 - l0) * (b - a); };
    f.ticks = function () {
      var out = [];
      for (var e = Math.floor(l0); e <= Math.ceil(l1); e++) {
        var v = Math.pow(10, e);
        if (v >= lo / 1.0001 && v <= hi * 1.0001) { out.push(v); }
      }
      return out.length ? out : [lo, hi];
    };
    f.label = fmt;
    return f;
  }

  function frame(figure, title) {
    /* as wide as the page allows (at most 640 units), so text stays legible on a phone */
    var width = Math.round(Math.min(640, Math.max(300, figure.clientWidth || 640)));
    var box = { w: width, h: Math.round(width * 0.52), left: 56, right: 12, top: 30, bottom: 40 };
    var svg = el("svg", { viewBox: "0 0 " + box.w + " " + box.h, role: "img",
      "aria-label": title });
    figure.appendChild(svg);
    var readout = html("div", { "class": "readout", "aria-live": "polite" }, figure);
    return { svg: svg, box: box, readout: readout };
  }

  function axes(chart, x, y, xTicks, xLabel, yLabel) {
    var b = chart.box, svg = chart.svg;
    var grid = el("g", { "class": "grid" }, svg);
    var axis = el("g", { "class": "axis" }, svg);
    y.ticks(5).forEach(function (v) {
      el("line", { x1: b.left, x2: b.w - b.right, y1: y(v), y2: y(v) }, grid);
      el("text", { x: b.left - 4, y: y(v) + 4, "text-anchor": "end" }, axis).textContent =
        y.label(v);
    });
    xTicks.forEach(function (t) {
      el("line", { x1: x(t.v), x2: x(t.v), y1: b.h - b.bottom, y2: b.h - b.bottom + 4 }, axis);
      el("text", { x: x(t.v), y: b.h - b.bottom + 16, "text-anchor": "middle" }, axis)
        .textContent = t.label;
    });
    el("line", { x1: b.left, x2: b.w - b.right, y1: b.h - b.bottom, y2: b.h - b.bottom }, axis);
    el("text", { x: (b.left + b.w - b.right) / 2, y: b.h - 4, "text-anchor": "middle" }, axis)
      .textContent = xLabel;
    el("text", { x: 4, y: 14, "text-anchor": "start" }, axis).textContent = yLabel;
  }

  /* ---- learning curves: one button per quantity, train and val on the same axes ---- */
  function curveGroups(history) {
    var keys = Object.keys(history[0] || {}).filter(function (k) {
      return k !== "epoch" && k !== "seconds";
    });
    var groups = [];
    keys.forEach(function (k) {
      if (k.indexOf("val_") === 0 && keys.indexOf(k.slice(4)) >= 0) { return; }
      var members = [k];
      if (keys.indexOf("val_" + k) >= 0) { members.push("val_" + k); }
      groups.push({ name: k.replace(/^val_/, ""), keys: members });
    });
    return groups;
  }

  function drawCurves(figure, data, group, chart) {
    while (chart.svg.firstChild) { chart.svg.removeChild(chart.svg.firstChild); }
    var rows = data.history, b = chart.box;
    var epochs = rows.map(function (r) { return r.epoch; });
    var values = [];
    group.keys.forEach(function (k) {
      rows.forEach(function (r) { if (finite(r[k])) { values.push(r[k]); } });
    });
    if (!values.length) { chart.readout.textContent = "no finite values to draw"; return; }
    var x = linear(Math.min.apply(null, epochs), Math.max.apply(null, epochs), b.left,
      b.w - b.right);
    var y = linear(Math.min.apply(null, values), Math.max.apply(null, values),
      b.h - b.bottom, b.top, 0.05);
    var xTicks = x.ticks(Math.max(3, Math.floor(b.w / 80))).filter(function (v) { return v === Math.round(v); })
      .map(function (v) { return { v: v, label: String(v) }; });
    axes(chart, x, y, xTicks, "epoch", group.name);
    group.keys.forEach(function (k, i) {
      var points = rows.filter(function (r) { return finite(r[k]); })
        .map(function (r) { return x(r.epoch).toFixed(1) + "," + y(r[k]).toFixed(1); });
      el("polyline", { points: points.join(" "), "class": "series", stroke: COLOURS[i],
        "data-key": k }, chart.svg);
      el("text", { x: b.w - b.right - 4 - 120 * (group.keys.length - 1 - i), y: 14,
        "text-anchor": "end", fill: COLOURS[i] }, chart.svg).textContent = "\u2014 " + k;
    });
    var best = bestEpoch(rows, data.monitor, data.mode);
    if (best !== null && group.keys.indexOf(data.monitor) >= 0) {
      el("line", { x1: x(best), x2: x(best), y1: b.top, y2: b.h - b.bottom,
        stroke: "#1a7f37", "stroke-dasharray": "4 3" }, chart.svg);
    }
    var cursor = el("line", { x1: 0, x2: 0, y1: b.top, y2: b.h - b.bottom, stroke: "#5f6b76",
      visibility: "hidden" }, chart.svg);
    function show(evt) {
      var rect = chart.svg.getBoundingClientRect();
      var px = (evt.clientX - rect.left) / rect.width * b.w;
      var nearest = rows.reduce(function (a, r) {
        return Math.abs(x(r.epoch) - px) < Math.abs(x(a.epoch) - px) ? r : a;
      }, rows[0]);
      cursor.setAttribute("x1", x(nearest.epoch));
      cursor.setAttribute("x2", x(nearest.epoch));
      cursor.setAttribute("visibility", "visible");
      chart.readout.textContent = "epoch " + nearest.epoch + ": " + group.keys.map(function (k) {
        return k + " " + fmt(nearest[k]);
      }).join(", ") + (nearest.epoch === best ? " (best " + data.monitor + ")" : "");
    }
    chart.svg.onmousemove = show;
    chart.svg.onclick = show;
  }

  function bestEpoch(rows, monitor, mode) {
    var best = null, value = null;
    rows.forEach(function (r) {
      var v = r[monitor];
      if (!finite(v)) { return; }
      if (value === null || (mode === "min" ? v < value : v > value)) { value = v; best = r.epoch; }
    });
    return best;
  }

  function initCurves(figure, data) {
    if (!data.history || !data.history.length) { return; }
    var groups = curveGroups(data.history);
    var controls = html("div", { "class": "controls", role: "group",
      "aria-label": "quantity" }, figure);
    figure.classList.add("chart");
    var chart = frame(figure, "learning curves");
    var buttons = groups.map(function (g) {
      var button = html("button", { type: "button", "aria-pressed": "false" }, controls);
      button.textContent = g.name;
      button.addEventListener("click", function () { select(g, button); });
      return button;
    });
    function select(group, button) {
      buttons.forEach(function (bt) { bt.setAttribute("aria-pressed", String(bt === button)); });
      drawCurves(figure, data, group, chart);
    }
    var start = groups.findIndex(function (g) { return g.keys.indexOf(data.monitor) >= 0; });
    start = start < 0 ? 0 : start;
    if (groups.length) { select(groups[start], buttons[start]); }
  }

  /* ---- scatter: a hyperparameter (chosen in a list) against the monitored metric ---- */
  function axisFor(values, a, b) {
    var numbers = values.map(function (v) { return typeof v === "number" ? v : parseFloat(v); });
    var numeric = values.every(function (v, i) {
      return finite(numbers[i]) && String(v).trim() !== "" && !isNaN(Number(v));
    });
    if (numeric) {
      var lo = Math.min.apply(null, numbers), hi = Math.max.apply(null, numbers);
      var scale = lo > 0 && hi / lo >= 20 ? logScale(lo, hi, a, b) : linear(lo, hi, a, b);
      var xTicks = scale.ticks(6).map(function (v) { return { v: v, label: fmt(v) }; });
      return { pos: function (v) { return scale(Number(v)); }, ticks: xTicks, scale: scale };
    }
    var cats = values.map(String).filter(function (v, i, all) { return all.indexOf(v) === i; })
      .sort(function (p, q) { return p.localeCompare(q, undefined, { numeric: true }); });
    var step = (b - a) / cats.length;
    return {
      pos: function (v) { return a + step * (cats.indexOf(String(v)) + 0.5); },
      ticks: cats.map(function (c, i) { return { v: i, label: c }; }),
      scale: function (i) { return a + step * (i + 0.5); }
    };
  }

  function drawScatter(data, param, chart) {
    while (chart.svg.firstChild) { chart.svg.removeChild(chart.svg.firstChild); }
    var b = chart.box;
    var points = data.points.filter(function (p) {
      return finite(p.value) && p.params[param] !== undefined && p.params[param] !== "";
    });
    if (!points.length) { chart.readout.textContent = "no finished job has " + param; return; }
    var xs = axisFor(points.map(function (p) { return p.params[param]; }), b.left + 10,
      b.w - b.right - 10);
    var vals = points.map(function (p) { return p.value; });
    var y = linear(Math.min.apply(null, vals), Math.max.apply(null, vals), b.h - b.bottom,
      b.top, 0.08);
    axes(chart, xs.scale, y, xs.ticks, param, data.metric);
    points.forEach(function (p) {
      var parent = chart.svg;
      if (p.href) { parent = el("a", { href: p.href }, chart.svg); }
      var dot = el("circle", { cx: xs.pos(p.params[param]).toFixed(1), cy: y(p.value).toFixed(1),
        r: 6, "class": "point", fill: COLOURS[0], "data-job": p.job }, parent);
      el("title", {}, dot).textContent = p.job + ": " + data.metric + " " + fmt(p.value) +
        ", " + param + " " + p.params[param];
    });
    var left = data.points.length - points.length;
    chart.readout.textContent = points.length + " jobs" +
      (left ? " (" + left + " without a value are not drawn)" : "") +
      "; a point links to its job's report";
  }

  function initScatter(figure, data) {
    if (!data.points || !data.points.length || !data.params.length) { return; }
    figure.classList.add("chart");
    var controls = html("div", { "class": "controls" }, figure);
    var label = html("label", {}, controls);
    label.textContent = "hyperparameter ";
    var select = html("select", { "aria-label": "hyperparameter" }, label);
    data.params.forEach(function (p) {
      var option = html("option", { value: p }, select);
      option.textContent = p;
    });
    var chart = frame(figure, data.metric + " against a hyperparameter");
    select.addEventListener("change", function () { drawScatter(data, select.value, chart); });
    drawScatter(data, data.params[0], chart);
  }

  function initFigures() {
    Array.prototype.forEach.call(document.querySelectorAll("figure[data-kind]"), function (f) {
      var source = f.querySelector('script[type="application/json"]');
      var data = JSON.parse(source.textContent);
      if (f.getAttribute("data-kind") === "curves") { initCurves(f, data); }
      if (f.getAttribute("data-kind") === "scatter") { initScatter(f, data); }
    });
  }

  initTables();
  initFigures();
}());
