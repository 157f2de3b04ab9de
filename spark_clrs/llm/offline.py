"""``spark/offline``: the built-in rule-based proposer, served as a LiteLLM custom provider.

When no ``--llm_model`` is configured, every strategy's LLM requests are answered by
this provider instead of an LLM. It is a mutation operator, not a language model: it
reads the machine-readable parts of the prompts (the ``<request .../>`` tag,
``<program>``, ``<editable_region>``, ``<tried_directives>``, ``<directive>``), picks
a move from the catalogue in :mod:`spark_clrs.llm.offline_moves` with a generator seeded
by the request's ``seed`` and content, and answers in the same format an LLM would
(router JSON, a Change/Why/Expected-effect directive, a fenced program or region
body). So a search without any key still runs the whole LiteLLM -> parsing ->
checks path.

The router picks a factor with probability proportional to the number of catalogue
moves that apply to it; the refiner picks an applicable move not yet tried in its
scope (any applicable one once all were tried); the rewriter applies the move
named in the directive, or, for a directive written by someone else, the move whose
description shares the most words with it (a random applicable one when there is no
directive, as in ``asr_only``). A scope may name several factors (``rc_sar``).

The baseline strategies' whole-program prompts (``openevolve``, ``evoprompting``,
``funsearch``, ``eoh``) carry ``<request role="program" base="ID" factors="..."
edit="KIND" others="IDS"/>``, and the answer is the kind of edit that prompt asks for,
made to ``<program id="ID">``: one change for a one-change prompt (FunSearch's next
version, EoH's M1), a parameter change for EoH's M2, a change unlike every program
shown for EoH's E1, SEARCH/REPLACE blocks for OpenEvolve's diff prompt, and for the
crossover prompts (EvoPrompting, EoH's E2) the base with one factor region taken from
a program it was shown. It describes what it did in braces before the code (EoH's
thought + code form). None of it reads fitness: this is a rule-based proposer, and
runs made with it compare the search machinery, not the methods (every table, plot and
summary of such runs says so). Token counts are estimates (4 characters per token).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spark_clrs.llm import offline_moves
from spark_clrs.llm.backend import litellm, register_provider
from spark_clrs.llm.settings import OFFLINE_MODEL
from spark_clrs.programs import regions

PROVIDER = "spark"
MODEL = OFFLINE_MODEL
_REQUEST = re.compile(r"<request\s+([^>]*?)/?>")
_ATTR = re.compile(r'(\w+)="([^"]*)"')
_WORD = re.compile(r"[a-z][a-z0-9_]+")


class OfflineRequestError(ValueError):
  """The prompt is not a SPARK role prompt the offline proposer can answer."""


def _request(messages: Sequence[Mapping[str, Any]]) -> tuple[dict[str, str], str]:
  """The ``<request>`` attributes and the user message that holds them."""
  for message in reversed(messages):
    content = str(message.get("content") or "")
    match = _REQUEST.search(content) if message.get("role") == "user" else None
    if match:
      return dict(_ATTR.findall(match.group(1))), content
  raise OfflineRequestError(
      "the prompt has no <request role=.../> tag: spark/offline answers only the prompts of "
      "spark_clrs's strategies; configure --llm_model (and --llm_api_base) for other prompts")


def _section(text: str, tag: str) -> str:
  """The text between ``<tag ...>`` and ``</tag>`` (first opening, last closing)."""
  start = re.search(rf"<{tag}(\s[^>]*)?>\n?", text)
  end = text.rfind(f"</{tag}>")
  if start is None or end < start.end():
    raise OfflineRequestError(f"the prompt has no <{tag}> section")
  return text[start.end():end].rstrip("\n")


def _named_section(text: str, tag: str, attr: str, value: str) -> str | None:
  """The text of ``<tag attr="value">...</tag>``, or ``None`` when there is none."""
  match = re.search(rf'<{tag}\s+{attr}="{re.escape(value)}"[^>]*>\n?(.*?)\n?</{tag}>', text,
                    re.DOTALL)
  return match.group(1) if match else None


def _scopes(attrs: Mapping[str, str]) -> list[str]:
  scopes = [s.strip() for s in attrs.get("scope", "").split(",") if s.strip()]
  if not scopes:
    raise OfflineRequestError("the <request> tag names no scope")
  return scopes


def _editable_bodies(text: str, scopes: Sequence[str]) -> dict[str, str]:
  """Each scope's ``<editable_region name=...>`` body (with a trailing newline)."""
  if len(scopes) == 1:
    return {scopes[0]: _section(text, "editable_region") + "\n"}
  bodies = {}
  for scope in scopes:
    body = _named_section(text, "editable_region", "name", scope)
    if body is None:
      raise OfflineRequestError(f"the prompt has no <editable_region name=\"{scope}\"> section")
    bodies[scope] = body + "\n"
  return bodies


