"""Turning LLM replies into decisions: the router's scope, the refiner's directive, the child.

Real models wrap JSON in fences or prose, stop mid-program when they hit a token limit,
forget the code fence, or hand the parent back unchanged. Each parser here either
returns a usable value or raises :class:`ReplyError` with one line saying what was
wrong, which the proposer records (and, for the router, feeds back in a retry).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

from spark_clrs import llm
from spark_clrs.programs import regions

_FENCE_OPEN = re.compile(r"^[ \t]*(```+|~~~+)[ \t]*([A-Za-z0-9_+.-]*)[^\n]*$", re.MULTILINE)
_CHANGE_LINE = re.compile(r"^[ \t*#>-]*\**change\**\s*:", re.IGNORECASE | re.MULTILINE)
SAR_OUTPUTS = ("program", "region")
MAX_DIRECTIVE_CHARS = 2000
# Fence tags under which a model writes prose rather than code.
_PROSE_FENCES = ("", "text", "txt", "plain", "plaintext", "markdown", "md")
# Longer than this is not a directive at all (an essay or a program), not one to cap.
MAX_DIRECTIVE_REPLY_CHARS = 12000


class ReplyError(ValueError):
  """An LLM reply cannot be used; the message says why in one line."""


@dataclasses.dataclass(frozen=True)
class RouterChoice:
  scope: str
  rationale: str


@dataclasses.dataclass(frozen=True)
class CodeBlock:
  """A fenced block: its language tag, its body, whether it was closed, and where it sits.

  ``span`` is the ``(start, end)`` of the whole block in the reply, fences included.
  """

  language: str
  body: str
  closed: bool
  span: tuple[int, int] = (0, 0)


def code_blocks(text: str) -> list[CodeBlock]:
  """Fenced code blocks in order; an unclosed last block is returned with ``closed=False``."""
  blocks: list[CodeBlock] = []
  pos = 0
  while True:
    start = _FENCE_OPEN.search(text, pos)
    if start is None:
      return blocks
    fence, language = start.group(1), start.group(2).lower()
    body_start = start.end() + 1
    close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE)
    end = close.search(text, body_start)
    if end is None:
      blocks.append(CodeBlock(language, text[body_start:], False, (start.start(), len(text))))
      return blocks
    blocks.append(CodeBlock(language, text[body_start:end.start()], True,
                            (start.start(), end.end())))
    pos = end.end()


def _json_objects(text: str) -> list[Any]:
  """Every ``{...}`` in ``text`` that parses as JSON, in order."""
  found = []
  decoder = json.JSONDecoder()
  i = text.find("{")
  while i != -1:
    try:
      value, end = decoder.raw_decode(text, i)
    except json.JSONDecodeError:
      i = text.find("{", i + 1)
      continue
    found.append(value)
    i = text.find("{", end)
  return found


def parse_router_reply(text: str | None, factors: Sequence[str]) -> RouterChoice:
  """The router's ``{"scope": ..., "rationale": ...}``, fenced or bare, prose around it allowed.

  Raises:
    ReplyError: no JSON object with a ``scope`` key, or a scope not in ``factors``.
  """
  if not text or not text.strip():
    raise ReplyError("the reply is empty")
  text = llm.strip_reasoning(text)
  candidates: list[Any] = []
  for block in code_blocks(text):
    candidates.extend(_json_objects(block.body))
  candidates.extend(_json_objects(text))
  objects = [c for c in candidates if isinstance(c, dict)]
  if not objects:
    raise ReplyError("no JSON object found; reply with {\"scope\": ..., \"rationale\": ...}")
  with_scope = [o for o in objects if isinstance(o.get("scope"), str)]
  if not with_scope:
    raise ReplyError("the JSON object has no string field 'scope'")
  by_upper = {f.upper(): f for f in factors}
  bad = []
  for obj in with_scope:
    scope = obj["scope"].strip().strip("`'\" ").upper()
    scope = scope.removesuffix(" REGION").removesuffix("_REGION")
    if scope in by_upper:
      rationale = obj.get("rationale", "")
      return RouterChoice(scope=by_upper[scope], rationale=str(rationale).strip())
    bad.append(obj["scope"])
  raise ReplyError(f"scope {bad[0]!r} is not one of the factors {list(factors)}")


def _directive_field(value: Any) -> str | None:
  """The first non-empty string ``directive`` field in a JSON value, however deep."""
  if isinstance(value, dict):
    field = value.get("directive")
    if isinstance(field, str) and field.strip():
      return field.strip()
    children = list(value.values())
  elif isinstance(value, list):
    children = value
  else:
    return None
  for child in children:
    found = _directive_field(child)
    if found is not None:
      return found
  return None


_DEF_LINE = re.compile(r"^\s*(class|def) \w+.*:\s*$", re.MULTILINE)


def _looks_like_code(text: str) -> bool:
  return bool(_DEF_LINE.search(text)) and len(text.splitlines()) > 15


def _prose(text: str) -> tuple[str, bool]:
  """The reply without its code: ``(prose, whether code was removed)``.

  A fenced block tagged as code (``python``, ...) or holding a program is code; a block
  without a tag or tagged as text that reads as prose is kept, unwrapped (some models
  fence their whole answer). Region marker lines are code wherever they are.
  """
  parts, cursor, removed = [], 0, False
  for block in code_blocks(text):
    parts.append(text[cursor:block.span[0]])
    cursor = block.span[1]
    textual = block.language in _PROSE_FENCES and not _looks_like_code(block.body)
    if textual and "REGION =====" not in block.body:
      parts.append(block.body)
    else:
      removed = True
  parts.append(text[cursor:])
  lines = []
  for line in "".join(parts).split("\n"):
    if "REGION =====" in line:
      removed = True
    else:
      lines.append(line)
  return "\n".join(lines).strip(), removed


def parse_directive(text: str | None) -> str:
  """The refiner's directive, read the way a person would read the reply.

  A JSON object's ``directive`` field, wherever it sits (fenced, bare, inside prose or
  nested), is the directive. Otherwise the directive is the prose outside code blocks
  and region marker lines. A reply listing several ``Change:`` alternatives keeps the
  first; a long directive is capped at :data:`MAX_DIRECTIVE_CHARS`.

  Raises:
    ReplyError: no directive text remains (empty, only code, only JSON without a
      ``directive`` field), or the reply is far too long to be a directive.
  """
  if not text or not text.strip():
    raise ReplyError("the directive is empty")
  text = llm.strip_reasoning(text)
  found = None
  for value in [v for b in code_blocks(text) for v in _json_objects(b.body)] + _json_objects(
      text):
    found = _directive_field(value)
    if found is not None:
      break
  if found is not None:
    text = found
  else:
    text, removed_code = _prose(text)
    if not text:
      if removed_code:
        raise ReplyError("the refiner returned code instead of a directive; describe the "
                         "change in prose, the rewriter writes the code")
      raise ReplyError("the directive is empty")
    if text[0] in "{[":
      try:
        value = json.loads(text)
      except json.JSONDecodeError:
        value = None
      if value is not None or text.count("{") + text.count("[") > 3:
        raise ReplyError("the directive is JSON without a 'directive' field; reply with the "
                         "Change / Why / Expected effect lines")
    if _looks_like_code(text) and not _CHANGE_LINE.search(text):
      raise ReplyError("the refiner returned code instead of a directive; describe the "
                       "change in prose, the rewriter writes the code")
  if len(text) > MAX_DIRECTIVE_REPLY_CHARS:
    raise ReplyError(f"the directive is {len(text)} characters long; write one short "
                     "directive (Change / Why / Expected effect)")
  starts = [m.start() for m in _CHANGE_LINE.finditer(text)]
  if starts and starts[0] > 0 and _DEF_LINE.search(text[:starts[0]]):
    text = text[starts[0]:]  # Unfenced code before the directive.
    starts = [m.start() for m in _CHANGE_LINE.finditer(text)]
  if len(starts) > 1:  # Several alternatives: the first one is the directive.
    text = text[:starts[1]].rstrip()
  if len(text) > MAX_DIRECTIVE_CHARS:
    text = text[:MAX_DIRECTIVE_CHARS].rstrip() + " ..."
  return text


def _pick_block(text: str, want_markers: str | None) -> str:
  """The fenced code block holding the answer (prefers Python blocks, then markers, then size)."""
  blocks = code_blocks(text)
  if not blocks:
    raise ReplyError("no fenced code block in the reply; return the code in one ```python block")
  closed = [b for b in blocks if b.closed]
  if not blocks[-1].closed:
    raise ReplyError("the reply is truncated: its code block is never closed (raise "
                     "--llm_max_tokens or use --sar_output=region)")

  def rank(block: CodeBlock) -> tuple[bool, bool, int]:
    has_markers = bool(want_markers) and f"BEGIN {want_markers} REGION" in block.body
    return (has_markers, block.language in ("python", "py", ""), len(block.body))

  return max(closed, key=rank).body


def extract_child(reply: str | None, parent_text: str, scope: str, *, mode: str = "program",
                  finish_reason: str | None = None) -> str:
  """The child program from a rewriter reply.

  Args:
    reply: the rewriter's reply text.
    parent_text: the program the rewriter was given.
    scope: the editable factor.
    mode: ``program`` (the reply holds the whole program) or ``region`` (only the new
      body of ``scope``, spliced into the parent here).
    finish_reason: the provider's finish reason; ``length`` means the reply was cut off.

  Raises:
    ReplyError: truncated, fence-less, marker-less or unchanged replies.
  """
  if mode not in SAR_OUTPUTS:
    raise ValueError(f"sar_output must be one of {SAR_OUTPUTS}, got {mode!r}")
  text = _usable_reply(reply, finish_reason, "the rewriter reply is empty",
                       "raise --llm_max_tokens or use --sar_output=region")
  body = _pick_block(text, scope if mode == "program" else None)
  if mode == "program":
    child = body.rstrip("\n") + ("\n" if parent_text.endswith("\n") else "")
    try:
      child_regions = regions.parse_regions(child)
    except regions.RegionError as e:
      raise ReplyError(f"the returned program's region markers are broken: {e}") from e
    if scope not in child_regions:
      raise ReplyError(f"the returned program has no {scope} region; it is truncated or "
                       "incomplete")
  else:
    if "REGION =====" in body:
      raise ReplyError("the region body contains region marker lines; return only the lines "
                       "between the markers")
    old = regions.get_region(parent_text, scope)
    child = regions.replace_region(parent_text, scope, regions.reindent_body(body, old))
  if child == parent_text or _same_code(child, parent_text):
    raise ReplyError("the reply returns the parent unchanged")
  return child


def repair_drift(child: str | None, parent_text: str, scope: Sequence[str], mode: str,
                 decision: dict[str, Any]) -> str | None:
  """A program-mode child with whitespace/comment drift outside ``scope`` repaired.

  A model that retypes the read-only part of a program drifts in blank lines, trailing
  spaces or comments; such a child gets its ``scope`` regions spliced into the parent
  and ``decision["drift_repaired"]`` lists what drifted. Any code change outside the
  scope is left alone, so the scope check still rejects it as entangled. Region-mode
  children are spliced already; ``None`` (no child) passes through.
  """
  if child is None or mode != "program":
    return child
  repair = regions.repair_drift(parent_text, child, scope)
  if repair is None:
    return child
  decision["drift_repaired"] = list(repair.drift)
  return repair.child


def _usable_reply(reply: str | None, finish_reason: str | None, empty: str, fix: str) -> str:
  """The reply without reasoning blocks; raises for an empty or cut-off reply."""
  if not reply or not reply.strip():
    raise ReplyError(empty)
  if finish_reason == "length":
    raise ReplyError(f"the reply is truncated (finish_reason=length): {fix}")
  return llm.strip_reasoning(reply)


def extract_program(reply: str | None, parent_text: str, factors: Sequence[str], *,
                    finish_reason: str | None = None) -> str:
  """A whole program from a free-form reply (any region may change, markers must stay).

  Raises:
    ReplyError: empty, truncated, fence-less, marker-less or unchanged replies.
  """
  text = _usable_reply(reply, finish_reason, "the reply is empty", "raise --llm_max_tokens")
  body = _pick_block(text, factors[0] if factors else None)
  child = body.rstrip("\n") + ("\n" if parent_text.endswith("\n") else "")
  try:
    child_regions = regions.parse_regions(child)
  except regions.RegionError as e:
    raise ReplyError(f"the returned program's region markers are broken: {e}") from e
  missing = [f for f in factors if f not in child_regions]
  if missing:
    raise ReplyError(f"the returned program has no {', '.join(missing)} region marker(s); keep "
                     "every '# ===== BEGIN/END NAME REGION =====' line")
  if child == parent_text or _same_code(child, parent_text):
    raise ReplyError("the reply returns the parent unchanged")
  return child


def extract_regions(reply: str | None, parent_text: str, scope: Sequence[str], *,
                    finish_reason: str | None = None) -> str:
  """The child from a reply holding new bodies of some ``scope`` regions, markers included.

  Each returned region is spliced into the parent; a region left out stays as it was.

  Raises:
    ReplyError: no region of ``scope`` in the reply, a region outside ``scope``, broken
      markers, or nothing changed.
  """
  text = _usable_reply(reply, finish_reason, "the reply is empty",
                       "raise --llm_max_tokens or return fewer regions")
  body = _pick_block(text, scope[0] if scope else None)
  try:
    returned = regions.parse_regions(body)
  except regions.RegionError as e:
    raise ReplyError(f"the returned regions' markers are broken: {e}") from e
  extra = [n for n in returned if n not in scope]
  if extra:
    raise ReplyError(f"the reply returns region(s) {', '.join(extra)} outside the editable "
                     f"{', '.join(scope)}")
  if not returned:
    raise ReplyError(f"the reply has no region of {', '.join(scope)} with its BEGIN/END "
                     "marker lines")
  child = parent_text
  for name, region in returned.items():
    like = regions.get_region(parent_text, name)
    child = regions.replace_region(child, name, regions.reindent_body(region.body, like))
  if child == parent_text or _same_code(child, parent_text):
    raise ReplyError("the reply returns the parent unchanged")
  return child


def split_thought(reply: str | None) -> str | None:
  """The ``{...}`` description before the code of a thought + code reply (EoH), or ``None``.

  The thought is the first brace-delimited span of the prose before the first code
  fence (nested braces are kept); whitespace is collapsed.
  """
  if not reply:
    return None
  text = llm.strip_reasoning(reply)
  fence = _FENCE_OPEN.search(text)
  prose = text[:fence.start()] if fence else text
  start = prose.find("{")
  if start == -1:
    return None
  depth = 0
  for i in range(start, len(prose)):
    depth += {"{": 1, "}": -1}.get(prose[i], 0)
    if depth == 0:
      thought = " ".join(prose[start + 1:i].split())
      return thought or None
  return None


def _same_code(a: str, b: str) -> bool:
  """Equal up to trailing whitespace on each line."""
  return [line.rstrip() for line in a.strip().split("\n")] == [
      line.rstrip() for line in b.strip().split("\n")]


__all__ = ["CodeBlock", "MAX_DIRECTIVE_CHARS", "ReplyError", "RouterChoice", "SAR_OUTPUTS",
           "code_blocks", "extract_child", "extract_program", "extract_regions",
           "parse_directive", "parse_router_reply", "repair_drift", "split_thought"]
