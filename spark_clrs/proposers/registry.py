"""Strategy name -> proposer factory: what ``--strategy`` selects.

Each strategy module registers its proposer class with ``@register("<name>")``; the
search controller only ever calls :func:`make_proposer` and the ``Proposer``
interface, so adding a strategy touches no controller code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from spark_clrs.llm import LLMClient
from spark_clrs.proposers.base import Proposer, ProposerConfig

ProposerFactory = Callable[[ProposerConfig, LLMClient, Sequence[str]], Proposer]
_REGISTRY: dict[str, ProposerFactory] = {}


def register(name: str) -> Callable[[ProposerFactory], ProposerFactory]:
  """Decorator registering a proposer factory under strategy ``name``."""

  def wrap(factory: ProposerFactory) -> ProposerFactory:
    if name in _REGISTRY:
      raise ValueError(f"strategy {name!r} is registered twice; pick another name")
    _REGISTRY[name] = factory
    return factory

  return wrap


def strategies() -> list[str]:
  """Registered strategy names."""
  return sorted(_REGISTRY)


def compare_note(strategy: str) -> str:
  """The strategy's note for compare's table: where it departs from its source ("" if none).

  Read from the registered class's ``compare_note`` without building a proposer, so a
  report can show it for any run directory.
  """
  try:
    factory = _REGISTRY[strategy]
  except KeyError:
    raise ValueError(f"unknown strategy {strategy!r}; use one of {strategies()}") from None
  return str(getattr(factory, "compare_note", "") or "")


def make_proposer(strategy: str, config: ProposerConfig, client: LLMClient,
                  factors: Sequence[str]) -> Proposer:
  """The proposer for ``--strategy=strategy``."""
  try:
    factory = _REGISTRY[strategy]
  except KeyError:
    raise ValueError(f"unknown strategy {strategy!r}; use one of {strategies()}") from None
  return factory(config, client, tuple(factors))


__all__ = ["ProposerFactory", "compare_note", "make_proposer", "register", "strategies"]