def _rng(seed: int, messages: Sequence[Mapping[str, Any]]) -> np.random.Generator:
  digest = hashlib.sha256(json.dumps([seed, [str(m.get("content")) for m in messages]])
                          .encode()).digest()
  return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _pick(items: Sequence[Any], rng: np.random.Generator) -> Any:
  return items[int(rng.integers(len(items)))]


def weighted_factor(program: str, factors: Sequence[str],
                    rng: np.random.Generator) -> tuple[str, dict[str, int]]:
  """A factor drawn with probability proportional to its applicable catalogue moves.

  Returns:
    The factor and the number of applicable moves per factor.
  """
  present = regions.parse_regions(program)
  counts = {f: len(offline_moves.applicable(f, present[f].body)) if f in present else 0
            for f in factors}
  usable = [f for f in factors if counts[f] > 0] or list(factors)
  if not usable:
    raise OfflineRequestError("no factors to choose from")
  weights = np.array([max(counts[f], 1) for f in usable], dtype=float)
  return usable[int(rng.choice(len(usable), p=weights / weights.sum()))], counts


def answer_router(attrs: Mapping[str, str], text: str, rng: np.random.Generator) -> str:
  factors = [f.strip() for f in attrs.get("factors", "").split(",") if f.strip()]
  if not factors:
    raise OfflineRequestError("the router prompt names no factors")
  scope, counts = weighted_factor(_section(text, "program"), factors, rng)
  summary = ", ".join(f"{f}: {counts[f]}" for f in factors)
  reply = {"scope": scope, "rationale": f"rule-based choice weighted by the number of applicable "
                                        f"catalogue moves ({summary})"}
  return f"```json\n{json.dumps(reply)}\n```"


def answer_refiner(attrs: Mapping[str, str], text: str, rng: np.random.Generator) -> str:
  scopes = _scopes(attrs)
  bodies = _editable_bodies(text, scopes)
  tried = set(offline_moves.named_moves(_section(text, "tried_directives")))
  moves = [m for f in scopes for m in offline_moves.applicable(f, bodies[f], exclude=tried)] or [
      m for f in scopes for m in offline_moves.applicable(f, bodies[f])]
  if not moves:
    where = " or ".join(scopes)
    return (f"Change: none (no catalogue move applies to the {where} region)\n"
            "Why: the offline proposer only knows moves for the shipped seeds' code\n"
            "Expected effect: none")
  return _pick(moves, rng).directive()


def _match_directive(directive: str, moves: Sequence[offline_moves.Move],
                     rng: np.random.Generator) -> offline_moves.Move:
  for name in offline_moves.named_moves(directive)[:1]:
    for move in moves:
      if move.name == name:
        return move
  words = set(_WORD.findall(directive.lower()))
  overlap = [len(words & set(_WORD.findall(f"{m.name} {m.change}".lower()))) for m in moves]
  best = max(overlap)
  if best >= 2:
    return moves[overlap.index(best)]
  return _pick(moves, rng)


