"""When proposing stops: LLM spend limits and the comparison budget (SPEC §6, §7).

Two kinds of limit end a run's proposing; evaluations already in flight always finish and
the results are written:

* a *spend limit* (``--max_llm_tokens``, ``--max_cost_usd``) stops the run early; a resume
  with a larger limit continues it (``stop_reason`` in summary.json);
* the *budget* (``--budget=tokens|cost`` with ``--budget_amount``) is the comparison's unit;
  spending it completes the run (``budget.spent``).

The LLM client checks the limits before every request and raises ``llm.SpendExhausted``
instead of sending one (interface 5); :meth:`Spend.stop` records that. :meth:`Spend.exhausted`
is the same check before a proposal starts, so no parent is sampled for a proposal that
could not ask anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spark_clrs import config as config_lib
from spark_clrs.search import summary
from spark_clrs.search.archive_db import ArchiveDB
from spark_clrs.search.events import EventLog


class Spend:
  """The run's LLM spend so far and the reason proposing stopped (``None`` while it goes on)."""

  def __init__(self, config: config_lib.SearchConfig, db: ArchiveDB, log: EventLog):
    self.config = config
    self._db = db
    self._log = log
    # Tokens and USD the run's requests really spent (llm_spend: cached and offline left out).
    self.tokens, self.cost = summary.llm_spend(db.llm_calls())
    self.stop_reason: str | None = None
    self.budget_spent = False  # --budget=tokens|cost reached: a complete run, not a stop.

  def add(self, calls: Sequence[dict[str, Any]]) -> None:
    """Counts the calls of one proposal attempt."""
    tokens, cost = summary.llm_spend(calls)
    self.tokens += tokens
    self.cost += cost

  def stop(self, reason: str, *, budget: bool) -> None:
    """Ends proposing (the client refused a request: ``llm.SpendExhausted``)."""
    if self.stop_reason is not None:
      return
    self.stop_reason, self.budget_spent = reason, budget
    kind = "budget_spent" if budget else "spend_limit"
    more = "" if budget else ". Re-run with a larger limit to continue"
    self._log.event(kind, message=f"{reason}: no more proposals; running evaluations "
                    f"finish{more}", reason=reason, tokens=self.tokens, cost_usd=self.cost)

  def exhausted(self) -> bool:
    """Whether a limit is reached before the next proposal starts (stopping once if so)."""
    if self.stop_reason is not None:
      return True
    cfg = self.config
    if cfg.max_llm_tokens and self.tokens >= cfg.max_llm_tokens:
      self.stop(f"--max_llm_tokens={cfg.max_llm_tokens} reached ({self.tokens:,} tokens used)",
                budget=False)
    elif cfg.max_cost_usd and self.cost >= cfg.max_cost_usd:
      self.stop(f"--max_cost_usd={cfg.max_cost_usd:g} reached (${self.cost:.4f} spent)",
                budget=False)
    elif cfg.budget != "evaluations":
      # Every request sent counts (cached replies are free; the offline provider's tokens
      # are its length/4 estimates, so offline comparisons can be matched too).
      tokens, cost = self._db.llm_usage()
      if (tokens if cfg.budget == "tokens" else cost) >= cfg.budget_amount:
        self.stop(f"--budget={cfg.budget} of {cfg.budget_amount:g} spent ({tokens:,} tokens, "
                  f"${cost:.4f})", budget=True)
    return self.stop_reason is not None
