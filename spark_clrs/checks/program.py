"""The candidate as the jailed check child sees it: loaded, built, described.

Runs only in the jailed check child (it imports and calls candidate code). Every exception
text that reaches a reason is candidate-controlled, so :func:`describe` flattens it to one
short printable line and adds the candidate line it came from.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Sequence
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp

import processors
from spark_clrs.checks.protocol import CheckConfig
from spark_clrs.checks.verdict import MAX_QUOTE_CHARS
from spark_clrs.evaluation.macs import PROCESSOR_TAG
from spark_clrs.messages import one_line


class StageFailure(Exception):
  """A stage rejects the candidate with a one-line reason (``args[0]``)."""


class CallFailure(Exception):
  """The processor's ``__call__`` raised while being traced or run (described)."""


def _candidate_line(e: BaseException, program_path: str) -> str:
  """' (candidate line N)' for the innermost frame inside the program, if any."""
  for frame in reversed(traceback.extract_tb(e.__traceback__)):
    if frame.filename == program_path:
      return f" (candidate line {frame.lineno})"
  return ""


def describe(e: BaseException, program_path: str) -> str:
  """``Type: message (candidate line N)``; the message is candidate-controlled, so it is
  flattened to printable ASCII and cut to :data:`MAX_QUOTE_CHARS`."""
  try:
    text = one_line(str(e), MAX_QUOTE_CHARS)
  except Exception:  # A hostile __str__.
    text = ""
  name = one_line(type(e).__name__, 60)
  return (f"{name}: {text}" if text else name) + _candidate_line(e, program_path)


