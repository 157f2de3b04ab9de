"""Prompt templates: load a text file from ``prompts/`` and fill its named slots.

Prompt wording lives in Markdown files, never in Python, so that it can be read,
reviewed and changed without touching code. A template names its slots as
``{{slot_name}}``; :func:`render` fills them and refuses a call that leaves a slot
empty or passes a slot the template does not have, so a renamed slot can never
silently drop context from a prompt. Filling is a single pass: text inside a slot
value (program code, JSON, braces) is inserted verbatim and never re-expanded.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re

PROMPTS_ENV = "SPARK_CLRS_PROMPTS"
DEFAULT_PROMPTS_DIR = pathlib.Path(__file__).resolve().parents[2] / "prompts"
_SLOT = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class PromptError(ValueError):
  """A template is missing, or the slots passed do not match the template's slots."""


def prompts_dir() -> pathlib.Path:
  """The template directory (``$SPARK_CLRS_PROMPTS`` if set, else the repo's ``prompts/``)."""
  return pathlib.Path(os.environ.get(PROMPTS_ENV) or DEFAULT_PROMPTS_DIR)


@functools.lru_cache(maxsize=256)
def _read(path: pathlib.Path, mtime_ns: int) -> str:
  del mtime_ns  # Part of the cache key only: an edited file is read again.
  return path.read_text(encoding="utf-8")


def template_path(name: str) -> pathlib.Path:
  """Path of template ``name`` (e.g. ``"spark/router.user"``; ``.md`` is implied)."""
  if not name or name.startswith(("/", ".")) or ".." in pathlib.PurePosixPath(name).parts:
    raise PromptError(f"bad template name {name!r}; use a relative name like 'spark/router.user'")
  root = prompts_dir()
  path = root / (name if name.endswith(".md") else f"{name}.md")
  if not path.is_file():
    raise PromptError(f"no prompt template {name!r} at {path}; add the file or fix the name "
                      f"(templates: {', '.join(list_templates()[:20]) or 'none'})")
  return path


def exists(name: str) -> bool:
  """Whether template ``name`` exists."""
  try:
    template_path(name)
  except PromptError:
    return False
  return True


def load(name: str) -> str:
  """Raw text of template ``name``."""
  path = template_path(name)
  return _read(path, path.stat().st_mtime_ns)


def slots(name: str) -> list[str]:
  """Slot names of template ``name``, in order of first use."""
  return list(dict.fromkeys(_SLOT.findall(load(name))))


def list_templates() -> list[str]:
  """Names of all templates under the prompt directory."""
  root = prompts_dir()
  if not root.is_dir():
    return []
  return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.md"))


def render(name: str, /, **values: object) -> str:
  """Returns template ``name`` with every ``{{slot}}`` replaced by ``str(values[slot])``.

  Raises:
    PromptError: if the template is missing, a slot has no value, or a value is
      passed for a slot the template does not use.
  """
  text = load(name)
  wanted = set(_SLOT.findall(text))
  missing = sorted(wanted - set(values))
  unused = sorted(set(values) - wanted)
  if missing:
    raise PromptError(f"template {name!r} needs slot(s) {missing}; pass them to render()")
  if unused:
    raise PromptError(f"template {name!r} has no slot(s) {unused} (its slots: "
                      f"{sorted(wanted)}); remove them or add them to the template")
  return _SLOT.sub(lambda m: str(values[m.group(1)]), text)


__all__ = ["PromptError", "exists", "list_templates", "load", "prompts_dir", "render", "slots",
           "template_path"]
