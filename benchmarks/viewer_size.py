"""Size and load time of the HTML viewer for a synthetic archive of N candidates.

    python benchmarks/viewer_size.py [--candidates=1000] [--output=DIR] [--no_browser]

Builds a real ``archive.sqlite`` through the archive API (``ArchiveDB``): the seed
program ``seeds/triplet_gmpnn.py`` and N-1 children, each an edit of one factor region of
its parent, with three LLM calls (router, refiner, rewriter) whose prompts carry the
parent's program as the real prompts do, and a mix of verdicts (about 70% evaluated,
15% rejected at various stages, 15% failed). Then it writes ``results/index.html`` with
``viewer.write_run_page`` and prints: the build time, the page size, and the time a
headless Chromium takes to load the page (navigation start to the load event, and the
viewer's script alone, as the page records them; median of 3 loads).

`build_archive` is also what tests/test_viewer.py uses for its synthetic runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spark_clrs.analysis import runs, viewer  # noqa: E402
from spark_clrs.programs import regions  # noqa: E402
from spark_clrs.search.archive_db import ArchiveDB  # noqa: E402

SYSTEM_PROMPT = ("You are an expert in graph neural networks and neural algorithmic reasoning. "
                 "You edit one factor of a CLRS processor at a time. ") * 12
HOSTILE = ("</script><script>document.title='pwned';document.body.setAttribute('data-pwned','1')"
           "</script><img src=x onerror=\"document.title='pwned-img'\"> & \u2028 done")
_STAGES = ("entangled", "shape", "budget", "interface", "policy", "proposal")


def _child(parent: str, factor: str, k: int) -> str:
  body = regions.get_region(parent, factor)
  lines = body.splitlines(keepends=True)
  edit = f"    # edit {k}: scale the {factor.lower()} by {1 + (k % 7) / 10:.1f}\n"
  at = 1 + (k * 7919) % max(1, len(lines) - 1)
  return regions.replace_region(parent, factor, "".join(lines[:at] + [edit] + lines[at:]))


def build_archive(run_dir: pathlib.Path, n: int = 1000, *, hostile: bool = False,
                  seed: int = 0, seed_text: str | None = None) -> pathlib.Path:
  """A run directory whose archive.sqlite holds ``n`` candidates (seed included).

  Also writes ``results/summary.json`` (as the search would), so that report.py reads it.
  ``hostile``: candidate 1's rewriter reply and directive carry ``</script>`` and HTML.
  """
  import numpy as np

  from spark_clrs.search import summary as summary_lib

  run_dir.mkdir(parents=True, exist_ok=True)
  (run_dir / "results").mkdir(exist_ok=True)
  seed_text = seed_text or (ROOT / "seeds" / "triplet_gmpnn.py").read_text()
  factors = regions.region_names(seed_text)
  rng = np.random.default_rng(seed)
  db = ArchiveDB(run_dir / "archive.sqlite")
  codes = {0: seed_text}
  fitness = {0: 0.17}
  feasible = [0]
  try:
    db.insert_candidate(candidate_id=0, parent_id=None, island=0, strategy="spark", scope=None,
                        directive=None, decision={}, code=seed_text, status="evaluating")
    db.update_candidate(0, status="evaluated", stage="ok", fitness=0.17, metrics=_metrics(
        0.17, rng), features={})
    for k in range(1, n):
      parent = int(rng.choice(feasible[-20:]))
      factor = factors[k % len(factors)]
      code = _child(codes[parent], factor, k)
      rationale = f"{factor} has the best mean gain so far ({k % 5} improvements)"
      directive = f"Change: edit {k} of {factor}. Why: the parent plateaued. Expected: +0.01"
      if hostile and k == 1:
        directive += " " + HOSTILE
      decision = {"scope_source": "llm" if k % 9 else "fallback", "rationale": rationale,
                  "parent_selection": "exploitation" if k % 3 else "exploration",
                  "island": k % 4, "router_attempts": 1, "router_errors": []}
      db.insert_candidate(candidate_id=k, parent_id=parent, island=k % 4, strategy="spark",
                          scope=[factor], directive=directive, decision=decision, code=code,
                          changed_factors=[factor], entangled=False)
      reply = HOSTILE if hostile and k == 1 else regions.get_region(code, factor)
      for role, content in (("router", json.dumps({"scope": factor, "rationale": rationale})),
                            ("refiner", directive), ("rewriter", reply)):
        db.insert_llm_call(k, {
            "role": role, "model": "openai/gpt-4o-mini",
            "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                         {"role": "user", "content": f"Parent program {parent}:\n"
                                                     f"{codes[parent]}\nEdit {factor}."}],
            "reply": content, "prompt_tokens": 3000 + k % 100, "completion_tokens": 60,
            "cost": 0.0005, "latency_s": 1.5, "cached": False})
      roll = rng.random()
      if roll < 0.7:
        f = float(min(0.99, max(0.0, fitness[parent] + rng.normal(0.0, 0.01))))
        db.update_candidate(k, status="evaluated", stage="ok", fitness=f,
                            metrics=_metrics(f, rng), features={})
        codes[k], fitness[k] = code, f
        feasible.append(k)
      elif roll < 0.85:
        stage = _STAGES[k % len(_STAGES)]
        db.update_candidate(k, status="rejected", stage=stage,
                            reason=f"{stage}: candidate {k} does not pass")
      else:
        db.update_candidate(k, status="failed", stage="evaluate",
                            reason="evaluate: timeout: no result after 900 s",
                            metrics={"train_seconds": 900.0})
    data = summary_lib.summarize(db.candidates(), db.llm_calls(), {
        "run_dir": str(run_dir), "strategy": "spark", "profile": "quick", "seed": seed,
        "iterations": n - 1, "seed_program": "triplet_gmpnn", "factors": factors,
        "llm_model": "openai/gpt-4o-mini"})
    data["complete"] = True
    (run_dir / "results" / "summary.json").write_text(json.dumps(data, indent=2, default=str))
  finally:
    db.close()
  return run_dir


def _metrics(f: float, rng) -> dict:
  import numpy as np

  seeds = [f + float(rng.normal(0, 0.005)) for _ in range(3)]
  return {"ood_val_acc": f, "ood_val_acc_std": float(np.std(seeds)),
          "ood_val_acc_per_seed": seeds, "ood_val_acc_ci": 0.004,
          "ood_acc": max(0.0, f - 0.02), "val_acc": min(1.0, f + 0.3),
          "param_count": 250_000 + int(rng.integers(0, 5000)), "processor_param_count": 120_000,
          "macs": 4_000_000 + int(rng.integers(0, 100_000)), "train_seconds": 40.0}


def chromium() -> str | None:
  for name in ("chromium", "chromium-browser", "google-chrome"):
    path = shutil.which(name)
    if path:
      return path
  return None


def browser_command(binary: str, profile_dir: str) -> list[str]:
  """Headless Chromium with nothing that could reach a network."""
  return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
          "--no-first-run", "--disable-background-networking", "--disable-component-update",
          "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
          f"--user-data-dir={profile_dir}"]


def load_times(binary: str, url: str, repeats: int = 3) -> dict:
  """Medians over ``repeats`` headless loads of ``url``.

  ``load_ms``: navigation start to the load event (HTML parse, the script, layout), as the
  page itself records it (``data-load-ms``); ``script_ms``: the viewer's script alone;
  ``wall_s``: the whole ``--dump-dom`` process (browser start-up and the DOM dump too).
  """
  loads, scripts, walls, size = [], [], [], 0
  for _ in range(repeats):
    with tempfile.TemporaryDirectory() as profile:
      start = time.perf_counter()
      done = subprocess.run([*browser_command(binary, profile), "--dump-dom", url],
                            capture_output=True, timeout=600)
      walls.append(time.perf_counter() - start)
    dom = done.stdout.decode("utf-8", "replace")
    size = len(done.stdout)
    for name, out in (("data-load-ms", loads), ("data-script-ms", scripts)):
      match = re.search(name + r'="(\d+)"', dom)
      if match:
        out.append(int(match.group(1)))
  med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
  return {"load_ms": med(loads), "script_ms": med(scripts), "wall_s": round(med(walls), 2),
          "dom_bytes": size}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--candidates", type=int, default=1000)
  parser.add_argument("--output", default="")
  parser.add_argument("--no_browser", action="store_true")
  args = parser.parse_args()
  out = pathlib.Path(args.output or tempfile.mkdtemp(prefix="viewer_size_"))
  start = time.perf_counter()
  build_archive(out / "run", args.candidates)
  built = time.perf_counter() - start
  start = time.perf_counter()
  run = runs.load_run(out / "run")  # The archive read back, as report.py does.
  page = viewer.write_run_page(run.root, candidates=run.candidates, calls=run.llm_calls(),
                               summary=dict(run.summary))
  written = time.perf_counter() - start
  result = {"candidates": args.candidates, "archive_build_s": round(built, 2),
            "page_write_s": round(written, 3), "page_bytes": page.stat().st_size,
            "archive_bytes": (out / "run" / "archive.sqlite").stat().st_size,
            "page": str(page), "load_avg": os.getloadavg()}
  binary = chromium()
  if binary and not args.no_browser:
    result["browser"] = subprocess.run([binary, "--version"], capture_output=True,
                                       text=True).stdout.strip()
    result["overview"] = load_times(binary, page.as_uri())
    result["candidate_panel"] = load_times(binary, page.as_uri() + "#c=1", repeats=1)
  print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
