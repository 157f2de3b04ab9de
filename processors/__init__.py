"""Load a seed or evolved program as a CLRS ``ProcessorFactory``.

``processors.load("triplet_gmpnn")`` or ``processors.load("RUN/results/best_program.py")``
returns a callable ``factory(out_size) -> clrs.processors.Processor`` that can be passed
straight to ``clrs.models.BaselineModel(processor_factory=...)``. This module has no search
machinery: it only imports a program file and calls its ``get_processor_factory``.

Loading executes the program, so only load code you trust or code that passed
``spark_clrs.check`` (the search itself only ever loads candidates in a sandboxed child).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import pathlib
import sys
import types
from collections.abc import Callable
from typing import Any

from spark_clrs.messages import one_line

SEEDS_DIR = pathlib.Path(__file__).resolve().parent.parent / "seeds"

ProcessorFactory = Callable[[int], Any]


class ProgramLoadError(ValueError):
  """A program file is missing, does not import, or lacks ``get_processor_factory``."""


def seed_names() -> list[str]:
  """Names of the shipped seeds (``seeds/<name>.py``)."""
  return sorted(p.stem for p in SEEDS_DIR.glob("*.py") if not p.stem.startswith("_"))


def resolve(path_or_name: str | pathlib.Path) -> pathlib.Path:
  """Path of a program given a file path or a seed name."""
  candidate = pathlib.Path(path_or_name)
  if candidate.suffix == ".py" or candidate.exists():
    if not candidate.is_file():
      raise ProgramLoadError(f"program file {str(candidate)!r} does not exist; pass a .py path "
                             f"or one of the seed names {seed_names()}")
    return candidate.resolve()
  seed = SEEDS_DIR / f"{path_or_name}.py"
  if seed.is_file():
    return seed
  raise ProgramLoadError(f"unknown program {str(path_or_name)!r}: not a file and not a seed "
                         f"name; use one of {seed_names()} or a path to a .py file")


def _one_line(e: BaseException) -> str:
  """The program's own exception, as one printable line naming its type."""
  return f"{type(e).__name__}: {one_line(e)}"


def load_module(path_or_name: str | pathlib.Path) -> types.ModuleType:
  """Imports a program file as a fresh module per call.

  The module is registered in ``sys.modules`` under a name derived from the file's
  content hash (dataclasses and pickling look modules up by name), so two different
  versions of one file never shadow each other.
  """
  path = resolve(path_or_name)
  text = path.read_text()
  digest = hashlib.sha1(text.encode()).hexdigest()[:12]
  name = f"spark_program_{path.stem}_{digest}"
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ProgramLoadError(f"cannot import {path}: not a Python source file")
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses and pickling look modules up by name.
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # The program's own error, reported in one line.
    sys.modules.pop(name, None)
    raise ProgramLoadError(f"importing {path.name} failed: {_one_line(e)}") from e
  return module


def load(path_or_name: str | pathlib.Path, **factory_kwargs: Any) -> ProcessorFactory:
  """Returns the program's CLRS processor factory.

  Args:
    path_or_name: a seed name such as ``"triplet_gmpnn"`` or a path to a program file.
    **factory_kwargs: passed to the program's ``get_processor_factory`` (for the seeds:
      ``use_ln`` and ``nb_triplet_fts``; defaults are the CLRS reference settings).
  """
  module = load_module(path_or_name)
  get_factory = getattr(module, "get_processor_factory", None)
  if not callable(get_factory):
    raise ProgramLoadError(f"{resolve(path_or_name).name} has no get_processor_factory(); "
                           "define one that returns factory(out_size) -> Processor")
  try:
    inspect.signature(get_factory).bind(**factory_kwargs)
  except TypeError as e:
    raise ProgramLoadError(f"get_processor_factory{inspect.signature(get_factory)} does not "
                           f"accept {sorted(factory_kwargs)}: {e}") from e
  try:
    factory = get_factory(**factory_kwargs)
  except Exception as e:  # The program's own error, reported in one line.
    raise ProgramLoadError(f"{resolve(path_or_name).name}: get_processor_factory() failed: "
                           f"{_one_line(e)}") from e
  if not callable(factory):
    raise ProgramLoadError("get_processor_factory() must return a callable factory(out_size)")
  return factory


__all__ = ["ProgramLoadError", "load", "load_module", "resolve", "seed_names", "SEEDS_DIR"]
