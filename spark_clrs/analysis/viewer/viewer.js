// spark_clrs page viewer, part 1 of 4: data, DOM helpers, formats, tables, SVG axes.
//
// Inlined into RUN/results/index.html and compare's index.html by viewer/page.py, which
// concatenates viewer.js, run_page.js, compare_page.js and main.js inside one function
// (strict mode). Everything shown comes from the JSON in <script id="spark-data">.
// Programs, prompts and replies are untrusted: this script only ever inserts data as text
// (text nodes, textContent, setAttribute of fixed attribute names), never as markup.

var T0 = performance.now();
var DATA = JSON.parse(document.getElementById("spark-data").textContent);
var TEXTS = DATA.texts || [];
var SVGNS = "http://www.w3.org/2000/svg";
// Factor and strategy colours come with the data (palette.py: fixed by name, the same on
// every page and plot); this palette only colours rejection stages.
var STAGE_COLOURS = ["#d62728", "#9467bd", "#e377c2", "#8c564b", "#ff7f0e", "#7f7f7f",
                     "#17becf", "#bcbd22", "#393b79"];

// ---------------------------------------------------------------------------- DOM helpers

function add(parent, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) { child.forEach(function (c) { add(parent, c); }); return; }
  if (typeof child === "string" || typeof child === "number") {
    parent.appendChild(document.createTextNode(String(child)));
  } else {
    parent.appendChild(child);
  }
}

// el("td", {cls: "num", title: "..."}, "text", node, ...): text children become text nodes.
function el(tag, props) {
  var node = document.createElement(tag);
  setProps(node, props);
  for (var i = 2; i < arguments.length; i++) add(node, arguments[i]);
  return node;
}

function setProps(node, props) {
  if (!props) return;
  Object.keys(props).forEach(function (k) {
    var v = props[k];
    if (v === null || v === undefined) return;
    if (k === "cls") node.setAttribute("class", v);
    else if (k === "onclick" || k === "oninput" || k === "onchange") node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = String(v);
    else node.setAttribute(k, String(v));
  });
}

function svg(tag, attrs) {
  var node = document.createElementNS(SVGNS, tag);
  Object.keys(attrs || {}).forEach(function (k) {
    if (k === "text") node.textContent = String(attrs[k]);
    else if (k === "onclick") node.addEventListener("click", attrs[k]);
    else node.setAttribute(k, String(attrs[k]));
  });
  for (var i = 2; i < arguments.length; i++) if (arguments[i]) node.appendChild(arguments[i]);
  return node;
}

function text(i) { return (i === null || i === undefined) ? "" : (TEXTS[i] || ""); }

// A link to a page-internal anchor only: data never becomes a URL.
function candidateLink(id) {
  if (id === null || id === undefined) return "-";
  return el("a", {href: "#c=" + Number(id)}, "#" + Number(id));
}

// ------------------------------------------------------------------------------- formats

function isNum(v) { return typeof v === "number" && isFinite(v); }
function acc(v) { return isNum(v) ? v.toFixed(4) : "-"; }
function intf(v) { return isNum(v) ? Math.round(v).toLocaleString("en-US") : "-"; }
function pct(v) { return isNum(v) ? (100 * v).toFixed(1) + "%" : "-"; }
function usd(v) { return isNum(v) ? "$" + v.toFixed(4) : "-"; }
function secs(v) { return isNum(v) ? v.toFixed(2) + " s" : "-"; }
function signed(v) { return isNum(v) ? (v > 0 ? "+" : "") + v.toFixed(4) : "-"; }
function str(v) {
  if (v === null || v === undefined || v === "") return "-";
  if (Array.isArray(v)) return v.length ? v.join(",") : "-";
  return String(v);
}
var FORMATS = {acc: acc, int: intf, pct: pct, usd: usd, secs: secs, signed: signed, text: str};

function colourMap(keys, palette) {
  var map = {};
  keys.forEach(function (k, i) { map[k] = palette[i % palette.length]; });
  return map;
}

function uniq(values) {
  var seen = {}, out = [];
  values.forEach(function (v) { if (!seen.hasOwnProperty(v)) { seen[v] = 1; out.push(v); } });
  return out;
}

// ----------------------------------------------------------------------- sortable tables

// columns: [{key, label, kind, value(row) -> sort value, cell(row) -> node|string, cls}]
function Table(columns, rows, options) {
  options = options || {};
  this.columns = columns;
  this.rows = rows;
  this.filter = function () { return true; };
  this.sortKey = options.sortKey || null;
  this.sortDir = options.sortDir || 1;
  this.rowProps = options.rowProps || function () { return {}; };
  this.count = options.count || null;
  this.limit = options.limit || Infinity;  // Rows drawn before "show all" (layout cost).
  this.more = el("button", {type: "button", hidden: "hidden"});
  this.tbody = el("tbody");
  var self = this;
  this.headers = columns.map(function (c) {
    var th = el("th", {cls: "sortable" + (isNumeric(c) ? " num" : ""), title: c.title || null},
                c.label);
    th.addEventListener("click", function () {
      if (self.sortKey === c.key) self.sortDir = -self.sortDir;
      else { self.sortKey = c.key; self.sortDir = isNumeric(c) ? -1 : 1; }
      self.render();
    });
    return th;
  });
  this.node = el("div", {cls: "table-wrap"},
                 el("table", null, el("thead", null, el("tr", null, this.headers)), this.tbody),
                 this.more);
  this.more.addEventListener("click", function () { self.limit = Infinity; self.render(); });
  this.render();
}

