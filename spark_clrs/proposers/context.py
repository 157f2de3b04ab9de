"""The search state as prompt slot values, and prompts that fit the model's window.

Every strategy shows the LLM some of the same facts; this module renders them as
compact, stable text (the wording around them lives in ``prompts/``). Only
selection-side metrics are shown: the reported test accuracy (``ood_acc``) never
reaches a prompt, so it cannot steer the search.

:func:`send` is how a strategy sends a prompt with optional parts (lineage rows,
inspiration programs, tried directives): it drops the least useful items (the oldest
lineage rows, then the last inspirations, then the oldest tried directives, in the
order of :data:`SHRINK_ORDER`) until the prompt fits the input window of the role's
model, and when the provider still answers with a context-length error it shrinks to
half and asks once more. What was dropped is recorded on the call and in the decision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from spark_clrs.evaluation import noise
from spark_clrs.llm import LLMClient, LLMRecord, prompts
from spark_clrs.proposers.base import Outcome, ProposalHistory

# What a prompt may leave out to fit a window, first to go first.
SHRINK_ORDER = ("lineage", "inspirations", "tried")

# Metrics a proposer may see (selection set, cost); test metrics are deliberately absent.
# Wall-clock timings are deliberately absent: they differ between runs, so showing them
# would make prompts (and so the reply cache and a seeded run) irreproducible. The fitness
# is shown with its interval, written by the one definition the product uses (noise.py).
VISIBLE_METRICS = ("ood_val_acc", "val_acc", "param_count", "processor_param_count", "macs",
                   "macs_nb_nodes")
FITNESS = noise.FITNESS
NONE = "(none)"


def chat(system: str, user: str) -> list[dict[str, str]]:
  """A system + user chat request."""
  return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _number(value: Any) -> str:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, int):
    return f"{value:,}".replace(",", "_")
  return f"{value:.4f}"


def _metric(metrics: Mapping[str, Any], name: str) -> str:
  """One visible metric; the fitness with its 95% interval (never a bare std)."""
  if name == FITNESS:
    return noise.format_metric(metrics, FITNESS, digits=4)
  return _number(metrics[name])


def format_metrics(metrics: Mapping[str, Any]) -> str:
  rows = [f"{k}: {_metric(metrics, k)}" for k in VISIBLE_METRICS if metrics.get(k) is not None]
  return "\n".join(rows) or "(not evaluated)"


def metrics_line(metrics: Mapping[str, Any]) -> str:
  """The visible metrics on one line (``ood_val_acc 0.4321 ± ..., macs 123_456, ...``)."""
  items = [f"{k} {_metric(metrics, k)}" for k in VISIBLE_METRICS if metrics.get(k) is not None]
  return ", ".join(items) or "not evaluated"


def _delta(o: Outcome) -> str:
  """The signed change in fitness: a loss reads as a loss."""
  delta = o.fitness_delta
  return "n/a" if delta is None else f"{delta:+.4f}"


def _flat(text: str | None, limit: int = 300) -> str:
  """Prompt text on one line, characters kept (not ``messages.one_line``: no ASCII-only)."""
  flat = " ".join((text or "").split())
  return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _last(rows: Sequence[Any], window: int) -> Sequence[Any]:
  """The last ``window`` rows (none for ``window <= 0``; ``rows[-0:]`` would be all)."""
  return rows[-window:] if window > 0 else []


def _row(o: Outcome) -> str:
  return (f"iteration {o.iteration} | {','.join(o.scope) if o.scope else 'unscoped'} | "
          f"{o.label} | {_delta(o)} | {_flat(o.reason) if not o.feasible else '-'}")


def ancestry(rows: Sequence[Outcome], program_id: str) -> list[Outcome]:
  """The rows that made ``program_id`` and its ancestors, oldest first.

  Follows ``parent_id`` from the row whose ``program_id`` is the program; stops where a
  row is missing (the window the archive returned did not reach further back).
  """
  by_id = {o.program_id: o for o in rows if o.program_id is not None}
  chain: list[Outcome] = []
  cursor = by_id.get(program_id)
  while cursor is not None and cursor not in chain:
    chain.append(cursor)
    cursor = by_id.get(cursor.parent_id) if cursor.parent_id is not None else None
  return list(reversed(chain))


def format_lineage(rows: Sequence[Outcome], window: int, parent_id: str | None = None) -> str:
  """Lineage rows, the parent's ancestors apart from the other attempts.

  With ``parent_id`` the rows that made the parent and its ancestors are listed first,
  under their own heading, and every other row is labelled as an attempt from this line
  that did not lead here (a sibling, or an earlier child of the parent); at most
  ``window`` rows, ancestors kept first, the newest of each kind kept first. Without it
  the last ``window`` rows are listed as attempts in this lineage.
  """
  if parent_id is None:
    lines = [_row(o) for o in _last(rows, window)]
    return "\n".join(lines) or NONE
  path = ancestry(rows, parent_id)
  others = [o for o in rows if o not in path]
  shown_path = _last(path, window)
  shown_others = _last(others, window - len(shown_path))
  parts = []
  if shown_path:
    parts.append(f"Edits that made this program, from its oldest shown ancestor to it "
                 f"({len(shown_path)} of {len(path)}):")
    parts.extend(_row(o) for o in shown_path)
  if shown_others:
    parts.append(f"Other attempts from this program and its ancestors, not on its path "
                 f"(siblings; {len(shown_others)} of {len(others)}):")
    parts.extend(_row(o) for o in shown_others)
  return "\n".join(parts) or NONE


def format_tried(rows: Sequence[Outcome], window: int) -> str:
  lines = []
  for o in _last(rows, window):
    why = f": {_flat(o.reason, 200)}" if not o.feasible and o.reason else ""
    lines.append(f"- iteration {o.iteration}: {_flat(o.directive)} -> {o.label} "
                 f"({_delta(o)}){why}")
  return "\n".join(lines) or NONE


def _proposals(count: int) -> str:
  return f"{count} proposal{'' if count == 1 else 's'}"


def _breakdown(rows: Sequence[Outcome]) -> str:
  """``R rejected or not evaluated, E evaluated (B better than their parent, ...)``."""
  evaluated = [o.label for o in rows if o.feasible and o.fitness_delta is not None]
  equal = evaluated.count("unchanged") + evaluated.count("tie")  # A tie within noise is equal.
  return (f"{len(rows) - len(evaluated)} rejected or not evaluated, {len(evaluated)} "
          f"evaluated ({evaluated.count('improved')} better than their parent, "
          f"{evaluated.count('worse')} worse, {equal} equal)")


def format_scope_stats(history: ProposalHistory, factors: Sequence[str]) -> str:
  """Per factor: counts that add up, and the signed fitness changes of evaluated children.

  Only proposals scoped to the factor alone are counted, so the rows add up to the
  scoped proposals of the search; a loss is shown as a loss (never clipped at zero).
  """
  lines = []
  for f in factors:
    rows = [o for o in history.outcomes if o.scope and tuple(o.scope) == (f,)]
    deltas = [o.fitness_delta for o in rows if o.feasible and o.fitness_delta is not None]
    change = (f"; fitness change vs parent: mean {sum(deltas) / len(deltas):+.4f}, best "
              f"{max(deltas):+.4f}, worst {min(deltas):+.4f}" if deltas else "")
    lines.append(f"{f}: {_proposals(len(rows))}: {_breakdown(rows)}{change}")
  return "\n".join(lines)


def format_plateau(history: ProposalHistory) -> str:
  """The whole search's counts (every lineage), worded so they cannot be read as lineage rows."""
  p = history.plateau()
  best = "n/a" if p.best_fitness is None else f"{p.best_fitness:.4f}"
  return (f"finished so far in the whole search (every lineage): {_proposals(p.evaluations)}: "
          f"{_breakdown(history.outcomes)}\n"
          f"proposals since the best fitness last improved: {p.since_best}\n"
          f"best fitness so far: {best}")


