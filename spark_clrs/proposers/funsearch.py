"""``funsearch``: best-shot prompting over versioned programs of one island.

The FunSearch baseline (Romera-Paredes et al., 2024; SPEC §6). The prompt shows k
programs of the parent's island as successive versions ``v0``, ``v1``, ... sorted by
ascending score (so each version reads as an improvement of the previous one; the
scores themselves are not shown) and asks the model to write the next version. The
versions are the sampled parent plus k-1 members of its island drawn by a softmax over
their fitness (FunSearch's score-based sampling, ``TEMPERATURE``). Unscoped.

FunSearch also periodically resets the weaker half of its islands, re-seeding each
from the best program of a surviving island. That is an archive operation: this
proposer only asks for it through :attr:`FunSearchProposer.island_reset`, and the
controller runs it.

With no island member besides the parent the prompt holds ``v0`` alone.
"""

from __future__ import annotations

import numpy as np

from spark_clrs import prompts
from spark_clrs.proposers import population
from spark_clrs.proposers.base import ContextRequest, IslandReset, ParentInfo, ProposalHistory
from spark_clrs.proposers.freeform import FreeformProposer, PromptPlan, join_entries
from spark_clrs.proposers.registry import register

VERSIONS = 2          # Programs per prompt (FunSearch's default).
ISLAND_POOL = 16      # Fittest island members the controller is asked for.
TEMPERATURE = 0.1     # Softmax temperature over ood_val_acc when sampling versions.
RESET_INTERVAL = 25   # Proposals between island resets.


def version_name(i: int) -> str:
  return f"v{i}"


@register("funsearch")
class FunSearchProposer(FreeformProposer):
  """Versions v0..v{k-1} by ascending score; the model writes v{k}."""

  name = "funsearch"
  context_request = ContextRequest(island=ISLAND_POOL)
  island_reset = IslandReset(interval=RESET_INTERVAL, fraction=0.5)

  def choose_versions(self, parent: ParentInfo, rng: np.random.Generator) -> list[ParentInfo]:
    """The parent and k-1 sampled island members, lowest fitness first."""
    others = [p for p in population.ranked(parent.from_source("island"))
              if p.program_id != parent.program_id]
    picked = population.sample_ranked(others, VERSIONS - 1, rng, temperature=TEMPERATURE)
    return list(reversed(population.ranked([parent, *picked])))

  def build_prompt(self, parent: ParentInfo, history: ProposalHistory,
                   rng: np.random.Generator) -> PromptPlan:
    del history
    versions = self.choose_versions(parent, rng)
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
                 "inspirations": len(versions) - 1, "temperature": TEMPERATURE}
    return PromptPlan("sampler", user, structure)


__all__ = ["FunSearchProposer", "version_name"]
