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

    # Max over the senders of each receiver that the adjacency allows.
    msgs = jnp.where(jnp.expand_dims(adj_mat, -1) != 0, msgs, -BIG_NUMBER)
    mask = jnp.expand_dims(adj_mat, -1)
    mean = jnp.sum(jnp.where(mask != 0, msgs, 0.0), 1) / jnp.maximum(jnp.sum(mask, 1), 1.0)
    msgs = jnp.max(msgs, axis=1) + mean                           # [B, N, H]

    nxt_hidden = activation(update_node(z) + update_msgs(msgs))  # [B, N, H]
    if layer_norm is not None:
      nxt_hidden = layer_norm(nxt_hidden)