def task_card(task: str) -> str:
  """``prompts/tasks/<task>.md``, or the generic card naming the algorithm."""
  if prompts.exists(f"tasks/{task}"):
    return prompts.render(f"tasks/{task}")
  return prompts.render("tasks/_generic", algorithm=task)


def factor_description(name: str) -> str:
  """``prompts/factors/<NAME>.md``, or the generic description naming the markers."""
  if prompts.exists(f"factors/{name}"):
    return prompts.render(f"factors/{name}")
  return prompts.render("factors/_generic", name=name)


def merge_outcomes(*groups: Sequence[Outcome]) -> list[Outcome]:
  """Union of outcome lists without duplicates, ordered by iteration."""
  seen: dict[tuple[Any, ...], Outcome] = {}
  for group in groups:
    for o in group:
      seen.setdefault((o.iteration, o.program_id, o.directive, o.scope), o)
  return sorted(seen.values(), key=lambda o: o.iteration)


# ---- prompts that fit the window -------------------------------------------------------------

Build = Callable[[Mapping[str, int]], list[dict[str, str]]]


@dataclasses.dataclass(frozen=True)
class Fitted:
  """A prompt shrunk to a token budget.

  Attributes:
    messages: the chat messages to send.
    keep: items kept per optional part.
    dropped: items left out per part (only parts that lost some).
    tokens: the prompt's token count (estimated when the tokenizer is unknown).
    budget: the token budget it was fitted to, ``None`` when the window is unknown.
  """

  messages: list[dict[str, str]]
  keep: dict[str, int]
  dropped: dict[str, int]
  tokens: int | None
  budget: int | None

  @property
  def fits(self) -> bool:
    return self.budget is None or (self.tokens is not None and self.tokens <= self.budget)


