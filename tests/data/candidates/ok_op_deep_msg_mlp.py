    hidden_size = self.out_size       # H: node state width.
    mid_size = self.out_size          # M: pairwise message width.
    tri_size = self.nb_triplet_fts    # T: triplet feature width.
    activation = jax.nn.relu

    # Pairwise message terms: receiver node, sender node, edge, graph.
    msg_receiver = hk.Linear(mid_size)
    msg_sender = hk.Linear(mid_size)
    msg_edge = hk.Linear(mid_size)
    msg_graph = hk.Linear(mid_size)

    # Node update: a skip path from the node input and a path from the messages.
    update_node = hk.Linear(hidden_size)
    update_msgs = hk.Linear(hidden_size)

    # Triplet terms (Dudzik & Velickovic, 2022) over node triples (i, j, k):
    # one per node, one per edge (i, j), (i, k), (j, k), one for the graph.
    tri_node_i = hk.Linear(tri_size)
    tri_node_j = hk.Linear(tri_size)
    tri_node_k = hk.Linear(tri_size)
    tri_edge_ij = hk.Linear(tri_size)
    tri_edge_ik = hk.Linear(tri_size)
    tri_edge_jk = hk.Linear(tri_size)
    tri_graph = hk.Linear(tri_size)
    tri_out = hk.Linear(hidden_size)

    # Message MLP applied to every pairwise message before aggregation.
    msg_mlp = hk.nets.MLP([hidden_size, hidden_size, hidden_size])

    layer_norm = (hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)
                  if self.use_ln else None)

    # Update gate; its bias starts at -3 so the state is mostly kept at first.
    gate_node = hk.Linear(hidden_size)
    gate_msgs = hk.Linear(hidden_size)
    gate_out = hk.Linear(hidden_size, b_init=hk.initializers.Constant(-3))
