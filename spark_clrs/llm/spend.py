"""Spend you can bound: a guard before every request, and no cost cap without a price.

A :class:`SpendLimit` holds a run's caps (``--max_cost_usd``, ``--max_llm_tokens`` and the
comparison budget ``--budget=tokens|cost --budget_amount``) and what the run has spent so
far. The client asks it before *every* request (first tries, retries, continuations,
router retries) with the worst case of that request: its prompt tokens plus the reply cap
(``max_tokens``), priced. When that could take a cap past its amount the request is not
sent: :class:`SpendExhausted` is raised instead, so a run never overshoots a limit by a
request it could have foreseen.

Two tallies are kept, as the controller keeps them: the *limits* count what providers
billed (requests sent; cached replies and the offline provider's estimates left out), the
*budget* counts every request sent, estimates included, so offline comparisons can be
matched by tokens too.

:func:`check_prices` refuses a cost cap for a model whose price is not known (it would
count as $0 and the cap would never bind), naming the flags that give one.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable

from spark_clrs.config import ConfigError, SearchConfig
from spark_clrs.llm.models import ModelTable, Price
from spark_clrs.llm.records import LLMRecord
from spark_clrs.llm.settings import OFFLINE_MODEL


class SpendExhausted(RuntimeError):
  """The next request could take a spend cap past its amount, so it was not sent.

  Attributes:
    cap: ``max_cost_usd``, ``max_llm_tokens`` or ``budget``.
    record: the call whose request was refused (its earlier requests were sent and are
      in its tokens and cost), ``None`` when it sent nothing.
  """

  def __init__(self, message: str, *, cap: str, record: LLMRecord | None = None):
    super().__init__(message)
    self.cap = cap
    self.record = record


@dataclasses.dataclass(frozen=True)
class Cap:
  """One spend cap: its name for messages, what it counts, its amount."""

  name: str  # "max_cost_usd", "max_llm_tokens" or "budget".
  flag: str  # As the user wrote it, e.g. "--max_cost_usd=0.5".
  unit: str  # "usd" or "tokens".
  amount: float
  counts_estimates: bool  # The budget counts the offline provider's estimates too.


class SpendLimit:
  """A run's spend caps and its spend so far (thread-safe).

  Args:
    caps: the caps (none: the guard never refuses).
    spent: ``(tokens, USD)`` billed so far (requests sent, estimates left out).
    used: ``(tokens, USD)`` of every request sent so far, estimates included.
  """

  def __init__(self, caps: Iterable[Cap] = (), spent: tuple[int, float] = (0, 0.0),
               used: tuple[int, float] = (0, 0.0)):
    self.caps = tuple(caps)
    self._lock = threading.Lock()
    self.spent = (int(spent[0]), float(spent[1]))
    self.used = (int(used[0]), float(used[1]))

  @classmethod
  def of(cls, cfg: SearchConfig, *, spent: tuple[int, float] = (0, 0.0),
         used: tuple[int, float] = (0, 0.0)) -> SpendLimit:
    """The caps of a search's flags, with what its run directory spent before (a resume)."""
    caps = []
    if cfg.max_cost_usd:
      caps.append(Cap("max_cost_usd", f"--max_cost_usd={cfg.max_cost_usd:g}", "usd",
                      cfg.max_cost_usd, False))
    if cfg.max_llm_tokens:
      caps.append(Cap("max_llm_tokens", f"--max_llm_tokens={cfg.max_llm_tokens}", "tokens",
                      cfg.max_llm_tokens, False))
    if cfg.budget in ("tokens", "cost") and cfg.budget_amount:
      caps.append(Cap("budget", f"--budget={cfg.budget} --budget_amount={cfg.budget_amount:g}",
                      "usd" if cfg.budget == "cost" else "tokens", cfg.budget_amount, True))
    return cls(caps, spent, used)

  @property
  def prices_needed(self) -> list[Cap]:
    """The caps counted in USD (they need every model priced)."""
    return [c for c in self.caps if c.unit == "usd"]

  def charge(self, tokens: int, cost: float | None, *, estimated: bool) -> None:
    """Adds one request's tokens and cost (a cached reply is never charged)."""
    with self._lock:
      self.used = (self.used[0] + tokens, self.used[1] + (cost or 0.0))
      if not estimated:
        self.spent = (self.spent[0] + tokens, self.spent[1] + (cost or 0.0))

  def check(self, *, model: str, role: str, prompt_tokens: int, max_tokens: int,
            price: Price | None, estimated: bool) -> None:
    """Raises :class:`SpendExhausted` if the worst case of the next request breaks a cap."""
    with self._lock:
      for cap in self.caps:
        if estimated and not cap.counts_estimates:
          continue
        tokens, cost = self.used if cap.counts_estimates else self.spent
        if cap.unit == "tokens":
          have, next_max = float(tokens), float(prompt_tokens + max_tokens)
          shown = (f"{tokens:,} tokens used, the next {role} request may use up to "
                   f"{prompt_tokens + max_tokens:,} ({prompt_tokens:,} prompt + {max_tokens:,} "
                   "reply cap)")
        else:
          have = cost
          next_max = price.cost(prompt_tokens, max_tokens) if price is not None else 0.0
          shown = (f"${cost:.4f} spent, the next {role} request to {model} may cost up to "
                   f"${next_max:.4f} ({prompt_tokens:,} prompt + {max_tokens:,} reply tokens)")
        if have + next_max > cap.amount:
          raise SpendExhausted(f"{cap.flag} would be exceeded: {shown}; the request was not "
                               "sent. Re-run with a larger limit to continue", cap=cap.name)


def check_prices(models: Iterable[str], table: ModelTable, limit: SpendLimit | None) -> list[str]:
  """The models without a known price; a cost cap with any of them refuses to start.

  Raises:
    ConfigError: a cap is counted in USD and some (non-offline) model has no known price.
  """
  unpriced = [m for m in models if m != OFFLINE_MODEL and table.price(m) is None]
  caps = limit.prices_needed if limit is not None else []
  if unpriced and caps:
    raise ConfigError(
        f"{caps[0].flag} needs a price for {', '.join(unpriced)}, and none is known (it would "
        "count as $0 and the cap would never bind): give one with --llm_price_per_mtok=IN,OUT "
        "(USD per million prompt and reply tokens; 0,0 for a free local server) or "
        "--llm_prices=FILE (a newer model_prices_and_context_window.json)")
  return unpriced


__all__ = ["Cap", "SpendExhausted", "SpendLimit", "check_prices"]
