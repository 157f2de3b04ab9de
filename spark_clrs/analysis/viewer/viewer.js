// spark_clrs run viewer: inlined into RUN/results/index.html (and compare's index.html).
//
// Everything shown comes from the JSON in <script id="spark-data">. Programs, prompts
// and replies are untrusted: this script only ever inserts data as text (text nodes,
// textContent, setAttribute of fixed attribute names), never as markup.
(function () {
  "use strict";

  var T0 = performance.now();
  var DATA = JSON.parse(document.getElementById("spark-data").textContent);
  var TEXTS = DATA.texts || [];
  var SVGNS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939"];
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

  // ------------------------------------------------------------------------------ run page

  function runPage() {
    var run = DATA.run || {};
    var cands = DATA.candidates || [];
    var byId = {};
    cands.forEach(function (c) { byId[c.id] = c; });
    var children = {};
    cands.forEach(function (c) {
      if (c.parent_id !== null && c.parent_id !== undefined) {
        (children[c.parent_id] = children[c.parent_id] || []).push(c);
      }
    });
    var factors = uniq(cands.map(function (c) { return c.factor; }));
    var factorColour = colourMap(factors, PALETTE);
    factorColour.seed = "#111111";
    var stages = uniq(cands.filter(rejected).map(function (c) { return c.stage || c.status; }));
    var stageColour = colourMap(stages, STAGE_COLOURS);
    var bestPath = {};
    for (var b = byId[run.best_program_id]; b; b = byId[b.parent_id]) bestPath[b.id] = true;

    function rejected(c) { return c.status === "rejected" || c.status === "failed"; }

    // Header.
    var llm = DATA.llm_totals || {};
    var title = el("h1", null, "spark_clrs run: " + str(run.strategy) + " on " + str(run.profile) +
                   " (seed " + str(run.seed) + ")");
    if (String(run.llm_model || "").indexOf("spark/offline") === 0) {
      title.appendChild(el("span", {cls: "live", title: "spark/offline answers the router, refiner and rewriter with rule-based moves"},
                           "offline proposer: rule-based, not an LLM"));
    }
    if (DATA.live) title.appendChild(el("span", {cls: "live"}, "live: the search is running; this page reloads every few seconds"));
    add(document.body.querySelector("#app"), [
      el("header", null, title,
         el("div", {cls: "meta"},
            el("span", null, "LLM " + str(run.llm_model)),
            el("span", null, str(run.proposals) + " / " + str(run.iterations) + " proposals"),
            el("span", null, "seed program " + str(run.seed_program)),
            el("span", null, str(run.run_dir)),
            el("span", null, "generated " + str(DATA.generated_at)))),
      el("nav", null, el("a", {href: "#overview"}, "Overview"), el("a", {href: "#candidates"}, "Candidates"),
         el("a", {href: "#lineage"}, "Lineage"), el("a", {href: "#factors"}, "Gains per factor"),
         el("a", {href: "#llm"}, "Tokens and cost"))]);
    var main = el("main");
    document.getElementById("app").appendChild(main);
    var detail = el("section", {id: "detail", hidden: "hidden"});
    main.appendChild(detail);

    // Overview: cards + plot.
    var best = byId[run.best_program_id];
    var noise = DATA.seed_noise || {};
    main.appendChild(el("section", {id: "overview"}, el("h2", null, "Best so far"),
      el("div", {cls: "cards"},
         card("best OOD-val (fitness)", best ? best.fitness_short : "-", best ? best.fitness_text : null),
         card("best candidate", best ? candidateLink(best.id) : "-"),
         card("its OOD-test", acc(run.best_ood_acc)),
         card("seed OOD-val", noise.text ? noise.text.split(" (")[0] : acc(run.seed_ood_val_acc), noise.text),
         card("gain over seed", signed(run.improvement_over_seed)),
         card("valid rate", pct(run.valid_rate)),
         card("entanglement rate", pct(run.entanglement_rate)),
         card("tokens", intf(llm.total_tokens) + (llm.estimated_tokens ? " + " + intf(llm.estimated_tokens) + " est." : ""),
              llm.estimated_tokens ? "estimated: the offline proposer's prompt and reply lengths / 4" : null),
         card("cost", usd(llm.cost_usd))),
      bestSoFarPlot()));

    function card(k, v, title) { return el("div", {cls: "card", title: title || null}, el("div", {cls: "v"}, v), el("div", {cls: "k"}, k)); }

    function bestSoFarPlot() {
      var W = 900, H = 360, box = {left: 62, right: W - 16, top: 14, bottom: H - 78};
      var strip = H - 52;  // Row of rejected / failed proposals below the axes.
      var done = cands.filter(function (c) { return c.status !== "proposed" && c.status !== "evaluating"; });
      var scored = done.filter(function (c) { return isNum(c.fitness); });
      var ys = scored.map(function (c) { return c.fitness; });
      if (isNum(noise.lo)) ys.push(noise.lo, noise.hi);
      var lo = ys.length ? Math.min.apply(null, ys) : 0, hi = ys.length ? Math.max.apply(null, ys) : 1;
      var pad = (hi - lo) * 0.08 || 0.01;
      var maxId = Math.max(1, cands.length ? cands[cands.length - 1].id : 1);
      var root = svg("svg", {cls: "plot", viewBox: "0 0 " + W + " " + H, width: W, height: H,
                             role: "img", "aria-label": "best fitness so far against evaluations"});
      root.setAttribute("class", "plot");
      var s = axes(root, box, [0, maxId], [lo - pad, hi + pad],
                   "evaluations (candidate id; 0 = seed)", "fitness (OOD-val accuracy)", true);
      if (isNum(noise.lo)) {
        root.appendChild(svg("rect", {x: box.left, width: box.right - box.left, y: s.y(noise.hi),
                                      height: Math.max(1, s.y(noise.lo) - s.y(noise.hi)),
                                      fill: "#7f7f7f", opacity: 0.18},
                             svg("title", {text: "seed noise band: " + noise.text})));
      }
      if (isNum(noise.fitness)) {
        root.appendChild(svg("line", {x1: box.left, x2: box.right, y1: s.y(noise.fitness), y2: s.y(noise.fitness),
                                      stroke: "#7f7f7f", "stroke-dasharray": "4 3"}));
      }
      var curve = DATA.best_so_far || [];
      if (curve.length) {
        root.appendChild(svg("path", {d: stepPath(curve, s.x, s.y, done.length ? done[done.length - 1].id : undefined),
                                      fill: "none", stroke: "#1f5fbf", "stroke-width": 2.2}));
      }
      root.appendChild(svg("text", {x: box.left - 6, y: strip + 4, "text-anchor": "end", text: "rejected"}));
      done.forEach(function (c) {
        var open = function () { location.hash = "c=" + c.id; };
        var label = "#" + c.id + " " + c.factor + ": ";
        if (isNum(c.fitness)) {
          root.appendChild(svg("circle", {cx: s.x(c.id), cy: s.y(c.fitness), r: c.id === 0 ? 5 : 4,
                                          fill: factorColour[c.factor], stroke: "#fff", "stroke-width": 0.8,
                                          "class": "clickable", onclick: open},
                               svg("title", {text: label + c.fitness_text})));
        } else if (rejected(c)) {
          var st = c.stage || c.status, cx = s.x(c.id), col = stageColour[st];
          var g = svg("g", {"class": "clickable", onclick: open},
                      svg("title", {text: label + c.status + " at " + st + ": " + str(c.reason)}),
                      svg("rect", {x: cx - 5, y: strip - 5, width: 10, height: 10, fill: "transparent"}),
                      svg("line", {x1: cx - 4, y1: strip - 4, x2: cx + 4, y2: strip + 4, stroke: col, "stroke-width": 2}),
                      svg("line", {x1: cx - 4, y1: strip + 4, x2: cx + 4, y2: strip - 4, stroke: col, "stroke-width": 2}));
          root.appendChild(g);
        }
      });
      var legend = el("div", {cls: "legend"});
      factors.forEach(function (f) { legend.appendChild(legendItem(factorColour[f], f === "seed" ? "seed" : "edited " + f)); });
      stages.forEach(function (st) {
        var n = cands.filter(function (c) { return rejected(c) && (c.stage || c.status) === st; }).length;
        legend.appendChild(legendItem(stageColour[st], "rejected at " + st + " (" + n + ")", "x"));
      });
      legend.appendChild(legendItem("#1f5fbf", "best so far"));
      legend.appendChild(isNum(noise.lo) ? legendItem("#7f7f7f", "seed noise band (" + noise.text + ")", "band")
                         : el("span", {cls: "muted"}, "no seed noise band: the seed has one training seed and no CI"));
      return el("div", null, root, legend);
    }

    // Candidate table.
    var search = el("input", {type: "search", placeholder: "filter: id, scope, stage, reason, directive..."});
    var statusSel = el("select", null, el("option", {value: ""}, "any status"),
                       uniq(cands.map(function (c) { return c.status; })).map(function (s) { return el("option", {value: s}, s); }));
    var factorSel = el("select", null, el("option", {value: ""}, "any factor"),
                       factors.map(function (f) { return el("option", {value: f}, f); }));
    var count = el("span", {cls: "muted"});
    cands.forEach(function (c) {
      c._search = [c.id, c.factor, str(c.scope), c.status, c.stage, c.reason, c.directive, c.chosen_by,
                   c.answered_by, c.strategy, c.rationale].map(str).join(" ").toLowerCase();
    });
    var columns = [
      {key: "id", label: "id", kind: "int", cell: function (c) { return candidateLink(c.id); }},
      {key: "parent_id", label: "parent", kind: "int", cell: function (c) { return candidateLink(c.parent_id); }},
      {key: "island", label: "island", kind: "int"},
      {key: "strategy", label: "strategy", kind: "text"},
      {key: "factor", label: "scope", kind: "text", cell: function (c) {
        var sw = el("span", {cls: "swatch"}); sw.style.background = factorColour[c.factor]; return [sw, c.factor]; }},
      {key: "chosen_by", label: "chosen by", kind: "text"},
      {key: "answered_by", label: "answered", kind: "text", title: "llm or the offline proposer"},
      {key: "status", label: "verdict", kind: "text", cell: function (c) { return el("span", {cls: "badge st-" + c.status}, c.status); }},
      {key: "stage", label: "stage", kind: "text"},
      {key: "reason", label: "reason", kind: "text", cls: "reason"},
      {key: "fitness", label: "fitness (OOD-val)", kind: "acc", title: "± the larger of the std over training seeds and the 95% CI over graphs (the panel says which)",
       cell: function (c) { return el("span", {title: c.fitness_text}, c.fitness_short); }},
      {key: "gain", label: "gain", kind: "signed", title: "fitness minus the parent's"},
      {key: "ood_acc", label: "test (OOD)", kind: "acc"},
      {key: "param_count", label: "params", kind: "int"},
      {key: "macs", label: "MACs", kind: "int"},
      {key: "train_seconds", label: "train", kind: "secs"}];
    var table = new Table(columns, cands, {sortKey: "id", sortDir: 1, count: count, limit: 400, rowProps: function (c) {
      return {"data-id": c.id, cls: (bestPath[c.id] && c.id === run.best_program_id ? "best " : "") + (c.id === selected ? "selected" : "")};
    }});
    function applyFilter() {
      var q = search.value.trim().toLowerCase(), st = statusSel.value, f = factorSel.value;
      table.filter = function (c) {
        return (!q || c._search.indexOf(q) >= 0) && (!st || c.status === st) && (!f || c.factor === f);
      };
      table.render();
    }
    search.addEventListener("input", applyFilter);
    statusSel.addEventListener("change", applyFilter);
    factorSel.addEventListener("change", applyFilter);
    main.appendChild(el("section", {id: "candidates"}, el("h2", null, "Candidates (" + cands.length + ")"),
                        el("div", {cls: "filters"}, search, statusSel, factorSel, count,
                           el("span", {cls: "muted"}, "click a header to sort, an id to open")),
                        table.node));

    // Lineage tree: depth-first, one line per candidate, indented by depth (capped, so
    // that a long chain stays readable), iteratively (no recursion limit).
    var tree = el("ul", {cls: "tree root"});
    var stack = cands.filter(function (c) { return c.parent_id === null || c.parent_id === undefined || !byId[c.parent_id]; })
                     .map(function (c) { return [c, 0]; }).reverse();
    while (stack.length) {
      var item = stack.pop(), c = item[0], depth = item[1], kids = children[c.id] || [];
      var li = el("li", {cls: bestPath[c.id] ? "onpath" : null, "data-depth": depth},
                  depth ? el("span", {cls: "muted"}, (depth > 24 ? "(" + depth + ") " : "") + "└ ") : null,
                  candidateLink(c.id), " ", c.factor, " ",
                  isNum(c.fitness) ? c.fitness_short : el("span", {cls: "badge st-" + c.status}, c.status + (c.stage ? " at " + c.stage : "")),
                  kids.length ? el("span", {cls: "muted"}, " (" + kids.length + " child" + (kids.length > 1 ? "ren" : "") + ")") : null);
      li.style.paddingLeft = (16 * Math.min(depth, 24)) + "px";
      tree.appendChild(li);
      for (var j = kids.length - 1; j >= 0; j--) stack.push([kids[j], depth + 1]);
    }
    main.appendChild(el("section", {id: "lineage"}, el("h2", null, "Lineage"),
                        el("p", {cls: "muted"}, "Every candidate under its parent (depth-first); the path to the best program is bold."),
                        tree));

    // Gains per factor.
    var gains = DATA.factor_gains || [];
    var maxGain = Math.max.apply(null, [1e-12].concat(gains.map(function (g) { return Math.abs(g.gain_mean || 0); })));
    main.appendChild(el("section", {id: "factors"}, el("h2", null, "Gains per factor"),
      new Table([
        {key: "factor", label: "factor", kind: "text"}, {key: "proposals", label: "proposals", kind: "int"},
        {key: "valid", label: "valid", kind: "int"}, {key: "entangled", label: "entangled", kind: "int"},
        {key: "fallback", label: "router fallbacks", kind: "int"}, {key: "improvements", label: "improvements", kind: "int"},
        {key: "gain_mean", label: "mean gain", kind: "signed", cell: function (g) {
          var bar = el("span", {cls: "bar" + ((g.gain_mean || 0) < 0 ? " neg" : "")});
          bar.style.width = Math.round(60 * Math.abs(g.gain_mean || 0) / maxGain) + "px";
          return [signed(g.gain_mean), " ", bar]; }},
        {key: "gain_max", label: "max gain", kind: "signed"},
        {key: "gain_total_positive", label: "total positive gain", kind: "signed"}], gains).node));

    // Tokens and cost.
    main.appendChild(el("section", {id: "llm"}, el("h2", null, "Tokens and cost by role and model"),
      new Table([
        {key: "role", label: "role", kind: "text"}, {key: "model", label: "model", kind: "text"},
        {key: "calls", label: "calls", kind: "int"}, {key: "cached", label: "cached", kind: "int"},
        {key: "failed", label: "failed", kind: "int"}, {key: "prompt_tokens", label: "prompt tokens", kind: "int"},
        {key: "completion_tokens", label: "completion tokens", kind: "int"}, {key: "tokens", label: "tokens", kind: "int"},
        {key: "estimated_tokens", label: "estimated tokens", kind: "int", title: "the offline proposer's length / 4 estimates, not counted in tokens"},
        {key: "cost", label: "cost (USD)", kind: "usd"}, {key: "mean_latency_s", label: "mean latency", kind: "secs"}],
        DATA.llm_usage || []).node,
      el("p", {cls: "muted"}, "total: " + intf(llm.calls) + " calls, " + intf(llm.total_tokens) + " tokens, " +
         usd(llm.cost_usd) + " (" + intf(llm.priced_calls) + " priced calls)" +
         (llm.estimated_tokens ? "; " + intf(llm.estimated_tokens) + " estimated tokens of the offline proposer" : ""))));

    // Candidate detail (#c=ID).
    var selected = null;
    function showDetail(id) {
      var c = byId[id];
      selected = c ? c.id : null;
      Array.prototype.forEach.call(table.tbody.querySelectorAll("tr.selected"), function (tr) { tr.classList.remove("selected"); });
      if (c) {
        var row = table.tbody.querySelector('tr[data-id="' + c.id + '"]');
        if (row) row.classList.add("selected");
      }
      while (detail.firstChild) detail.removeChild(detail.firstChild);
      if (!c) { detail.setAttribute("hidden", "hidden"); return; }
      detail.removeAttribute("hidden");
      var prev = byId[c.id - 1], next = byId[c.id + 1];
      add(detail, el("h2", null, "Candidate #" + c.id + " ", el("span", {cls: "badge st-" + c.status}, c.status),
                     " ", el("span", {cls: "muted"}, prev ? ["← ", candidateLink(prev.id), "  "] : null,
                                 next ? [candidateLink(next.id), " →  "] : null,
                                 el("a", {href: "#candidates"}, "close"))));
      var kids = children[c.id] || [];
      var rows = [
        ["parent", c.parent_id === null ? "none (seed program)" : candidateLink(c.parent_id)],
        ["children", kids.length ? kids.map(function (k, i) { return [i ? ", " : "", candidateLink(k.id)]; }) : "-"],
        ["island / strategy", str(c.island) + " / " + str(c.strategy)],
        ["parent selection", str(c.selection)],
        ["scope", str(c.scope) + "  (factor " + c.factor + ")"],
        ["chosen by", str(c.chosen_by) + "; answered by " + str(c.answered_by)],
        ["router's rationale", el("span", {cls: "rationale"}, str(c.rationale))],
        ["directive", el("span", {cls: "directive"}, str(c.directive))],
        ["verdict", [el("span", {cls: "badge st-" + c.status}, c.status), " at " + str(c.stage),
                     c.reason ? ": " : "", c.reason ? el("span", {cls: "reason"}, c.reason) : null]],
        ["changed factors", str(c.changed_factors) + (c.entangled ? " (entangled: changed outside its scope)" : "")],
        ["fitness (OOD-val)", c.fitness_text + (isNum(c.gain) ? "  (" + signed(c.gain) + " over parent)" : "")],
        ["test (OOD) / val", acc(c.ood_acc) + " / " + acc(c.val_acc)],
        ["parameters", intf(c.param_count) + " (processor " + intf(c.processor_param_count) + ")"],
        ["MACs per step", intf(c.macs)],
        ["training time", secs(c.train_seconds)]];
      detail.appendChild(el("table", {cls: "kv"}, el("tbody", null, rows.map(function (r) {
        return el("tr", null, el("td", null, r[0]), el("td", null, r[1])); }))));
      var diff = text(c.diff);
      detail.appendChild(el("h3", null, c.diff_is_listing ? "Program (seed: no parent)" :
                            "Diff against parent #" + str(c.parent_id)));
      if (diff) {
        var pre = el("pre", {cls: "diff"});
        diff.split("\n").forEach(function (line) {
          var k = line.slice(0, 3) === "+++" || line.slice(0, 3) === "---" ? "file" :
                  line.charAt(0) === "+" ? "add" : line.charAt(0) === "-" ? "del" : line.slice(0, 2) === "@@" ? "hunk" : "";
          pre.appendChild(el("span", {cls: c.diff_is_listing ? null : k}, line + "\n"));
        });
        detail.appendChild(pre);
      } else {
        detail.appendChild(el("p", {cls: "muted"}, c.diff === null ? "no program (the proposer gave none)" : "no change"));
      }
      detail.appendChild(el("h3", null, "LLM calls (" + c.calls.length + ")"));
      if (!c.calls.length) detail.appendChild(el("p", {cls: "muted"}, "none"));
      c.calls.forEach(function (k, i) {
        var head = (i + 1) + ". " + str(k.role) + " · " + str(k.model) + " · " + intf(k.tokens) + " tokens (" +
                   intf(k.prompt_tokens) + " prompt + " + intf(k.completion_tokens) + " completion) · " +
                   (isNum(k.cost) ? usd(k.cost) : "no price") + " · " + secs(k.latency_s) + (k.cached ? " · cached" : "") +
                   (k.estimated ? " · tokens estimated" : "") + (k.attempt_failed ? " · attempt ended by a provider failure" : "");
        var det = el("details", {cls: "call"}, el("summary", null, head));
        if (k.error) det.appendChild(el("p", {cls: "error"}, "error: " + k.error));
        k.messages.forEach(function (m) {
          det.appendChild(el("details", null, el("summary", null, "prompt: " + m.role + " message"),
                             el("pre", {cls: "wrap"}, text(m.t))));
        });
        det.appendChild(el("details", {open: "open"}, el("summary", null, "reply"),
                           el("pre", {cls: "wrap reply"}, k.reply === null ? "(no reply)" : text(k.reply))));
        detail.appendChild(det);
      });
      detail.appendChild(el("details", null, el("summary", null, "decision (JSON)"),
                            el("pre", {cls: "wrap"}, JSON.stringify(c.decision, null, 2))));
      detail.appendChild(el("details", null, el("summary", null, "metrics (JSON)"),
                            el("pre", {cls: "wrap"}, JSON.stringify(c.metrics, null, 2))));
    }

    function route() {
      var m = /^#c=(\d+)$/.exec(location.hash);
      if (m) {
        showDetail(Number(m[1]));
        detail.scrollIntoView();
      } else if (selected !== null) {
        showDetail(null);
      }
    }
    window.addEventListener("hashchange", route);
    route();
  }

  // -------------------------------------------------------------------------- compare page

  function comparePage() {
    var groups = DATA.groups || [];
    var colour = colourMap(groups.map(function (g) { return g.label; }), PALETTE);
    add(document.getElementById("app"), [
      el("header", null, el("h1", null, str(DATA.title) || "spark_clrs comparison"),
         DATA.note ? el("p", {cls: "error"}, DATA.note) : null,
         el("div", {cls: "meta"}, el("span", null, groups.length + " strateg" + (groups.length === 1 ? "y" : "ies")),
            el("span", null, (DATA.runs || []).length + " run(s)"),
            el("span", null, "bands: " + (DATA.band === "minmax" ? "min-max" : "mean ± std") + " over seeds"),
            el("span", null, "generated " + str(DATA.generated_at)))),
      el("nav", null, el("a", {href: "#overview"}, "Best so far"), el("a", {href: "#strategies"}, "Strategies"),
         el("a", {href: "#runs"}, "Runs"), el("a", {href: "#scopes"}, "Scope choices"))]);
    var main = el("main");
    document.getElementById("app").appendChild(main);

    // Band plot.
    var W = 900, H = 360, box = {left: 62, right: W - 16, top: 14, bottom: H - 46};
    var ys = [], maxX = 1;
    groups.forEach(function (g) {
      g.band.lo.concat(g.band.hi).forEach(function (v) { if (isNum(v)) ys.push(v); });
      if (g.band.x.length) maxX = Math.max(maxX, g.band.x[g.band.x.length - 1]);
    });
    var lo = ys.length ? Math.min.apply(null, ys) : 0, hi = ys.length ? Math.max.apply(null, ys) : 1;
    var pad = (hi - lo) * 0.08 || 0.01;
    var root = svg("svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
                           "aria-label": "best so far per strategy"});
    root.setAttribute("class", "plot");
    var s = axes(root, box, [0, maxX], [lo - pad, hi + pad], "evaluations (candidate id; 0 = seed)",
                 "best OOD-val accuracy so far", true);
    var legend = el("div", {cls: "legend"});
    groups.forEach(function (g) {
      var b = g.band, col = colour[g.label];
      if (!b.x.length) return;
      var n = Math.max.apply(null, b.n);
      if (n > 1) {
        var up = b.x.map(function (x, i) { return [x, b.hi[i]]; });
        var down = b.x.map(function (x, i) { return [x, b.lo[i]]; });
        var d = stepPath(up, s.x, s.y);
        for (var i = down.length - 1; i >= 0; i--) {
          d += "V" + s.y(down[i][1]) + "H" + s.x(i > 0 ? down[i - 1][0] : down[0][0]);
        }
        root.appendChild(svg("path", {d: d + "Z", fill: col, opacity: 0.16, stroke: "none"}));
      }
      root.appendChild(svg("path", {d: stepPath(b.x.map(function (x, i) { return [x, b.mean[i]]; }), s.x, s.y),
                                    fill: "none", stroke: col, "stroke-width": 2.2},
                           svg("title", {text: g.label + " (n=" + n + ")"})));
      legend.appendChild(legendItem(col, g.label + " (n=" + n + ", seeds " + g.seeds.join(",") + ")"));
    });
    main.appendChild(el("section", {id: "overview"}, el("h2", null, "Best so far, one band per strategy"), root, legend));

    var metricCols = (DATA.metrics || []).map(function (m) {
      return {key: m.key, label: m.label, kind: "acc", value: function (r) { return r.cells[m.key].v; },
              cell: function (r) { return r.cells[m.key].t; }};
    });
    main.appendChild(el("section", {id: "strategies"}, el("h2", null, "Strategies (mean ± std over seeds)"),
      new Table([{key: "label", label: "strategy", kind: "text"},
                 {key: "seeds", label: "seeds", kind: "text"},
                 {key: "proposals", label: "proposals", kind: "int"}].concat(metricCols), groups).node));
    main.appendChild(el("section", {id: "runs"}, el("h2", null, "Runs"),
      new Table([{key: "run", label: "run", kind: "text", cell: function (r) {
                    // Relative paths of run pages, written by Python; anything with a scheme is not linked.
                    return r.page && !/^[a-z][a-z0-9+.-]*:/i.test(r.page) ? el("a", {href: r.page}, r.run) : r.run; }},
                 {key: "strategy", label: "strategy", kind: "text"}, {key: "seed", label: "seed", kind: "int"},
                 {key: "proposals", label: "proposals", kind: "int"},
                 {key: "complete", label: "complete", kind: "text"},
                 {key: "best_program_id", label: "best id", kind: "int"}].concat(metricCols), DATA.runs || []).node));
    main.appendChild(el("section", {id: "scopes"}, el("h2", null, "Scope choices"),
      new Table([{key: "strategy", label: "strategy", kind: "text"}, {key: "scope", label: "scope", kind: "text"},
                 {key: "proposals", label: "proposals", kind: "int"}, {key: "share", label: "share", kind: "pct"},
                 {key: "valid", label: "valid", kind: "int"}, {key: "entangled", label: "entangled", kind: "int"},
                 {key: "fallback", label: "router fallbacks", kind: "int"},
                 {key: "improvements", label: "improvements", kind: "int"},
                 {key: "gain", label: "mean gain", kind: "signed"}], DATA.scopes || []).node));
    var defs = DATA.definitions || {};
    main.appendChild(el("section", null, el("h2", null, "Definitions"),
      el("table", {cls: "kv"}, el("tbody", null, Object.keys(defs).map(function (k) {
        return el("tr", null, el("td", null, k), el("td", null, defs[k])); })))));
  }

  if (DATA.kind === "compare") comparePage(); else runPage();
  // Timings for benchmarks/viewer_size.py and the browser test (read from the dumped DOM).
  document.documentElement.setAttribute("data-script-ms", String(Math.round(performance.now() - T0)));
  document.documentElement.setAttribute("data-ready", "1");
  window.addEventListener("load", function () {
    document.documentElement.setAttribute("data-load-ms", String(Math.round(performance.now())));
  });
})();
