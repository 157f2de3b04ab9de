    hidden_size = self.out_size       # H: node state width.
    mid_size = 2 * self.out_size         # M: pairwise message width.
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
