"""The candidate corpus: broken and valid programs with the stage each must stop at.

``manifest.json`` lists one case per entry. Cases are built from the CURRENT seeds, so
they stay valid when a seed's read-only text changes:

* ``kind: region`` -- ``<name>.case`` holds a new body for ``region`` of seed ``base``;
* ``kind: replace`` -- ``replacements`` ([old, new] pairs) are applied to seed ``base``;
* ``kind: program`` -- ``<name>.case`` is a complete standalone program (``.case``, not ``.py``: many are deliberately broken Python).

``with_parent`` says whether the seed is passed as the parent (then the ``scope`` stage
runs with ``scope``); ``expect`` is the rejecting stage, or ``ok`` for a valid edit.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from spark_clrs.programs import regions

CORPUS_DIR = pathlib.Path(__file__).resolve().parent
SEEDS_DIR = CORPUS_DIR.parents[2] / "seeds"


@dataclasses.dataclass(frozen=True)
class Case:
  """One corpus case, materialised: the candidate text and how to check it."""

  name: str
  expect: str
  why: str
  candidate: str
  parent: str | None
  scope: tuple[str, ...] | None
  factor: str | None


def load_corpus() -> list[Case]:
  """All cases of ``manifest.json``, built against the current seeds."""
  return _load(CORPUS_DIR)


def load_model_edits() -> list[Case]:
  """``model_edits/``: ordinary region edits in the style of a frontier model, all valid.

  GRU-style gates, attention-weighted aggregation, multi-head triplets with a Python
  loop over heads, RMSNorm, einsum edge gates, degree normalisation, ``stop_gradient``,
  typed helper functions, ``import math`` in the region, ``.format`` names, and the
  public names a hand-written allow-list once refused (``jnp.concat``, ``jnp.isclose``,
  ``jax.nn.dot_product_attention``, ...). Every case must pass every check.
  """
  return _load(CORPUS_DIR / "model_edits")


def _load(directory: pathlib.Path) -> list[Case]:
  entries = json.loads((directory / "manifest.json").read_text())
  cases = []
  for e in entries:
    seed = (SEEDS_DIR / f"{e['base']}.py").read_text() if e["base"] else None
    if e["kind"] == "region":
      body = (directory / f"{e['name']}.case").read_text()
      text = regions.replace_region(seed, e["region"], body)
    elif e["kind"] == "replace":
      text = seed
      for old, new in e["replacements"]:
        if old not in text:
          raise ValueError(f"case {e['name']}: {old!r} is no longer in seeds/{e['base']}.py; "
                           "update the replacement in manifest.json")
        text = text.replace(old, new, 1)
    else:
      text = (directory / f"{e['name']}.case").read_text()
    cases.append(Case(name=e["name"], expect=e["expect"], why=e["why"], candidate=text,
                      parent=seed if e["with_parent"] else None,
                      scope=tuple(e["scope"]) if e["scope"] else None,
                      factor=e.get("region")))
  return cases
