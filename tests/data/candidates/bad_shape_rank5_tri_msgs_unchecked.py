"""Triplet messages reduced over nothing: tri_msgs is [B, N, N, N, T] (no chex guard)."""
import haiku as hk
import jax
import jax.numpy as jnp


class Triplets(hk.Module):

  def __init__(self, out_size, nb_triplet_fts, name="triplets_clrs_processor"):
    super().__init__(name=name)
    self.out_size = out_size
    self.nb_triplet_fts = nb_triplet_fts

  @property
  def inf_bias(self):
    return False

  @property
  def inf_bias_edge(self):
    return False

  def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **kwargs):
    # ===== BEGIN OPERATOR REGION =====
    tri_i = hk.Linear(self.nb_triplet_fts)
    tri_j = hk.Linear(self.nb_triplet_fts)
    tri_k = hk.Linear(self.nb_triplet_fts)
    update = hk.Linear(self.out_size)
    # ===== END OPERATOR REGION =====
    # ===== BEGIN ACTION REGION =====
    z = jnp.concatenate([node_fts, hidden], axis=-1)
    tri_msgs = (tri_i(z)[:, :, None, None] + tri_j(z)[:, None, :, None]
                + tri_k(z)[:, None, None, :])             # [B, N, N, N, T]
    nxt_hidden = jax.nn.relu(update(z))
    # ===== END ACTION REGION =====
    return nxt_hidden, tri_msgs


def get_processor_factory(use_ln=True, nb_triplet_fts=8, **unused):
  del use_ln, unused
  return lambda out_size: Triplets(out_size, nb_triplet_fts)
