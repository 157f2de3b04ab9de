"""``funsearch``: best-shot prompting over versioned programs of one island.

The FunSearch baseline (Romera-Paredes et al., "Mathematical discoveries from program
search with large language models", Nature 2023/2024; its open ``programs_database``).
Mechanisms, as the source's code does them, and where each lives:

* **A uniformly drawn island per prompt** (``island_choice="uniform"``): the source's
  ``get_prompt`` draws the island at random for every prompt, not in turn.
* **Island-local sampling by clusters, with replacement** (archive sampler
  ``clusters``): ``k = 2`` clusters are drawn *with* replacement (numpy's default in the
  source, so both versions may come from one cluster, even be one program) by a
  Boltzmann distribution over cluster scores whose temperature follows
  ``T = 0.1 * (1 - (n mod 30000) / 30000)`` (``n`` programs on the island); inside a
  cluster shorter programs are favoured (softmax of minus the normalised length).
* **Clusters of equal score** (``cluster_step``): the source clusters programs by their
  scores on every test input; its scores are integers (a cap set's size), so programs
  of equal quality share a cluster and the length preference chooses among them. Our
  fitness is a continuous, noisy accuracy: per-graph or per-seed signatures never
  coincide, and with one training seed every cluster would hold one program. Programs
  are therefore clustered by their fitness rounded to ``CLUSTER_STEP`` = 0.01, about one
  standard deviation of the seed program's OOD-val accuracy over training seeds (0.0094
  on the quick profile, BUILD_NOTES "noise"): programs the measurement cannot tell
  apart share a cluster, and the shortest is preferred among them.
* **Best-shot prompting, k=2**: the drawn programs are shown as ``v0``, ``v1`` sorted
  by ascending score (scores not shown), and the model writes ``v2``. The best drawn
  program is the parent, so the child is credited to the version the prompt asks the
  model to improve; every version shown is recorded in the decision.
* **No migration** between islands (``migration="none"``).
* **Reset of the weaker half**, scaled to a proposal budget: the source resets every
  4 hours of wall clock, time in which each of its 10 islands receives many programs
  (15 samplers, 4 samples per prompt in its default configuration; its temperature
  period alone is 30,000 programs per island). No budget here comes near, so what is
  kept is the point of the schedule, that an island has evolved before it is judged:
  the weaker half is reset after every island has received ``RESET_PER_ISLAND`` = 10
  proposals on average since the last reset (every 40 proposals with 4 islands, so
  twice in the 100-proposal dfs budget), each restarting from the best program of a
  randomly chosen surviving island. A proposal count keeps runs reproducible.

All of these are :class:`~spark_clrs.proposers.options.EngineOptions` the proposer
states; the controller and archive never test the strategy's name. Unscoped: its
proposals are judged by the no-selected-scope entanglement rule.
"""

from __future__ import annotations

import numpy as np

from spark_clrs.llm import prompts
from spark_clrs.proposers.base import ContextRequest, IslandReset, ParentInfo, ProposalHistory
from spark_clrs.proposers.freeform import FreeformProposer, PromptPlan, join_entries
from spark_clrs.proposers.options import EngineOptions
from spark_clrs.proposers.registry import register

VERSIONS = 2          # k: programs per prompt (FunSearch's functions_per_prompt).
RESET_PER_ISLAND = 10  # Proposals per island, on average, between two island resets.
CLUSTER_STEP = 0.01   # Fitness quantum of a score cluster.
TEMPERATURE_INIT = 0.1  # Cluster sampling temperature at the start of the schedule.


def version_name(i: int) -> str:
  return f"v{i}"


@register("funsearch")
class FunSearchProposer(FreeformProposer):
  """Versions v0..v{k-1} by ascending score; the model writes v{k}."""

  name = "funsearch"
  context_request = ContextRequest()  # The sampler draws the versions (companions).
  island_reset = IslandReset(interval=RESET_PER_ISLAND, fraction=0.5, per_island=True)
  engine_options = EngineOptions(sampler="clusters", companions=VERSIONS - 1,
                                 migration="none", island_reset=island_reset,
                                 island_choice="uniform", cluster_step=CLUSTER_STEP)
  compare_note = ("FunSearch: islands reset after 10 proposals per island on average (the "
                  "source: every 4 h of wall clock); score clusters group fitness rounded to "
                  "0.01 (the source: equal scores on every test input); whole-program "
                  "versions instead of one evolved function; one sample per prompt.")

  def choose_versions(self, parent: ParentInfo) -> list[ParentInfo]:
    """The companions by ascending score, then the parent (the version to improve).

    A companion may be the parent itself: the source draws clusters with replacement,
    and then shows the same program twice.
    """
    others = sorted(parent.from_source("island")[:VERSIONS - 1],
                    key=lambda p: p.fitness if p.fitness is not None else -np.inf)
    return [*others, parent]

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


__all__ = ["CLUSTER_STEP", "FunSearchProposer", "RESET_PER_ISLAND", "version_name"]
