// spark_clrs page viewer, part 4 of 4: draws the page the data asks for (see viewer.js).

if (DATA.kind === "compare") comparePage(); else runPage();
// Timings for benchmarks/viewer_size.py and the browser test (read from the dumped DOM).
document.documentElement.setAttribute("data-script-ms", String(Math.round(performance.now() - T0)));
document.documentElement.setAttribute("data-ready", "1");
window.addEventListener("load", function () {
  document.documentElement.setAttribute("data-load-ms", String(Math.round(performance.now())));
});