def answer_rewriter(attrs: Mapping[str, str], text: str, rng: np.random.Generator) -> str:
  scopes, mode = _scopes(attrs), attrs.get("output", "program")
  program = _section(text, "program") + "\n"
  directive = _section(text, "directive") if "<directive>" in text else ""
  moves = [m for f in scopes for m in offline_moves.applicable(f, regions.get_region(program, f))]
  if not moves:
    scope = scopes[0]
    body = regions.get_region(program, scope)
    new_body, note = body, f"No catalogue move applies to the {' or '.join(scopes)} region; unchanged."
  else:
    move = _match_directive(directive, moves, rng)
    scope = move.factor
    body = regions.get_region(program, scope)
    new_body = move.apply(body) or body
    note = f"Applied the catalogue move `{move.name}` to the {scope} region."
  if mode != "region":
    code = regions.replace_region(program, scope, new_body)
  elif len(scopes) == 1:
    code = new_body
  else:  # Several editable regions: return the changed one with its marker lines.
    code = f"{regions.begin_marker(scope)}\n{new_body}{regions.end_marker(scope)}"
  return f"{note}\n\n```python\n{code.rstrip()}\n```\n"


# EoH's M2 asks for other parameter settings: the moves that change a width, an
# activation, an initialiser or a bias rather than the structure.
_PARAMETER_MOVE = re.compile(r"width|activation|init|bias|offset")
EDITS = ("one", "parameter", "diff", "crossover", "explore")


def _one_move(program: str, factors: Sequence[str], rng: np.random.Generator, *,
              only: re.Pattern[str] | None = None,
              avoid: Sequence[str] = ()) -> tuple[str, str] | None:
  """``(new program, note)`` for one catalogue move in one factor, or ``None``.

  ``only`` keeps moves whose name matches; a child equal to a program in ``avoid`` is
  not made (EoH's E1: an idea unlike all the given ones).
  """
  present = regions.parse_regions(program)
  options = {}
  for f in factors:
    if f not in present:
      continue
    moves = [m for m in offline_moves.applicable(f, present[f].body)
             if only is None or only.search(m.name)]
    if avoid:
      moves = [m for m in moves if regions.replace_region(
          program, f, m.apply(present[f].body)) not in avoid]
    if moves:
      options[f] = moves
  if not options:
    return None
  factor = _pick(sorted(options, key=list(factors).index), rng)
  move = _pick(options[factor], rng)
  child = regions.replace_region(program, factor, move.apply(present[factor].body))
  note = (f"in {factor}, {move.change[0].lower()}{move.change[1:].rstrip('.')} "
          f"[move: {move.name}]")
  return child, note


def _crossover(program: str, others: Mapping[str, str], factors: Sequence[str],
               rng: np.random.Generator) -> tuple[str, str] | None:
  """The base with one factor region taken from another program shown, or ``None``."""
  base = regions.parse_regions(program)
  pairs = []
  for pid, text in others.items():
    try:
      theirs = regions.parse_regions(text)
    except regions.RegionError:
      continue
    pairs.extend((pid, f, theirs[f].body) for f in factors
                 if f in base and f in theirs and theirs[f].body != base[f].body)
  if not pairs:
    return None
  pid, factor, body = _pick(pairs, rng)
  return (regions.replace_region(program, factor, body),
          f"kept the base program and took the {factor} region from program {pid}")


