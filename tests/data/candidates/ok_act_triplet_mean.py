    z = jnp.concatenate([node_fts, hidden], axis=-1)             # [B, N, Fn+H]
    m_recv = msg_receiver(z)                                     # [B, N, M]
    m_send = msg_sender(z)                                       # [B, N, M]
    m_edge = msg_edge(edge_fts)                                  # [B, N, N, M]
    m_graph = msg_graph(graph_fts)                               # [B, M]

    # Triplet edge messages: reduce over i, project to H.
    triplets = (
        jnp.expand_dims(tri_node_i(z), axis=(2, 3))              # [B, N, 1, 1, T]
        + jnp.expand_dims(tri_node_j(z), axis=(1, 3))            # [B, 1, N, 1, T]
        + jnp.expand_dims(tri_node_k(z), axis=(1, 2))            # [B, 1, 1, N, T]
        + jnp.expand_dims(tri_edge_ij(edge_fts), axis=3)         # [B, N, N, 1, T]
        + jnp.expand_dims(tri_edge_ik(edge_fts), axis=2)         # [B, N, 1, N, T]
        + jnp.expand_dims(tri_edge_jk(edge_fts), axis=1)         # [B, 1, N, N, T]
        + jnp.expand_dims(tri_graph(graph_fts), axis=(1, 2, 3))  # [B, 1, 1, 1, T]
    )                                                            # [B, N, N, N, T]
    tri_msgs = activation(tri_out(jnp.mean(triplets, axis=1)))   # [B, N, N, H]

    # msgs[b, i, j]: message from sender i to receiver j.
    msgs = (jnp.expand_dims(m_recv, axis=1) + jnp.expand_dims(m_send, axis=2)
            + m_edge + jnp.expand_dims(m_graph, axis=(1, 2)))    # [B, N, N, M]
    msgs = msg_mlp(activation(msgs))                             # [B, N, N, H]

    # Max over the senders of each receiver. Like CLRS's MPNN, every node pair
    # exchanges messages: the input adjacency is replaced by a full one.
    adj_mat = jnp.ones_like(adj_mat)                             # [B, N, N]
    msgs = jnp.where(jnp.expand_dims(adj_mat, -1) != 0, msgs, -BIG_NUMBER)
    msgs = jnp.max(msgs, axis=1)                                 # [B, N, H]

    ret = activation(update_node(z) + update_msgs(msgs))         # [B, N, H]
    if layer_norm is not None:
      ret = layer_norm(ret)

    gate = jax.nn.sigmoid(
        gate_out(activation(gate_node(z) + gate_msgs(msgs))))    # [B, N, H]
    nxt_hidden = ret * gate + hidden * (1 - gate)                # [B, N, H]