function isNumeric(c) { return ["acc", "int", "pct", "usd", "secs", "signed"].indexOf(c.kind) >= 0; }

function sortValue(c, row) {
  var v = c.value ? c.value(row) : row[c.key];
  if (v && typeof v === "object" && "v" in v) v = v.v;
  return v;
}

function cellContent(c, row) {
  if (c.cell) return c.cell(row);
  var v = row[c.key];
  if (v && typeof v === "object" && "t" in v) return str(v.t);
  return (FORMATS[c.kind] || str)(v);
}

Table.prototype.render = function () {
  var self = this;
  var shown = this.rows.filter(function (r) { return self.filter(r); });
  if (this.sortKey !== null) {
    var col = this.columns.filter(function (c) { return c.key === self.sortKey; })[0];
    shown.sort(function (a, b) {
      var x = sortValue(col, a), y = sortValue(col, b);
      var xm = x === null || x === undefined || x === "", ym = y === null || y === undefined || y === "";
      if (xm || ym) return xm && ym ? 0 : (xm ? 1 : -1);  // Missing values last.
      if (typeof x === "number" && typeof y === "number") return self.sortDir * (x - y);
      return self.sortDir * String(x).localeCompare(String(y), "en", {numeric: true});
    });
  }
  this.headers.forEach(function (th, i) {
    var c = self.columns[i];
    th.classList.remove("sorted-asc", "sorted-desc");
    if (c.key === self.sortKey) th.classList.add(self.sortDir > 0 ? "sorted-asc" : "sorted-desc");
  });
  var body = el("tbody");
  shown.slice(0, this.limit).forEach(function (row) {
    var tr = el("tr", self.rowProps(row));
    self.columns.forEach(function (c) {
      tr.appendChild(el("td", {cls: (isNumeric(c) ? "num " : "") + (c.cls || "")},
                        cellContent(c, row)));
    });
    body.appendChild(tr);
  });
  this.tbody.parentNode.replaceChild(body, this.tbody);
  this.tbody = body;
  if (this.count) this.count.textContent = shown.length + " of " + this.rows.length + " match";
  if (shown.length > this.limit) {
    this.more.removeAttribute("hidden");
    this.more.textContent = "show all " + shown.length + " rows (" + this.limit + " drawn)";
  } else {
    this.more.setAttribute("hidden", "hidden");
  }
};

// ---------------------------------------------------------------------------- SVG plots

function Scale(d0, d1, r0, r1) {
  var span = (d1 - d0) || 1;
  return function (v) { return r0 + (v - d0) / span * (r1 - r0); };
}

function niceTicks(lo, hi, n) {
  var span = hi - lo;
  if (!(span > 0)) return [lo];
  var step = Math.pow(10, Math.floor(Math.log10(span / n)));
  [1, 2, 5, 10].some(function (m) { if (span / (step * m) <= n) { step *= m; return true; } return false; });
  var out = [];
  for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

// Axes, grid and labels; returns {x, y} scales.
function axes(root, box, xDomain, yDomain, xLabel, yLabel, integerX) {
  var x = Scale(xDomain[0], xDomain[1], box.left, box.right);
  var y = Scale(yDomain[0], yDomain[1], box.bottom, box.top);
  var xt = niceTicks(xDomain[0], xDomain[1], 10);
  if (integerX) xt = xt.filter(function (v) { return Math.abs(v - Math.round(v)) < 1e-9; });
  niceTicks(yDomain[0], yDomain[1], 6).forEach(function (v) {
    root.appendChild(svg("line", {x1: box.left, x2: box.right, y1: y(v), y2: y(v), stroke: "#eceff3"}));
    root.appendChild(svg("text", {x: box.left - 6, y: y(v) + 4, "text-anchor": "end", text: v.toFixed(3)}));
  });
  xt.forEach(function (v) {
    root.appendChild(svg("line", {x1: x(v), x2: x(v), y1: box.bottom, y2: box.bottom + 4, stroke: "#999"}));
    root.appendChild(svg("text", {x: x(v), y: box.bottom + 16, "text-anchor": "middle", text: String(v)}));
  });
  root.appendChild(svg("rect", {x: box.left, y: box.top, width: box.right - box.left,
                                height: box.bottom - box.top, fill: "none", stroke: "#c7ccd3"}));
  root.appendChild(svg("text", {x: (box.left + box.right) / 2, y: box.bottom + 32,
                                "text-anchor": "middle", text: xLabel}));
  root.appendChild(svg("text", {x: 14, y: (box.top + box.bottom) / 2, "text-anchor": "middle",
                                transform: "rotate(-90 14 " + (box.top + box.bottom) / 2 + ")",
                                text: yLabel}));
  return {x: x, y: y};
}

function stepPath(points, x, y, xEnd) {
  if (!points.length) return "";
  var d = "M" + x(points[0][0]) + "," + y(points[0][1]);
  for (var i = 1; i < points.length; i++) {
    d += "H" + x(points[i][0]) + "V" + y(points[i][1]);
  }
  if (xEnd !== undefined) d += "H" + x(xEnd);
  return d;
}

function legendItem(colour, label, shape) {
  var sw = el("span", {cls: "swatch"});
  sw.style.background = shape === "x" ? "transparent" : colour;
  if (shape === "x") { sw.style.border = "2px solid " + colour; sw.style.borderRadius = "0"; }
  if (shape === "band") sw.style.opacity = "0.35";
  return el("span", null, sw, label);
}