def answer_program(attrs: Mapping[str, str], text: str, rng: np.random.Generator) -> str:
  """The edit the prompt's ``edit`` attribute asks for, applied to ``<program id=base>``.

  ``one`` (default): one catalogue move in one factor; ``parameter``: one move that
  changes a width, activation, initialiser or bias; ``explore``: one move whose result
  equals none of the programs shown; ``crossover``: one factor region taken from one
  of the ``others`` programs (one move when they do not differ from the base);
  ``diff``: one move, answered as SEARCH/REPLACE blocks instead of a whole program.
  """
  base = attrs.get("base", "")
  program = _named_section(text, "program", "id", base)
  if program is None:
    raise OfflineRequestError(f"the prompt has no <program id=\"{base}\"> section (the "
                              "<request base=...> program)")
  program += "\n"
  edit = attrs.get("edit", "one") or "one"
  if edit not in EDITS:
    raise OfflineRequestError(f"unknown edit kind {edit!r} in <request>; expected one of "
                              f"{list(EDITS)}")
  factors = [f.strip() for f in attrs.get("factors", "").split(",") if f.strip()]
  others = {}
  for pid in (p.strip() for p in attrs.get("others", "").split(",")):
    other = _named_section(text, "program", "id", pid) if pid and pid != base else None
    if other is not None:
      others[pid] = other + "\n"
  made = None
  if edit == "crossover":
    made = _crossover(program, others, factors, rng)
  elif edit == "parameter":
    made = _one_move(program, factors, rng, only=_PARAMETER_MOVE)
  elif edit == "explore":
    made = _one_move(program, factors, rng, avoid=[program, *others.values()])
  made = made or _one_move(program, factors, rng)
  if made is None:
    return ("{No catalogue move applies to this program; it is returned unchanged.}\n\n"
            f"```python\n{program.rstrip()}\n```\n")
  child, note = made
  thought = "{" + note + ".}"
  if edit == "diff":
    from spark_clrs.programs import diffs  # pylint: disable=g-import-not-at-top

    return f"{thought}\n\n{diffs.render(program, child)}\n"
  return f"{thought}\n\n```python\n{child.rstrip()}\n```\n"


_ROLES = {"router": answer_router, "refiner": answer_refiner, "rewriter": answer_rewriter,
          "program": answer_program}


def answer(messages: Sequence[Mapping[str, Any]], seed: int = 0) -> str:
  """The offline proposer's reply to a strategy's prompt (deterministic in seed and prompt)."""
  attrs, text = _request(messages)
  role = attrs.get("role", "")
  if role not in _ROLES:
    raise OfflineRequestError(f"unknown role {role!r} in <request>; expected one of {sorted(_ROLES)}")
  return _ROLES[role](attrs, text, _rng(seed, messages))


def _tokens(text: str) -> int:
  return max(1, (len(text) + 3) // 4)


class OfflineProvider(litellm.CustomLLM):
  """LiteLLM handler for ``spark/<anything>``: answers with :func:`answer`."""

  def completion(self, model: str, messages: list, api_base: str | None,
                 custom_prompt_dict: dict, model_response: Any, print_verbose: Any, encoding: Any,
                 api_key: str | None, logging_obj: Any, optional_params: dict, *args: Any,
                 **kwargs: Any) -> Any:
    del model, api_base, custom_prompt_dict, print_verbose, encoding, api_key, logging_obj
    del args, kwargs
    try:
      reply = answer(messages, int(optional_params.get("seed") or 0))
    except (OfflineRequestError, regions.RegionError) as e:
      raise litellm.BadRequestError(message=f"spark/offline: {e}", model=MODEL,
                                    llm_provider=PROVIDER) from e
    prompt = "".join(str(m.get("content") or "") for m in messages)
    model_response.choices[0].message.content = reply
    model_response.choices[0].finish_reason = "stop"
    model_response.model = MODEL
    model_response.usage = litellm.Usage(prompt_tokens=_tokens(prompt), completion_tokens=_tokens(reply),
                                 total_tokens=_tokens(prompt) + _tokens(reply))
    return model_response

  async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
    return self.completion(*args, **kwargs)


def register() -> None:
  """Makes ``spark/offline`` routable through ``litellm.completion`` (idempotent).

  Importing this module does it: :mod:`spark_clrs.llm.backend` imports it by name the
  first time a client is configured with a ``spark/`` model.
  """
  register_provider(PROVIDER, OfflineProvider())


register()


__all__ = ["MODEL", "OfflineProvider", "OfflineRequestError", "PROVIDER", "answer", "register",
           "weighted_factor"]
