// spark_clrs page viewer, part 3 of 4: the comparison page (see viewer.js).

function comparePage() {
  var groups = DATA.groups || [];
  var colour = {};
  groups.forEach(function (g) { colour[g.label] = g.color; });
  add(document.getElementById("app"), [
    el("header", null, el("h1", null, str(DATA.title) || "spark_clrs comparison"),
       DATA.note ? el("p", {cls: "error"}, DATA.note) : null,
       el("div", {cls: "meta"}, el("span", null, groups.length + " strateg" + (groups.length === 1 ? "y" : "ies")),
          el("span", null, (DATA.runs || []).length + " run(s)"),
          el("span", null, "bands: " + (DATA.band === "minmax" ? "min-max" : "mean ± std") + " over seeds"),
          el("span", null, "generated " + str(DATA.generated_at)))),
    el("nav", null, el("a", {href: "#results"}, "Results"), el("a", {href: "#pareto"}, "Accuracy vs MACs"),
       el("a", {href: "#overview"}, "Best so far"), el("a", {href: "#strategies"}, "Strategies"),
       el("a", {href: "#runs"}, "Runs"), el("a", {href: "#scopes"}, "Scope choices"))]);
  var main = el("main");
  document.getElementById("app").appendChild(main);
  resultsSection(main, colour);
  paretoCompare(main, colour);

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
  var s = axes(root, box, [0, maxX], [lo - pad, hi + pad], "evaluations (finished candidates; 0 = seed)",
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
  main.appendChild(el("section", {id: "overview"}, el("h2", null, "Best so far during the search, one band per strategy"), root, legend));

  var metricCols = (DATA.metrics || []).map(function (m) {
    return {key: m.key, label: m.label, kind: "acc", value: function (r) { return r.cells[m.key].v; },
            cell: function (r) { return r.cells[m.key].t; }};
  });
  main.appendChild(el("section", {id: "strategies"}, el("h2", null, "Strategies at search time (mean ± std over seeds)"),
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

// The compare page's "is the difference real" section (final_table.py's data).
function resultsSection(main, colour) {
  var f = DATA.final || {strategies: [], paired_tests: []};
  var notes = DATA.strategy_notes || {};
  var section = el("section", {id: "results"}, el("h2", null, "Results that say whether a difference is real"));
  var sources = uniq(f.strategies.map(function (s) { return s.source; }));
  section.appendChild(el("p", {cls: sources.length === 1 && sources[0] === "final" ? "muted" : "error"},
    sources.length === 1 && sources[0] === "final"
      ? "Each run's result is its final re-evaluation (top candidates re-trained with fresh seeds never used in the search). Mean and 95% t interval over run seeds."
      : "Some runs have no final re-evaluation: their search-time best (not re-evaluated, biased upward) is shown, marked 'search'."));
  function swatch(s) { var sw = el("span", {cls: "swatch"}); sw.style.background = colour[s.label] || "#555"; return sw; }
  section.appendChild(new Table([
    {key: "label", label: "strategy", kind: "text", cell: function (s) { return [swatch(s), s.label]; }},
    {key: "seeds", label: "seeds", kind: "text"},
    {key: "source", label: "numbers", kind: "text"},
    {key: "ood_acc", label: "re-evaluated best OOD-test", kind: "acc", value: function (s) { return s.ood_acc.mean; }, cell: function (s) { return s.ood_acc.text; }},
    {key: "ood_val_acc", label: "re-evaluated best OOD-val", kind: "acc", value: function (s) { return s.ood_val_acc.mean; }, cell: function (s) { return s.ood_val_acc.text; }},
    {key: "tokens", label: "tokens (mean)", kind: "int", value: function (s) { return s.tokens.mean; },
     cell: function (s) { return intf(s.tokens.mean) + (s.tokens_estimated ? " (estimated)" : ""); },
     title: "what the runs spent; the offline proposer's tokens are length/4 estimates"},
    {key: "cost_usd", label: "cost (mean)", kind: "usd", value: function (s) { return s.cost_usd.mean; }, cell: function (s) { return usd(s.cost_usd.mean); }},
    {key: "note", label: "what could not be reproduced", kind: "text", cls: "reason", cell: function (s) { return str(notes[s.strategy]); }}],
    f.strategies).node);
  if (f.paired_tests.length) {
    section.appendChild(el("p", null, "Paired against " + str(f.reference) + " over the seeds both ran (difference = strategy − " +
                           str(f.reference) + "); tests: " + str(f.tests_used) + ". With n seeds the sign-flip p cannot go below 2/2^n (0.25 for 3 seeds)."));
    section.appendChild(new Table([
      {key: "label", label: "strategy", kind: "text"}, {key: "metric_label", label: "accuracy", kind: "text"},
      {key: "seeds", label: "paired seeds", kind: "text"},
      {key: "mean", label: "mean difference", kind: "signed"},
      {key: "interval", label: "95% CI", kind: "text", cell: function (t) {
        var i = t.interval; return isNum(i.lo) ? signed(i.lo) + " .. " + signed(i.hi) : "-"; }},
      {key: "d_z", label: "d_z", kind: "signed"},
      {key: "paired_t_p", label: "paired-t p", kind: "acc"},
      {key: "sign_flip_p", label: "sign-flip p", kind: "acc"},
      {key: "min_sign_flip_p", label: "smallest possible sign-flip p", kind: "acc"}], f.paired_tests).node);
  }
  main.appendChild(section);
}

function paretoCompare(main, colour) {
  var fronts = (DATA.final || {}).pareto || [];
  var section = el("section", {id: "pareto"}, el("h2", null, "Accuracy against MACs: the front per strategy"),
                   el("p", {cls: "muted"}, "Accuracy: " + str((DATA.final || {}).pareto_accuracy) + "; seeds pooled."));
  var pts = [];
  fronts.forEach(function (f) { f.points.forEach(function (q) { pts.push(q); }); });
  if (!pts.length) { section.appendChild(el("p", {cls: "muted"}, "no evaluated program with MACs")); main.appendChild(section); return; }
  var W = 900, H = 330, box = {left: 62, right: W - 16, top: 14, bottom: H - 46};
  var xs = pts.map(function (q) { return q.macs; }), ys = pts.map(function (q) { return q.accuracy; });
  var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
  var xpad = (x1 - x0) * 0.05 || Math.max(1, x0 * 0.05), ypad = (y1 - y0) * 0.08 || 0.01;
  var root = svg("svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "Pareto fronts"});
  root.setAttribute("class", "plot");
  var s = axes(root, box, [x0 - xpad, x1 + xpad], [y0 - ypad, y1 + ypad], "processor MACs per step (one graph)", "accuracy", false);
  var legend = el("div", {cls: "legend"});
  fronts.forEach(function (f) {
    var col = colour[f.label] || "#555";
    f.points.forEach(function (q) {
      root.appendChild(svg("circle", {cx: s.x(q.macs), cy: s.y(q.accuracy), r: 3, fill: col, opacity: 0.35},
                           svg("title", {text: f.label + " seed " + q.seed + " #" + q.id + ": " + q.text})));
    });
    var front = f.front.slice().sort(function (a, b) { return a.macs - b.macs; });
    if (front.length) {
      root.appendChild(svg("path", {d: stepPath(front.map(function (q) { return [q.macs, q.accuracy]; }), s.x, s.y),
                                    fill: "none", stroke: col, "stroke-width": 2}));
    }
    legend.appendChild(legendItem(col, f.label + " (" + front.length + " on the front of " + f.points.length + ")"));
  });
  section.appendChild(root);
  section.appendChild(legend);
  var rows = [];
  fronts.forEach(function (f) { f.front.forEach(function (q) { rows.push({strategy: f.label, seed: q.seed, id: q.id, source: q.source,
                                                                         accuracy: q.accuracy, text: q.text, macs: q.macs}); }); });
  section.appendChild(new Table([
    {key: "strategy", label: "strategy", kind: "text"}, {key: "seed", label: "seed", kind: "int"},
    {key: "id", label: "candidate", kind: "int"}, {key: "source", label: "accuracy from", kind: "text"},
    {key: "accuracy", label: "accuracy", kind: "acc"}, {key: "text", label: "with interval", kind: "text"},
    {key: "macs", label: "MACs", kind: "int"}], rows, {sortKey: "macs", sortDir: 1}).node);
  main.appendChild(section);
}
