"""``openevolve``: diff-based evolution of the whole program, island by island.

The OpenEvolve baseline (the open-source re-implementation of AlphaEvolve, Novikov et
al. 2025; github.com/algorithmicsuperintelligence/openevolve, formerly codelion/openevolve).
Mechanisms, as its code does them:

* **SEARCH/REPLACE diff edits** by default (OpenEvolve's ``diff_based_evolution``):
  the model answers with ``<<<<<<< SEARCH / ======= / >>>>>>> REPLACE`` blocks applied
  line by line to the current program (:mod:`spark_clrs.programs.diffs`). A block whose
  SEARCH lines are not in the program is skipped, as OpenEvolve skips it, and the
  decision names it (``diff_skipped``); the reply is rejected only when no block
  applies. ``--openevolve_edits=rewrite`` asks for the complete program instead.
* **Parent sampling on the island** (archive sampler ``island``), OpenEvolve's three
  draws with its default shares, which are this project's default ratios: with
  ``--exploration_ratio`` (0.2) a uniformly drawn member of the island, with
  ``--exploitation_ratio`` (0.7) a uniformly drawn elite (the ``--archive_size`` fittest
  programs of the run) that lives on the island (any elite when none does), and with the
  remaining share (``--elite_selection_ratio``, 0.1) an island member drawn with
  probability proportional to its fitness. The prompt's "top programs" are the fittest
  of that island; the "diverse" programs come from other MAP-Elites cells of the island.
* **MAP-Elites over OpenEvolve's default features** (``feature_dims``): ``complexity``
  (the program's length in characters) and ``diversity`` (its mean code distance to a
  reference set of the run's first 20 programs), both measured by the archive on the
  program text and binned (10 bins each) between the smallest and largest value seen so
  far, as OpenEvolve's min-max scaling does. They replace ``--feature_dims`` (MACs and
  parameter count, SPARK's grid) for this strategy only.
* **Migration to both neighbours, once per program** (``migration="both"``,
  ``remigrate=False``): every ``--migration_interval`` proposals each island's best
  programs are copied to the next and the previous island; a program that arrived as a
  migrant never migrates on.
* **The previous attempt's failure in the prompt**: the lineage's recent attempts
  with their outcomes, and the last failed attempt's stage and reason spelled out
  (OpenEvolve feeds back its evaluation artifacts, e.g. stderr, the same way).

Adaptations (:attr:`OpenEvolveProposer.compare_note`): the migration interval and the
number of islands are the shared ``--migration_interval`` / ``--num_islands`` (OpenEvolve
migrates every 50 island generations over 5 islands, which a 100-proposal budget never
reaches); its inspirations (island best, nearby cells, random members) are approximated
by the island's top and farthest-cell programs. Unscoped: regions are not enforced, and
the no-selected-scope entanglement rule counts a child that changes more than one
factor (formatting-only drift apart).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spark_clrs.llm import LLMRecord, prompts
from spark_clrs.programs import diffs
from spark_clrs.proposers import context, parsing
from spark_clrs.proposers.base import (
  ContextRequest,
  Outcome,
  ParentInfo,
  ProposalHistory,
  ProposerConfig,
)
from spark_clrs.proposers.freeform import (
  FreeformProposer,
  PromptPlan,
  check_child,
  join_entries,
  shown,
)
from spark_clrs.proposers.options import EngineOptions
from spark_clrs.proposers.registry import register

TOP_PROGRAMS = 3
DIVERSE_PROGRAMS = 2
PREVIOUS_ATTEMPTS = 5
EDIT_FORMATS = ("diff", "rewrite")


def last_failure(rows: list[Outcome]) -> Outcome | None:
  """The most recent attempt of the lineage that was rejected or failed."""
  failed = [o for o in rows if not o.feasible]
  return failed[-1] if failed else None


@register("openevolve")
class OpenEvolveProposer(FreeformProposer):
  """SEARCH/REPLACE diffs (or a full rewrite) with the island's top + diverse programs."""

  name = "openevolve"
  context_request = ContextRequest(diverse=DIVERSE_PROGRAMS, island=TOP_PROGRAMS)
  engine_options = EngineOptions(sampler="island", migration="both", remigrate=False,
                                 feature_dims=("complexity", "diversity"))
  compare_note = ("OpenEvolve: migrates every --migration_interval proposals over "
                  "--num_islands islands (the source: every 50 island generations over 5); "
                  "inspirations approximated by the island's top and farthest-cell programs.")

  def __init__(self, config: ProposerConfig, client: Any, factors: Any):
    super().__init__(config, client, factors)
    if config.edit_format not in EDIT_FORMATS:
      raise ValueError(f"openevolve edit format {config.edit_format!r}; use one of "
                       f"{EDIT_FORMATS} (--openevolve_edits)")
    self.edit_format = config.edit_format

  def _entries(self, programs: list[ParentInfo], label: str) -> str:
    out = []
    for i, p in enumerate(programs, start=1):
      where = f"{label} {i}" if p.cell is None else f"{label} {i}, MAP-Elites cell {p.cell}"
      out.append(prompts.render("openevolve/program", program_id=p.program_id, label=where,
                                metrics=context.format_metrics(p.metrics),
                                program=p.text.rstrip("\n")))
    return join_entries(out) or prompts.render("openevolve/none").strip()

  def build_prompt(self, parent: ParentInfo, history: ProposalHistory,
                   rng: np.random.Generator) -> PromptPlan:
    del history, rng  # The prompt is fully determined by the parent and its inspirations.
    top = parent.from_source("island")[:TOP_PROGRAMS]
    diverse = parent.from_source("diverse")[:DIVERSE_PROGRAMS]
    lineage = parent.lineage_outcomes()
    failure = last_failure(lineage[-PREVIOUS_ATTEMPTS:])
    failure_text = (prompts.render("openevolve/last_failure", iteration=failure.iteration,
                                   stage=failure.stage, reason=failure.reason or "-").strip()
                    if failure is not None else prompts.render("openevolve/no_failure").strip())
    user = prompts.render(
        "openevolve/user", **self.common_slots(parent), edit=self.edit_format,
        metrics=context.format_metrics(parent.metrics),
        previous_attempts=context.format_lineage(lineage, PREVIOUS_ATTEMPTS),
        last_failure=failure_text,
        top_programs=self._entries(top, "top program of this island"),
        diverse_programs=self._entries(diverse, "diverse program"),
        program=parent.text.rstrip("\n"),
        answer=prompts.render(f"openevolve/answer_{self.edit_format}",
                              parent_id=parent.program_id).strip())
    structure = {"mode": "diff" if self.edit_format == "diff" else "full_rewrite",
                 "scope": "unscoped", "top": shown(top), "diverse": shown(diverse),
                 "inspirations": len(top) + len(diverse),
                 "previous_attempts": min(len(lineage), PREVIOUS_ATTEMPTS),
                 "last_failure": None if failure is None else failure.iteration}
    return PromptPlan("rewriter", user, structure)

  def parse_child(self, record: LLMRecord, parent: ParentInfo,
                  decision: dict[str, Any]) -> str:
    if self.edit_format == "rewrite":
      return super().parse_child(record, parent, decision)
    try:
      blocks = diffs.parse(record.reply or "")
      applied = diffs.apply(parent.text, blocks)
    except diffs.DiffError as e:
      raise parsing.ReplyError(str(e)) from None
    decision["diff_blocks"] = len(blocks)
    decision["diff_applied"] = applied.applied
    if applied.skipped:
      decision["diff_skipped"] = list(applied.skipped)
    return check_child(applied.text, parent.text, self.factors)


__all__ = ["OpenEvolveProposer", "last_failure"]
