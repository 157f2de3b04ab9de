"""A cost the candidate cannot steer: one processor step measured at several shapes.

The budget's MACs are stated at one shape (batch 1, ``macs_nb_nodes`` nodes; SPEC §4), but
the processor runs at others: the training and evaluation batches, at the training and the
OOD graph sizes. A program whose Python looks at a shape (``if node_fts.shape[0] > 1:
...``, ``if nb_nodes > 16: ...``) could be cheap where it is costed and dear where it runs.
So the budget stage exports the step at every shape of :func:`grid` (the reference shape,
and each batch size the evaluation uses at every graph size it uses) and the trusted side
accepts the reference MACs only when the exports show one program whose cost follows from
its shapes (:func:`consistent_cost`):

1. **One program.** The batched exports (B > 1, every graph size) have one op sequence
   (``hlo_cost.ExportSummary.signature``: ops and nesting, constants left out), and the
   reference runs as many matrix products as each export of its graph size. (Its other ops
   may differ: at batch 1 JAX elides broadcasts and ``jnp.matmul`` drops batch dimensions
   of size 1, so the same program lowers to other reshapes there.) A Python branch on a
   shape that changes what runs (extra products, a loop whose length depends on N) is
   refused, naming the shape where it showed.
2. **Linear in the batch.** At the reference graph size each batched export's MACs are
   exactly B x the reference's: a graph's cost does not depend on the graphs beside it (no
   width chosen from the batch size, no product across the graphs of a batch).
3. **Dimensions polynomial in N.** Each matrix product (aligned by rule 1) has, across the
   exports of one batch size, dimensions that one polynomial in N explains per dimension:
   ``p(N) = (a3 N^3 + a2 N^2 + a1 N + a0) / 2`` with integers ``a1..a3 >= 0`` and
   ``a0 > -2 N_min`` (so N, N+1, N-1, 2N, N^2, N(N+1)/2, 3 N^2 H and constants pass). A
   width picked by comparing N with a threshold (``16 if N <= 16 else 4096``) is refused.

Together: the exports are those of one program that never looked at B or N beyond shape
arithmetic, so the reference MACs are that program's cost per graph, and the MACs measured at
each shape are returned beside them. Not claimed: shapes that are not measured (the
evaluation does not run there), and what a polynomial cannot tell apart at the measured
sizes -- with two graph sizes (the quick profile) rule 3 binds less than with three (spark:
11, 16, 64).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from spark_clrs.messages import one_line

if TYPE_CHECKING:
  from spark_clrs.evaluation.hlo_cost import ExportSummary

MAX_DEGREE = 3  # Of one dimension in N: [B, N*N*N*H] is the largest shape a step can hold.
# The top coefficient tried per dimension, and the search steps allowed per candidate: the
# check of rule 3 stays well under a second even for an export built to be slow to check.
_MAX_TOP_COEFFICIENT = 4096
_MAX_STEPS = 200_000
_WHERE_CHARS = 80


class Shape(NamedTuple):
  """Inputs of one measured processor call: B graphs of N nodes."""

  batch_size: int
  nb_nodes: int

  @property
  def key(self) -> str:
    """``b32_n64``: a name for files and metrics."""
    return f"b{self.batch_size}_n{self.nb_nodes}"

  def __str__(self) -> str:
    return f"batch {self.batch_size}, n={self.nb_nodes}"


def grid(*, macs_nb_nodes: int, sizes: Iterable[int], batch_sizes: Iterable[int]
         ) -> tuple[Shape, ...]:
  """The reference shape ``(1, macs_nb_nodes)`` first, then every batch size (ascending)
  at every graph size of ``sizes`` and ``macs_nb_nodes`` (ascending)."""
  reference = Shape(1, int(macs_nb_nodes))
  nodes = sorted({int(macs_nb_nodes), *(int(n) for n in sizes)})
  others = (Shape(b, n) for b in sorted({int(b) for b in batch_sizes}) for n in nodes)
  return (reference, *(s for s in others if s != reference))


class InconsistentCost(ValueError):
  """The exports are not one program with a shape-independent cost (one-line reason)."""


@dataclasses.dataclass(frozen=True)
class GridCost:
  """The trusted cost of a processor step.

  Attributes:
    param_count: scalars in the processor's parameters.
    macs: multiply-accumulates of one step on one graph of ``nb_nodes`` nodes (the budget's
      number, SPEC §4).
    nb_nodes: the reference graph size.
    macs_by_shape: ``Shape.key`` -> MACs of the whole batch at that shape, as measured.
  """

  param_count: int
  macs: int
  nb_nodes: int
  macs_by_shape: dict[str, int]


def _fits(points: Sequence[tuple[int, int]], budget: list[int]) -> bool:
  """Whether ``2 d = a3 n^3 + a2 n^2 + a1 n + a0`` at every ``(n, d)`` (rule 3's family).

  ``points`` are sorted by n, with distinct n. With three or more sizes the quadratic left
  after fixing a3 is determined, so only a3 is searched; with two, a2 ranges over an
  interval checked in closed form. ``budget[0]`` counts the steps left.
  """
  points = [(n, 2 * d) for n, d in points]
  (n0, d0), (n1, d1) = points[0], points[1]
  if all(d == d0 for _, d in points):
    return True
  for p in range(1, MAX_DEGREE + 1):  # c * n^p, the common case.
    if d0 % n0**p == 0 and all(d * n0**p == d0 * n**p for n, d in points):
      return True
  for a3 in range(min((d0 + 2 * n0) // n0**3, _MAX_TOP_COEFFICIENT) + 1):
    budget[0] -= 1
    if budget[0] < 0:
      raise InconsistentCost("the matrix products have too many distinct dimensions to check "
                             "against the graph size; use fewer distinct shapes")
    r0, r1 = d0 - a3 * n0**3, d1 - a3 * n1**3
    if (r1 - r0) % (n1 - n0):
      continue
    q = (r1 - r0) // (n1 - n0)  # = a2 (n0 + n1) + a1
    if len(points) == 2:
      # a1 = q - a2 (n0 + n1) >= 0 and a0 = r0 - q n0 + a2 n0 n1 > -2 n0.
      lo = max(0, (q * n0 - r0 - 2 * n0) // (n0 * n1) + 1)
      if q >= 0 and lo <= q // (n0 + n1):
        return True
      continue
    n2, d2 = points[2]
    r2 = d2 - a3 * n2**3
    if (r2 - r1) % (n2 - n1) or ((r2 - r1) // (n2 - n1) - q) % (n2 - n0):
      continue
    a2 = ((r2 - r1) // (n2 - n1) - q) // (n2 - n0)
    a1 = q - a2 * (n0 + n1)
    a0 = r0 - a2 * n0**2 - a1 * n0
    if a2 >= 0 and a1 >= 0 and a0 > -2 * n0 and all(
        a3 * n**3 + a2 * n**2 + a1 * n + a0 == d for n, d in points[3:]):
      return True
  return False


def _one_program(reference: Shape, ref: ExportSummary,
                 measured: Sequence[tuple[Shape, ExportSummary]]) -> None:
  """Rule 1: one op sequence per batch size and wherever B > 1; batch 1 runs the same
  products."""
  batched = [item for item in measured if item[0].batch_size > 1]
  groups = [batched, *([(s, x) for s, x in [(reference, ref), *measured] if s.batch_size == b]
                       for b in sorted({s.batch_size for s, _ in measured}))]
  for group in groups:
    for shape, other in group[1:]:
      first, base = group[0]
      if other.signature != base.signature:
        raise InconsistentCost(
            f"the processor runs a different computation at {shape} than at {first} "
            f"({other.op_count:,} vs {base.op_count:,} operations, {len(other.products)} vs "
            f"{len(base.products)} matrix products); what it computes must not depend on "
            "the batch or graph size (no Python branch on shapes)")
  for shape, other in measured:
    if shape.nb_nodes == reference.nb_nodes and len(other.products) != len(ref.products):
      raise InconsistentCost(
          f"the processor runs a different computation at {shape} than at {reference} "
          f"({len(other.products)} vs {len(ref.products)} matrix products); what it computes "
          "must not depend on the batch size (no Python branch on shapes)")


def _polynomial_dims(batched: Sequence[tuple[Shape, ExportSummary]]) -> None:
  sizes = [s.nb_nodes for s, _ in batched]
  budget = [_MAX_STEPS]
  seen: set[tuple[int, ...]] = set()
  for i, product in enumerate(batched[0][1].products):
    where = one_line(product.where, _WHERE_CHARS)
    if len({len(summary.products[i].dims) for _, summary in batched}) > 1:
      raise InconsistentCost(f"the matrix product {where} has operands of another rank at "
                             "another graph size (no Python branch on the graph size)")
    for j in range(len(product.dims)):
      values = tuple(summary.products[i].dims[j] for _, summary in batched)
      if values in seen:
        continue
      seen.add(values)
      if not _fits(list(zip(sizes, values, strict=True)), budget):
        at = ", ".join(f"{v:,} at n={n}" for n, v in zip(sizes, values, strict=True))
        raise InconsistentCost(
            f"the matrix product {where} has a dimension of {at}: not a polynomial in the "
            "number of nodes; sizes may depend on N only through arithmetic on it (no Python "
            "branch on the graph size)")


def consistent_cost(summaries: Mapping[Shape, ExportSummary]) -> GridCost:
  """The reference cost, once the exports pass the module docstring's three rules.

  Args:
    summaries: one ``hlo_cost.read_export`` summary per shape of :func:`grid`, the
      reference shape first (insertion order).

  Raises:
    InconsistentCost: naming the rule and the shape that disagreed.
  """
  (reference, ref), *measured = summaries.items()
  _one_program(reference, ref, measured)
  for shape, summary in measured:
    if shape.nb_nodes == reference.nb_nodes and summary.macs != shape.batch_size * ref.macs:
      raise InconsistentCost(
          f"MACs are not linear in the batch: {summary.macs:,} at {shape} is not "
          f"{shape.batch_size} x {ref.macs:,} (at {reference}); a graph's cost must not "
          "depend on the batch (no Python branch on the batch size, no product across the "
          "graphs of a batch)")
  for batch in sorted({s.batch_size for s in summaries}):
    same = sorted(((s, x) for s, x in summaries.items() if s.batch_size == batch),
                  key=lambda item: item[0].nb_nodes)
    if len(same) > 1:
      _polynomial_dims(same)
  return GridCost(param_count=ref.param_count, macs=ref.macs, nb_nodes=reference.nb_nodes,
                  macs_by_shape={s.key: x.macs for s, x in summaries.items()})


__all__ = ["GridCost", "InconsistentCost", "MAX_DEGREE", "Shape", "consistent_cost", "grid"]