def fit(client: LLMClient, role: str, build: Build, parts: Mapping[str, int],
        budget: int | None = None) -> Fitted:
  """Drops optional items, in :data:`SHRINK_ORDER`, until the prompt fits ``budget``.

  Args:
    client: the client that will send it (knows the role's model and window).
    role: the call's role.
    build: renders the messages given how many items of each part to keep; it must
      show the *most useful* ``keep[part]`` items (the newest lineage rows and tried
      directives, the first inspirations).
    parts: items available per part, e.g. ``{"lineage": 8, "tried": 3}``.
    budget: prompt tokens allowed; default: the role's window less room for the reply
      (``client.prompt_budget``).
  """
  keep = {name: max(0, int(n)) for name, n in parts.items()}
  if budget is None:
    budget = client.prompt_budget(role)
  messages = build(keep)
  if budget is None:
    return Fitted(messages, keep, {}, None, None)
  tokens = client.count_tokens(role, messages)
  order = [n for n in SHRINK_ORDER if n in keep] + [n for n in keep if n not in SHRINK_ORDER]
  for name in order:
    while tokens > budget and keep[name] > 0:
      keep[name] -= 1
      messages = build(keep)
      tokens = client.count_tokens(role, messages)
  dropped = {n: int(parts[n]) - keep[n] for n in keep if int(parts[n]) > keep[n]}
  return Fitted(messages, keep, dropped, tokens, budget)


def send(client: LLMClient, role: str, build: Build, parts: Mapping[str, int],
         decision: dict[str, Any] | None = None) -> LLMRecord:
  """Fits the prompt to the window, sends it, and on a context-length error shrinks once more.

  The retry after a context-length error fits to half the tokens of the refused
  prompt; with nothing left to drop the failed record is returned (the proposal is
  rejected with its reason). ``record.context`` and ``decision["context"][role]`` say
  what was dropped, the window and whether the provider refused the first prompt.
  """
  fitted = fit(client, role, build, parts)
  record = client.complete(role, fitted.messages)
  note: dict[str, Any] = {"dropped": fitted.dropped, "budget": fitted.budget,
                          "prompt_tokens_estimate": fitted.tokens}
  if record.error_kind == "context_window":
    tokens = fitted.tokens or client.count_tokens(role, fitted.messages)
    smaller = fit(client, role, build, fitted.keep, budget=max(1, tokens // 2))
    note["context_error"] = record.error
    if smaller.keep != fitted.keep:
      record = client.complete(role, smaller.messages)
      note.update(dropped={n: int(parts[n]) - smaller.keep[n] for n in parts
                           if int(parts[n]) > smaller.keep[n]},
                  retried=True, prompt_tokens_estimate=smaller.tokens)
    else:
      note["retried"] = False
  if note["dropped"] or "context_error" in note:
    record.context = note
    if decision is not None:
      decision.setdefault("context", {})[role] = note
  return record


__all__ = ["Fitted", "NONE", "SHRINK_ORDER", "VISIBLE_METRICS", "ancestry", "chat",
           "factor_description", "fit", "format_lineage", "format_metrics", "format_plateau", "format_scope_stats",
           "format_tried", "merge_outcomes", "metrics_line", "send", "task_card"]
