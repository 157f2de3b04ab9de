"""Training in the jail, trusted scoring outside it, MACs, noise and where evaluations run."""
