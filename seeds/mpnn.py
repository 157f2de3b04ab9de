"""Seed: the CLRS MPNN processor (Gilmer et al., 2017), max aggregation, LayerNorm.

It computes exactly what ``clrs.get_processor_factory('mpnn', use_ln=True,
nb_triplet_fts=8)`` computes -- same parameter tree
(``mpnn_aggr_clrs_processor/linear ... linear_5``, ``mlp``, ``layer_norm``), same
initial values for the same key, same outputs for the same parameters -- written
as one standalone program with two editable factor regions:

* OPERATOR: which parameterised operators exist (widths, activation, the message
  and update projections, the message MLP, the LayerNorm).
* ACTION: how they are invoked, combined, masked and aggregated.

Unlike ``triplet_gmpnn`` it has no triplet edge messages and no update gate, so a
search starting here has room to discover them. The module name ends in
``clrs_processor`` so that CLRS's ``BaselineModel`` trains its parameters. The
program imports only jax, haiku, chex, typing and collections.abc.
"""

from collections.abc import Callable
from typing import Any

import chex
import haiku as hk
import jax
import jax.numpy as jnp

PROCESSOR_TAG = "clrs_processor"
BIG_NUMBER = 1e6  # Masked entries of a max-aggregation get -BIG_NUMBER (as in CLRS).


class MPNN(hk.Module):
  """Message passing over all node pairs with max aggregation and LayerNorm.

  As in CLRS's MPNN, the input adjacency is replaced by a full one inside
  ACTION. One processor step maps the node state ``hidden [B, N, H]`` to
  ``nxt_hidden [B, N, H]``; there are no edge messages (``tri_msgs`` is None).
  """

  def __init__(self,
               out_size: int,
               use_ln: bool = True,
               name: str = "mpnn_aggr_" + PROCESSOR_TAG):
    if not name.endswith(PROCESSOR_TAG):
      name = f"{name}_{PROCESSOR_TAG}"
    super().__init__(name=name)
    self.out_size = out_size
    self.use_ln = use_ln

  @property
  def inf_bias(self) -> bool:
    return False

  @property
  def inf_bias_edge(self) -> bool:
    return False

  def __call__(self,
               node_fts: chex.Array,
               edge_fts: chex.Array,
               graph_fts: chex.Array,
               adj_mat: chex.Array,
               hidden: chex.Array,
               **unused_kwargs: Any) -> tuple[chex.Array, chex.Array | None]:
    """One processor step.

    Args:
      node_fts: node features ``[B, N, Fn]``.
      edge_fts: edge features ``[B, N, N, Fe]``.
      graph_fts: graph features ``[B, Fg]``.
      adj_mat: adjacency ``[B, N, N]`` (``adj_mat[b, i, j] != 0``: i may send to
        j); the seed's ACTION overrides it with a full adjacency, as CLRS does.
      hidden: node state ``[B, N, H]`` with ``H == out_size``.
      **unused_kwargs: CLRS passes ``batch_size`` and ``nb_nodes``.

    Returns:
      ``(nxt_hidden [B, N, H] float32, tri_msgs [B, N, N, H] or None)``.
    """
    b, n, _ = node_fts.shape
    chex.assert_rank([node_fts, edge_fts, graph_fts, adj_mat, hidden], [3, 4, 2, 3, 3])
    chex.assert_shape(edge_fts, (b, n, n, None))
    chex.assert_shape(graph_fts, (b, None))
    chex.assert_shape(adj_mat, (b, n, n))
    chex.assert_shape(hidden, (b, n, self.out_size))

    # OPERATOR creates the parameterised operators (creation order fixes their names
    # linear, linear_1, ...); ACTION applies them and must set nxt_hidden [B, N, H]
    # and tri_msgs (None or [B, N, N, H]).
    # ===== BEGIN OPERATOR REGION =====
    hidden_size = self.out_size       # H: node state width.
    mid_size = self.out_size          # M: pairwise message width.
    activation = jax.nn.relu

    # Pairwise message terms: receiver node, sender node, edge, graph.
    msg_receiver = hk.Linear(mid_size)
    msg_sender = hk.Linear(mid_size)
    msg_edge = hk.Linear(mid_size)
    msg_graph = hk.Linear(mid_size)

    # Node update: a skip path from the node input and a path from the messages.
    update_node = hk.Linear(hidden_size)
    update_msgs = hk.Linear(hidden_size)

    # Message MLP applied to every pairwise message before aggregation.
    msg_mlp = hk.nets.MLP([hidden_size, hidden_size])

    layer_norm = (hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)
                  if self.use_ln else None)
    # ===== END OPERATOR REGION =====

    # ===== BEGIN ACTION REGION =====
    z = jnp.concatenate([node_fts, hidden], axis=-1)             # [B, N, Fn+H]
    m_recv = msg_receiver(z)                                     # [B, N, M]
    m_send = msg_sender(z)                                       # [B, N, M]
    m_edge = msg_edge(edge_fts)                                  # [B, N, N, M]
    m_graph = msg_graph(graph_fts)                               # [B, M]
    tri_msgs = None                                              # No edge messages.

    # msgs[b, i, j]: message from sender i to receiver j.
    msgs = (jnp.expand_dims(m_recv, axis=1) + jnp.expand_dims(m_send, axis=2)
            + m_edge + jnp.expand_dims(m_graph, axis=(1, 2)))    # [B, N, N, M]
    msgs = msg_mlp(activation(msgs))                             # [B, N, N, H]

    # Max over the senders of each receiver. Every node pair exchanges
    # messages: the input adjacency is replaced by a full one.
    adj_mat = jnp.ones_like(adj_mat)                             # [B, N, N]
    msgs = jnp.where(jnp.expand_dims(adj_mat, -1) != 0, msgs, -BIG_NUMBER)
    msgs = jnp.max(msgs, axis=1)                                 # [B, N, H]

    nxt_hidden = activation(update_node(z) + update_msgs(msgs))  # [B, N, H]
    if layer_norm is not None:
      nxt_hidden = layer_norm(nxt_hidden)
    # ===== END ACTION REGION =====

    chex.assert_shape(nxt_hidden, (b, n, self.out_size))
    chex.assert_type(nxt_hidden, jnp.float32)
    if tri_msgs is not None:
      chex.assert_shape(tri_msgs, (b, n, n, self.out_size))
    return nxt_hidden, tri_msgs


def get_processor_factory(use_ln: bool = True,
                          nb_triplet_fts: int = 8,
                          **unused: Any) -> Callable[[int], MPNN]:
  """CLRS processor factory: ``factory(out_size) -> MPNN``.

  Args:
    use_ln: apply LayerNorm to the updated node state (CLRS default: True).
    nb_triplet_fts: accepted for a uniform factory signature; this seed has no
      triplet messages (CLRS's ``mpnn`` ignores it too).
    **unused: other CLRS factory options (e.g. ``nb_heads``), ignored.
  """
  del nb_triplet_fts, unused

  def factory(out_size: int) -> MPNN:
    return MPNN(out_size=out_size, use_ln=use_ln)

  return factory
