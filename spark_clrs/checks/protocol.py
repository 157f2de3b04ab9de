"""What the parent and the jailed check child agree on: the sizes and the files.

The parent writes :data:`PROGRAM_FILE` into the child's workdir and sends a
:class:`CheckConfig`; the child leaves :data:`PARAMS_FILE` and one export per shape of
:meth:`CheckConfig.cost_shapes` (:func:`export_file`) next to the program, and the parent
costs them without ever loading the candidate. Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from spark_clrs.evaluation import cost_grid

if TYPE_CHECKING:
  from spark_clrs.evaluation.profiles import EvalProfile

PROGRAM_FILE = "candidate.py"
PARAMS_FILE = "processor_params.npz"
MAX_PARAMS_FILE_BYTES = 256 << 20


def export_file(shape: cost_grid.Shape) -> str:
  """Name of the child's export of one processor step at ``shape``."""
  return f"processor_{shape.key}.export"


@dataclasses.dataclass(frozen=True)
class CheckConfig:
  """Sizes used by the executing stages.

  Attributes:
    shape_sizes: graph sizes N traced by ``shape`` (the training size and the OOD size;
      the budget stage measures the cost at each of them too).
    shape_batch: batch size B traced by ``shape`` (the larger of the training and the
      evaluation batch).
    finite_nodes: the training-size N of the real forward pass of ``finite``.
    finite_sizes: every N at which ``finite`` runs a real forward pass; empty (default):
      ``finite_nodes`` and the largest of ``shape_sizes`` (the OOD size, n=64 by default),
      see :meth:`finite_node_sizes`.
    finite_batch: B of the real forward passes of ``finite``.
    max_array_mb: largest intermediate array allowed at the traced sizes, in MiB.
    macs_nb_nodes: graph size at which MACs are reported (SPEC §4 default 16).
    use_ln: passed to ``get_processor_factory``.
    nb_triplet_fts: passed to ``get_processor_factory``.
    cost_batches: batch sizes at which the budget stage measures the cost, besides batch 1
      (the training and evaluation batches); empty (default): ``shape_batch``.
  """

  shape_sizes: tuple[int, ...] = (11, 64)
  shape_batch: int = 32
  finite_nodes: int = 8
  finite_batch: int = 2
  max_array_mb: int = 2048
  macs_nb_nodes: int = 16
  use_ln: bool = True
  nb_triplet_fts: int = 8
  finite_sizes: tuple[int, ...] = ()
  cost_batches: tuple[int, ...] = ()

  @classmethod
  def for_profile(cls, profile: EvalProfile) -> CheckConfig:
    """The sizes an evaluation profile runs at: every training size and every evaluation
    set's size (shape traces and cost measurements), its batches and its processor options."""
    sizes = {*profile.train_lengths, profile.val_length, profile.ood_val_length,
             profile.test_length}
    return cls(shape_sizes=tuple(sorted(sizes)),
               shape_batch=max(profile.batch_size, profile.eval_batch_size),
               cost_batches=tuple(sorted({profile.batch_size, profile.eval_batch_size})),
               macs_nb_nodes=profile.macs_nb_nodes, use_ln=profile.use_ln,
               nb_triplet_fts=profile.nb_triplet_fts)

  @classmethod
  def from_dict(cls, fields: dict[str, Any]) -> CheckConfig:
    """The inverse of ``dataclasses.asdict`` after a JSON round trip (lists -> tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

  def finite_node_sizes(self) -> tuple[int, ...]:
    """The N values of the finite stage, ascending (the OOD size included by default)."""
    sizes = self.finite_sizes or (self.finite_nodes, max(self.shape_sizes, default=0))
    return tuple(sorted({int(n) for n in sizes if int(n) > 0}))

  def cost_shapes(self) -> tuple[cost_grid.Shape, ...]:
    """The shapes the budget stage measures (``cost_grid.grid``): batch 1 at
    ``macs_nb_nodes`` first, then each cost batch at every traced size and ``macs_nb_nodes``."""
    return cost_grid.grid(macs_nb_nodes=self.macs_nb_nodes, sizes=self.shape_sizes,
                          batch_sizes=self.cost_batches or (self.shape_batch,))


__all__ = ["CheckConfig", "MAX_PARAMS_FILE_BYTES", "PARAMS_FILE", "PROGRAM_FILE",
           "export_file"]
