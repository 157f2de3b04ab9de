"""``funsearch``: best-shot prompting over versioned programs of one island.

The FunSearch baseline (Romera-Paredes et al., "Mathematical discoveries from program
search with large language models", Nature 2023/2024; its open ``programs_database``).
Mechanisms, and where each lives:

* **Island-local sampling by clusters** (archive sampler ``clusters``): an island's
  programs are grouped by their score signature (the OOD-val accuracy per training
  seed); ``k`` clusters are drawn without replacement by a Boltzmann distribution over
  cluster scores whose temperature follows FunSearch's schedule
  ``T = 0.1 * (1 - (n mod 30000) / 30000)`` (``n`` programs on the island), and inside
  each cluster shorter programs are favoured (softmax of minus the normalised length).
* **Best-shot prompting, k=2**: the drawn programs are shown as ``v0``, ``v1`` sorted
  by ascending score (scores not shown), and the model writes ``v2``. The best drawn
  program is the parent, so the child is credited to the version the prompt asks the
  model to improve; every version shown is recorded in the decision.
* **No migration** between islands (``migration="none"``).
* **Reset of the weaker half**: every ``RESET_INTERVAL`` proposals the half of the
  islands with the lowest best score is emptied and each is re-seeded with the best
  program of a randomly chosen surviving island (FunSearch resets on wall-clock time;
  a proposal count keeps runs reproducible).

All of these are :class:`~spark_clrs.proposers.options.EngineOptions` the proposer
states; the controller and archive never test the strategy's name. Unscoped: its
proposals are judged by the no-selected-scope entanglement rule.
"""

from __future__ import annotations

import numpy as np

from spark_clrs.llm import prompts
from spark_clrs.proposers import population
from spark_clrs.proposers.base import ContextRequest, IslandReset, ParentInfo, ProposalHistory
from spark_clrs.proposers.freeform import FreeformProposer, PromptPlan, join_entries
from spark_clrs.proposers.options import EngineOptions
from spark_clrs.proposers.registry import register

VERSIONS = 2          # k: programs per prompt (FunSearch's functions_per_prompt).
RESET_INTERVAL = 25   # Proposals between island resets.
TEMPERATURE_INIT = 0.1  # Cluster sampling temperature at the start of the schedule.


def version_name(i: int) -> str:
  return f"v{i}"


@register("funsearch")
class FunSearchProposer(FreeformProposer):
  """Versions v0..v{k-1} by ascending score; the model writes v{k}."""

  name = "funsearch"
  context_request = ContextRequest()  # The sampler draws the versions (companions).
  island_reset = IslandReset(interval=RESET_INTERVAL, fraction=0.5)
  engine_options = EngineOptions(sampler="clusters", companions=VERSIONS - 1,
                                 migration="none", island_reset=island_reset)

  def choose_versions(self, parent: ParentInfo) -> list[ParentInfo]:
    """The companions by ascending score, then the parent (the version to improve)."""
    others = [p for p in population.ranked(parent.from_source("island"))
              if p.program_id != parent.program_id][:VERSIONS - 1]
    return [*reversed(others), parent]

  def build_prompt(self, parent: ParentInfo, history: ProposalHistory,
                   rng: np.random.Generator) -> PromptPlan:
    del history, rng  # The sampler drew the versions.
    versions = self.choose_versions(parent)
    body = join_entries(
        prompts.render("funsearch/version", version=version_name(i), program_id=p.program_id,
                       program=p.text.rstrip("\n"))
        for i, p in enumerate(versions))
    last, nxt = version_name(len(versions) - 1), version_name(len(versions))
    user = prompts.render("funsearch/user", **self.common_slots(parent), versions=body,
                          last=last, next=nxt)
    structure = {"mode": "best_shot", "scope": "unscoped", "next_version": nxt,
                 "versions": [{"version": version_name(i), "program_id": p.program_id,
                               "source": p.source, "fitness": p.fitness}
                              for i, p in enumerate(versions)],
                 "credited_to": parent.program_id, "inspirations": len(versions) - 1,
                 "cluster_temperature_init": TEMPERATURE_INIT}
    return PromptPlan("sampler", user, structure)


__all__ = ["FunSearchProposer", "version_name"]