def path_str(path: Sequence[Any]) -> str:
  """``module/name`` for a Haiku parameter path."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def shape_str(x: Any) -> str:
  """``[2, 3]`` for an array-like, ``None``, or the type name of anything else."""
  if x is None:
    return "None"
  shape = getattr(x, "shape", None)
  if shape is None:
    return type(x).__name__
  return f"[{', '.join(str(d) for d in shape)}]"


def _params(fn: Any) -> str:
  """``(a, b, **kw)``: a signature without annotations, to keep reasons on one short line."""
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return "(...)"
  prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
  return "(" + ", ".join(prefix.get(p.kind, "") + p.name for p in params) + ")"


def abstract_key() -> jax.ShapeDtypeStruct:
  """The abstract PRNG key of a traced ``init`` (no device op)."""
  return jax.ShapeDtypeStruct((2,), jnp.uint32)


class LoadedProgram:
  """The candidate loaded in the child, with helpers to build its Haiku transform.

  Attributes:
    path: the program file (frames from it are the candidate's lines).
    hidden: processor width H.
    config: the stages' sizes.
    factory: ``factory(out_size) -> processor``, set by :meth:`load`.
    params: the parameters the ``finite`` stage drew, exported by ``budget``.
    initializers: ``(module, name) -> (initializer, shape, dtype)``, recorded by ``shape``.
  """

  def __init__(self, program_path: str, hidden: int, config: CheckConfig):
    self.path = program_path
    self.hidden = hidden
    self.config = config
    self.factory: Any = None
    self.params: Any = None
    self.initializers: dict[tuple[str, str], tuple[Any, tuple[int, ...], Any]] = {}

  def recording_creator(self) -> Any:
    """A Haiku creator that records every parameter's initializer in ``initializers``."""

    def creator(next_creator, shape, dtype, init, context):
      self.initializers[(context.module_name, context.name)] = (init, tuple(shape), dtype)
      return next_creator(shape, dtype, init)

    return creator

  def load(self) -> None:
    """interface, part 1: import, ``get_processor_factory`` and the factory."""
    try:
      module = processors.load_module(self.path)
    except processors.ProgramLoadError as e:
      cause = e.__cause__ or e
      raise StageFailure(f"importing the program failed: {describe(cause, self.path)}") from e
    get_factory = getattr(module, "get_processor_factory", None)
    if not callable(get_factory):
      raise StageFailure("no get_processor_factory() found; define get_processor_factory("
                         "use_ln=True, nb_triplet_fts=8, **unused) returning "
                         "factory(out_size) -> processor")
    kwargs = {"use_ln": self.config.use_ln, "nb_triplet_fts": self.config.nb_triplet_fts}
    try:
      inspect.signature(get_factory).bind(**kwargs)
    except (TypeError, ValueError) as e:
      raise StageFailure(f"get_processor_factory{_params(get_factory)} cannot be called with "
                         f"{kwargs}: {e}; accept use_ln, nb_triplet_fts and **unused") from e
    try:
      factory = get_factory(**kwargs)
    except Exception as e:
      raise StageFailure(f"get_processor_factory() raised {describe(e, self.path)}") from e
    if not callable(factory):
      raise StageFailure(f"get_processor_factory() returned {type(factory).__name__}; "
                         "return a callable factory(out_size) -> processor")
    self.factory = factory

  def processor(self) -> Any:
    """Builds the processor (inside a Haiku transform) and checks its interface."""
    try:
      proc = self.factory(self.hidden)
    except Exception as e:
      raise StageFailure(f"factory({self.hidden}) raised {describe(e, self.path)}") from e
    if not isinstance(proc, hk.Module):
      raise StageFailure(f"factory(out_size) returned {type(proc).__name__}, not a Haiku "
                         "module; subclass hk.Module (as CLRS processors do)")
    if PROCESSOR_TAG not in proc.module_name:
      raise StageFailure(f"processor module is named {proc.module_name!r}; its name must end "
                         f"in '{PROCESSOR_TAG}' (CLRS trains only parameters under such a "
                         "module), e.g. name='mpnn_aggr_clrs_processor'")
    for attr in ("inf_bias", "inf_bias_edge"):
      if not hasattr(proc, attr):
        raise StageFailure(f"processor has no {attr!r} property; CLRS's BaselineModel reads "
                           "it (return False unless the processor needs it)")
    try:
      inspect.signature(proc.__call__).bind(
          "node_fts", "edge_fts", "graph_fts", "adj_mat", "hidden", batch_size=1, nb_nodes=1)
    except (TypeError, ValueError) as e:
      raise StageFailure(f"__call__{_params(proc.__call__)} does not accept CLRS's call "
                         "(node_fts, edge_fts, graph_fts, adj_mat, hidden, batch_size=..., "
                         f"nb_nodes=...): {e}; keep the seed's signature with **kwargs") from e
    return proc

  def transformed(self, batch: int, nodes: int, creator: Any = None,
                  probe: list | None = None) -> hk.Transformed:
    """``hk.transform`` of one processor step for inputs of batch ``batch``, size ``nodes``.

    Args:
      batch: B.
      nodes: N.
      creator: an optional Haiku parameter creator in force during the step (used to
        record the initializers and to draw them with numpy).
      probe: if given, each call appends the shapes/dtypes of what ``__call__`` returned,
        so that tracing ``init`` alone also yields the output shapes.
    """

    def call(node_fts, edge_fts, graph_fts, adj_mat, hidden):
      proc = self.processor()
      try:
        return proc(node_fts, edge_fts, graph_fts, adj_mat, hidden, batch_size=batch,
                    nb_nodes=nodes)
      except StageFailure:
        raise
      except Exception as e:
        raise CallFailure(describe(e, self.path)) from e

    def abstract(x):
      if hasattr(x, "shape") and hasattr(x, "dtype"):
        return jax.ShapeDtypeStruct(x.shape, x.dtype)
      return x

    def step(*inputs):
      if creator is None:
        out = call(*inputs)
      else:
        with hk.custom_creator(creator, state=False):
          out = call(*inputs)
      if probe is not None:
        probe.append(jax.tree_util.tree_map(abstract, out))
      return out

    return hk.transform(step)

  def abstract_inputs(self, batch: int, nodes: int) -> tuple[jax.ShapeDtypeStruct, ...]:
    """node [B, N, H], edge [B, N, N, H], graph [B, H], adj [B, N, N], hidden [B, N, H]."""
    h = self.hidden
    f32 = jnp.float32
    return (jax.ShapeDtypeStruct((batch, nodes, h), f32),
            jax.ShapeDtypeStruct((batch, nodes, nodes, h), f32),
            jax.ShapeDtypeStruct((batch, h), f32),
            jax.ShapeDtypeStruct((batch, nodes, nodes), f32),
            jax.ShapeDtypeStruct((batch, nodes, h), f32))


__all__ = ["CallFailure", "LoadedProgram", "StageFailure", "abstract_key", "describe",
           "path_str", "shape_str"]
