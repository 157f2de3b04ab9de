"""``openevolve``: diff-based evolution of the whole program, island by island.

The OpenEvolve baseline (the open-source re-implementation of AlphaEvolve, Novikov et
al. 2025; github.com/codelion/openevolve). Mechanisms:

* **SEARCH/REPLACE diff edits** by default (OpenEvolve's ``diff_based_evolution``):
  the model answers with ``<<<<<<< SEARCH / ======= / >>>>>>> REPLACE`` blocks that
  are applied to the current program (:mod:`spark_clrs.programs.diffs`);
  ``--openevolve_edits=rewrite`` asks for the complete program instead.
* **Island-local exploitation** (archive sampler ``island``): exploitation draws the
  parent from the parent island's own elites, and the prompt's "top programs" are the
  fittest of that island; the "diverse" programs come from other MAP-Elites cells
  (MACs x parameter count) of the same island.
* **Migration to both neighbours** (``migration="both"``): every
  ``--migration_interval`` proposals each island's best programs are copied to the
  next and the previous island.
* **The previous attempt's failure in the prompt**: the lineage's recent attempts
  with their outcomes, and the last failed attempt's stage and reason spelled out
  (OpenEvolve feeds back its evaluation artifacts, e.g. stderr, the same way).

Unscoped: regions are not enforced, and the no-selected-scope entanglement rule counts
a child that changes more than one factor.
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
  engine_options = EngineOptions(sampler="island", migration="both")

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
      child = diffs.apply(parent.text, blocks)
    except diffs.DiffError as e:
      raise parsing.ReplyError(str(e)) from None
    decision["diff_blocks"] = len(blocks)
    return check_child(child, parent.text, self.factors)


__all__ = ["OpenEvolveProposer", "last_failure"]
