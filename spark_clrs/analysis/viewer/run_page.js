// spark_clrs page viewer, part 2 of 4: the run page (see viewer.js).

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
  var factorColour = DATA.factor_colors || {};
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
    el("nav", null, el("a", {href: "#overview"}, "Overview"), el("a", {href: "#final"}, "Final re-evaluation"),
       el("a", {href: "#pareto"}, "Accuracy vs MACs"), el("a", {href: "#candidates"}, "Candidates"),
       el("a", {href: "#lineage"}, "Lineage"), el("a", {href: "#factors"}, "Gains per factor"),
       el("a", {href: "#llm"}, "Tokens and cost"))]);
  var main = el("main");
  document.getElementById("app").appendChild(main);
  var detail = el("section", {id: "detail", hidden: "hidden"});
  main.appendChild(detail);

  // Overview: cards + plot.
  var best = byId[run.best_program_id];
  var noise = DATA.seed_noise || {};
  var finalData = DATA.final;
  var result = finalData ? finalData.rows.filter(function (r) { return r.best; })[0] : null;
  main.appendChild(el("section", {id: "overview"}, el("h2", null, "Best so far"),
    el("div", {cls: "cards"},
       card("result: re-evaluated OOD-val", result ? result.ood_val_acc_short : "-",
            result ? "candidate #" + result.id + ", fresh seeds " + finalData.seeds.join(",") + ": " + result.ood_val_acc_text
                   : "no final re-evaluation yet (it runs at the end of the search)"),
       card("result: re-evaluated OOD-test", result ? result.ood_acc_short : "-", result ? result.ood_acc_text : null),
       card("search-time best OOD-val", best ? best.fitness_short : "-",
            best ? "the best so far during the search (noisy, biased upward): " + best.fitness_text : null),
       card("best candidate", best ? candidateLink(best.id) : "-"),
       card("its search-time OOD-test", acc(run.best_ood_acc)),
       card("seed OOD-val", noise.text ? noise.text.split(" (")[0] : acc(run.seed_ood_val_acc), noise.text),
       card("gain over seed", signed(run.improvement_over_seed)),
       card("valid rate", pct(run.valid_rate)),
       card("entanglement rate", pct(run.entanglement_rate)),
       card("drift rate", pct(run.drift_rate),
            "unscoped proposals whose child changed a part only in formatting, comments or docstrings (counted apart from entanglement)"),
       card("tokens", intf(llm.total_tokens) + (llm.estimated_tokens ? " + " + intf(llm.estimated_tokens) + " est." : ""),
            llm.estimated_tokens ? "estimated: the offline proposer's prompt and reply lengths / 4" : null),
       card("cost", usd(llm.cost_usd))),
    bestSoFarPlot()));

  main.appendChild(finalSection());
  main.appendChild(paretoSection());

  function finalSection() {
    var section = el("section", {id: "final"}, el("h2", null, "Final re-evaluation (the run's result)"));
    if (!finalData) {
      section.appendChild(el("p", {cls: "muted"}, "No final re-evaluation yet: at the end of the search the top " +
                             "candidates are re-trained with fresh training seeds never used in the search."));
      return section;
    }
    section.appendChild(el("p", {cls: "muted"}, str(finalData.label) + "; fresh seeds " + finalData.seeds.join(",") +
                           (finalData.status === "partial" ? " (partial: some re-trainings have not finished)" : "") +
                           ". Intervals are 95% CIs over training seeds and evaluation graphs."));
    section.appendChild(new Table([
      {key: "id", label: "candidate", kind: "int", cell: function (r) { return [candidateLink(r.id), r.best ? " (result)" : ""]; }},
      {key: "status", label: "status", kind: "text"},
      {key: "ood_val_acc", label: "re-evaluated OOD-val", kind: "acc", cell: function (r) { return el("span", {title: r.ood_val_acc_text}, r.ood_val_acc_short); }},
      {key: "ood_acc", label: "re-evaluated OOD-test", kind: "acc", cell: function (r) { return el("span", {title: r.ood_acc_text}, r.ood_acc_short); }},
      {key: "search_fitness", label: "search-time OOD-val", kind: "acc", cell: function (r) { return el("span", {title: r.search_text}, acc(r.search_fitness)); }},
      {key: "macs", label: "MACs", kind: "int"},
      {key: "reason", label: "reason", kind: "text", cls: "reason"}], finalData.rows,
      {rowProps: function (r) { return {cls: r.best ? "best" : null}; }}).node);
    return section;
  }

  function paretoSection() {
    var p = DATA.pareto || {points: [], front: []};
    var section = el("section", {id: "pareto"}, el("h2", null, "Accuracy against MACs: the non-dominated candidates"),
                     el("p", {cls: "muted"}, "A candidate is on the front when no other is at least as accurate and at most as " +
                        "expensive. Accuracy: " + str(p.accuracy) + "."));
    if (!p.points.length) { section.appendChild(el("p", {cls: "muted"}, "no evaluated candidate with MACs yet")); return section; }
    var W = 900, H = 330, box = {left: 62, right: W - 16, top: 14, bottom: H - 46};
    var xs = p.points.map(function (q) { return q.macs; }), ys = p.points.map(function (q) { return q.accuracy; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    var xpad = (x1 - x0) * 0.05 || Math.max(1, x0 * 0.05), ypad = (y1 - y0) * 0.08 || 0.01;
    var root = svg("svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "accuracy against MACs"});
    root.setAttribute("class", "plot");
    var s = axes(root, box, [x0 - xpad, x1 + xpad], [y0 - ypad, y1 + ypad], "processor MACs per step (one graph)", "accuracy", false);
    var front = p.front.slice().sort(function (a, b) { return a.macs - b.macs; });
    if (front.length) {
      root.appendChild(svg("path", {d: stepPath(front.map(function (q) { return [q.macs, q.accuracy]; }), s.x, s.y),
                                    fill: "none", stroke: "#111", "stroke-width": 1.6, "stroke-dasharray": "5 3"}));
    }
    p.points.forEach(function (q) {
      var open = function () { location.hash = "c=" + q.id; };
      var shape = q.source === "final"
        ? svg("rect", {x: s.x(q.macs) - 5, y: s.y(q.accuracy) - 5, width: 10, height: 10, fill: factorColour[q.factor] || "#555",
                       stroke: "#111", "stroke-width": 1, "class": "clickable", onclick: open})
        : svg("circle", {cx: s.x(q.macs), cy: s.y(q.accuracy), r: 4, fill: factorColour[q.factor] || "#555", opacity: 0.7,
                         "class": "clickable", onclick: open});
      shape.appendChild(svg("title", {text: "#" + q.id + " (" + q.source + "): " + q.text + ", " + intf(q.macs) + " MACs"}));
      root.appendChild(shape);
    });
    var legend = el("div", {cls: "legend"}, legendItem("#555", "search-time fitness (circle)"),
                    legendItem("#111", "re-evaluated, final (square)"), legendItem("#111", "front (dashed)"));
    section.appendChild(root);
    section.appendChild(legend);
    section.appendChild(new Table([
      {key: "id", label: "candidate", kind: "int", cell: function (q) { return candidateLink(q.id); }},
      {key: "source", label: "accuracy from", kind: "text"},
      {key: "accuracy", label: "accuracy", kind: "acc", cell: function (q) { return el("span", {title: q.text}, acc(q.accuracy)); }},
      {key: "text", label: "with interval", kind: "text"},
      {key: "macs", label: "MACs", kind: "int"}], front, {sortKey: "macs", sortDir: 1}).node);
    return section;
  }

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
    // x: the evaluation (the order candidates finished in, 0 = seed), as the curve's.
    var maxId = Math.max.apply(null, [1].concat(done.map(function (c) { return c.order; })));
    var root = svg("svg", {cls: "plot", viewBox: "0 0 " + W + " " + H, width: W, height: H,
                           role: "img", "aria-label": "best fitness so far against evaluations"});
    root.setAttribute("class", "plot");
    var s = axes(root, box, [0, maxId], [lo - pad, hi + pad],
                 "evaluations (finished candidates; 0 = seed)", "fitness (OOD-val accuracy)", true);
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
      root.appendChild(svg("path", {d: stepPath(curve, s.x, s.y, done.length ? maxId : undefined),
                                    fill: "none", stroke: "#1f5fbf", "stroke-width": 2.2}));
    }
    root.appendChild(svg("text", {x: box.left - 6, y: strip + 4, "text-anchor": "end", text: "rejected"}));
    done.forEach(function (c) {
      var open = function () { location.hash = "c=" + c.id; };
      var label = "#" + c.id + " " + c.factor + ": ";
      if (isNum(c.fitness)) {
        root.appendChild(svg("circle", {cx: s.x(c.order), cy: s.y(c.fitness), r: c.id === 0 ? 5 : 4,
                                        fill: factorColour[c.factor], stroke: "#fff", "stroke-width": 0.8,
                                        "class": "clickable", onclick: open},
                             svg("title", {text: label + c.fitness_text})));
      } else if (rejected(c)) {
        var st = c.stage || c.status, cx = s.x(c.order), col = stageColour[st];
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
    legend.appendChild(legendItem("#1f5fbf", "best so far (a new best only where the paired test says it is better)"));
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
    {key: "fitness", label: "fitness (OOD-val)", kind: "acc", title: "search-time fitness ± its 95% CI over training seeds and evaluation graphs",
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
