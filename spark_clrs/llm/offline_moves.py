"""The catalogue of factor-local architectural moves used by the offline proposer.

Each :class:`Move` is a small, named edit of ONE factor region (OPERATOR or ACTION)
of a processor program, written against the shipped seeds' code: change a width, an
activation, a normalisation or an initialiser; deepen an encoder; switch the
aggregation to mean, sum, soft-max, log-sum-exp or attention; gate messages by the
edge term; drop or move the LayerNorm; mix the state residually; reduce triplets
differently; and so on. A move is a rule-based mutation operator in the sense of
regularized evolution: it knows nothing about fitness, it only rewrites code.

A move sees only the region body, so it cannot touch anything outside its factor. It
applies when its anchors are present (and its ``absent`` patterns are not) and it
changes the text; moves written for triplets or the update gate simply do not apply
to seeds without them. OPERATOR moves keep every operator name that ACTION reads, and
ACTION moves only call operators that OPERATOR defines (plus parameter-free jax ops).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

_COMMENT = re.compile(r"\s+#.*$|^\s*#.*$")


def _code(line: str) -> str:
  """A line without its comment and surrounding whitespace."""
  return _COMMENT.sub("", line).strip()


def _indent(line: str) -> str:
  return line[:len(line) - len(line.lstrip())]


def _base_indent(body: str) -> str:
  for line in body.split("\n"):
    if line.strip():
      return _indent(line)
  return ""


def _join(lines: list[str], trailing_newline: bool) -> str:
  text = "\n".join(lines)
  return text + "\n" if trailing_newline and not text.endswith("\n") else text


@dataclasses.dataclass(frozen=True)
class Sub:
  """Regex substitution over the whole region body (``re.MULTILINE``), every match."""

  pattern: str
  repl: str

  def __call__(self, body: str) -> str | None:
    new, count = re.subn(self.pattern, self.repl, body, flags=re.MULTILINE)
    return new if count else None


@dataclasses.dataclass(frozen=True)
class Lines:
  """Replaces the first run of consecutive lines whose code fully matches ``anchors``.

  ``new`` lines are indented like the first matched line (an empty tuple deletes).
  """

  anchors: tuple[str, ...]
  new: tuple[str, ...]

  def __call__(self, body: str) -> str | None:
    lines = body.rstrip("\n").split("\n")
    width = len(self.anchors)
    for i in range(len(lines) - width + 1):
      if all(re.fullmatch(a, _code(lines[i + k])) for k, a in enumerate(self.anchors)):
        indent = _indent(lines[i])
        repl = [indent + line if line else "" for line in self.new]
        return _join(lines[:i] + repl + lines[i + width:], body.endswith("\n"))
    return None


@dataclasses.dataclass(frozen=True)
class Insert:
  """Inserts ``new`` before (or after) the first line whose code fully matches ``anchor``."""

  anchor: str
  new: tuple[str, ...]
  after: bool = False

  def __call__(self, body: str) -> str | None:
    lines = body.rstrip("\n").split("\n")
    for i, line in enumerate(lines):
      if re.fullmatch(self.anchor, _code(line)):
        indent = _indent(line)
        at = i + 1 if self.after else i
        repl = [indent + new if new else "" for new in self.new]
        return _join(lines[:at] + repl + lines[at:], body.endswith("\n"))
    return None


@dataclasses.dataclass(frozen=True)
class Append:
  """Appends ``new`` at the end of the region, at the region's base indentation."""

  new: tuple[str, ...]

  def __call__(self, body: str) -> str | None:
    indent = _base_indent(body)
    lines = body.rstrip("\n").split("\n")
    return _join(lines + [indent + line if line else "" for line in self.new], True)


Edit = Sub | Lines | Insert | Append


@dataclasses.dataclass(frozen=True)
class Move:
  """One named factor-local edit.

  Attributes:
    name: identifier, unique in the catalogue (appears in directives as ``[move: name]``).
    factor: the region it edits (``OPERATOR`` or ``ACTION``).
    change: what the edit does, in words.
    why: the architectural motivation.
    effect: the expected effect and its cost.
    edits: applied in order; every edit must apply.
    absent: regexes that must not occur in the body (the move would be a no-op or clash).
  """

  name: str
  factor: str
  change: str
  why: str
  effect: str
  edits: tuple[Edit, ...]
  absent: tuple[str, ...] = ()

  def apply(self, body: str) -> str | None:
    """The edited body, or ``None`` when the move does not apply to ``body``."""
    if any(re.search(p, body, flags=re.MULTILINE) for p in self.absent):
      return None
    new = body
    for edit in self.edits:
      out = edit(new)
      if out is None:
        return None
      new = out
    return new if new != body else None

  def directive(self) -> str:
    """The move as a refiner directive (Change / Why / Expected effect)."""
    return (f"Change: {self.change} [move: {self.name}]\nWhy: {self.why}\n"
            f"Expected effect: {self.effect}")


def _assign(name: str, rhs: str) -> Sub:
  """Replaces the right-hand side of the one-line assignment ``name = ...`` (keeps comments)."""
  return Sub(rf"^([ \t]*{name} = )[^\n#]*?([ \t]+#[^\n]*)?$", rf"\g<1>{rhs}\g<2>")


# Aggregation: the seeds' masked max over senders (axis 1 of msgs[b, sender, receiver, :]).
_MAX_AGG = (r"msgs = jnp\.where\(jnp\.expand_dims\(adj_mat, -1\) != 0, msgs, -BIG_NUMBER\)",
            r"msgs = jnp\.max\(msgs, axis=1\)")
_MASK = "mask = jnp.expand_dims((adj_mat != 0).astype(msgs.dtype), -1)  # [B, N, N, 1]"
_DEGREE = "degree = jnp.maximum(jnp.sum(mask, axis=1), 1.0)  # [B, N, 1]"
_MASKED = "masked = jnp.where(mask > 0, msgs, -BIG_NUMBER)"
_MSG_MLP_CALL = r"msgs = msg_mlp\(activation\(msgs\)\)"
_UPDATE = r"^([ \t]*\w+ = )activation\(update_node\(z\) \+ update_msgs\(msgs\)\)"
_LN = "hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)"
_HE = "hk.initializers.VarianceScaling(2.0, 'fan_in', 'truncated_normal')"


def _operator_moves() -> list[Move]:
  op = "OPERATOR"
  moves = [
      Move("activation_gelu", op, "Use GELU instead of the current activation function.",
           "GELU is smooth and keeps a small gradient for negative inputs, which can ease "
           "optimisation of deep message functions.",
           "Smoother training; no change in parameters or MACs.",
           (_assign("activation", "jax.nn.gelu"),)),
      Move("activation_silu", op, "Use SiLU (swish) instead of the current activation function.",
           "SiLU is smooth and non-monotone near zero, often better than ReLU in deep MLPs.",
           "Possibly better fit; no change in parameters or MACs.",
           (_assign("activation", "jax.nn.silu"),)),
      Move("activation_elu", op, "Use ELU instead of the current activation function.",
           "ELU passes negative values, so fewer units die and messages keep their sign.",
           "Fewer dead units; no change in parameters or MACs.",
           (_assign("activation", "jax.nn.elu"),)),
      Move("activation_leaky_relu", op,
           "Use a leaky ReLU with negative slope 0.1 as the activation function.",
           "A leaky ReLU keeps the piecewise-linear selection behaviour of ReLU that suits "
           "max aggregation while avoiding dead units.",
           "Similar behaviour to ReLU with better gradient flow; same cost.",
           (_assign("activation", "lambda x: jax.nn.leaky_relu(x, negative_slope=0.1)"),)),
      Move("activation_softplus", op, "Use softplus instead of the current activation function.",
           "Softplus is a smooth, strictly positive ReLU; gradients never vanish exactly.",
           "Smoother optimisation landscape; same cost.",
           (_assign("activation", "jax.nn.softplus"),)),
      Move("message_width_double", op, "Double the pairwise message width M to 2 * out_size.",
           "Wider messages carry more information per edge before the message MLP compresses "
           "them.",
           "More capacity in the message path; roughly doubles the message projection cost.",
           (_assign("mid_size", "2 * self.out_size"),)),
      Move("message_width_half", op, "Halve the pairwise message width M (at least 8).",
           "A narrower message bottleneck regularises and cuts the dominant N^2 message cost.",
           "Fewer parameters and MACs; may lose some capacity.",
           (_assign("mid_size", "max(8, self.out_size // 2)"),)),
      Move("message_width_one_and_half", op, "Set the pairwise message width M to 1.5 * out_size.",
           "A moderate widening of the message path, between the seed and a doubled width.",
           "Slightly more capacity at moderate cost.",
           (_assign("mid_size", "3 * self.out_size // 2"),)),
      Move("message_mlp_deeper", op, "Give the message MLP three layers of width H instead of two.",
           "A deeper message function can compute more complex pairwise relations before "
           "aggregation.",
           "More expressive messages; one more HxH layer per node pair.",
           (_assign("msg_mlp", "hk.nets.MLP([hidden_size, hidden_size, hidden_size])"),)),
      Move("message_mlp_shallow", op, "Make the message MLP a single layer of width H.",
           "A shallower message function is cheaper and less prone to overfit small graphs.",
           "Fewer parameters and MACs; less expressive messages.",
           (_assign("msg_mlp", "hk.nets.MLP([hidden_size])"),)),
      Move("message_mlp_wide_hidden", op,
           "Widen the message MLP's hidden layer to 2 * H (output stays H).",
           "A wider hidden layer increases the capacity of the message function without "
           "changing the message width seen by the aggregation.",
           "More expressive messages; about 1.5x the message MLP cost.",
           (_assign("msg_mlp", "hk.nets.MLP([2 * hidden_size, hidden_size])"),)),
      Move("message_mlp_gelu", op, "Use GELU inside the message MLP.",
           "The message MLP's internal nonlinearity can differ from the node update's.",
           "Smoother message function; same cost.",
           (_assign("msg_mlp", "hk.nets.MLP([hidden_size, hidden_size], activation=jax.nn.gelu)"),)),
      Move("message_mlp_layernorm", op,
           "Follow the message MLP with a LayerNorm so messages are normalised before aggregation.",
           "Normalised messages keep their scale independent of the graph, which can help "
           "size generalisation.",
           "More stable aggregation statistics; adds 2H parameters.",
           (_assign("msg_mlp", f"hk.Sequential([hk.nets.MLP([hidden_size, hidden_size]), {_LN}])"),)),
      Move("message_mlp_activate_final", op,
           "Apply the activation after the last message MLP layer as well.",
           "Non-negative messages make max aggregation behave like a soft selection of "
           "active features.",
           "Sparser messages; same cost.",
           (_assign("msg_mlp", "hk.nets.MLP([hidden_size, hidden_size], activate_final=True)"),)),
      Move("edge_encoder_mlp", op, "Encode edge features with a two-layer MLP instead of a Linear.",
           "Edge features (weights, pointers) may need a nonlinear encoding to be useful.",
           "Richer edge conditioning; one more MxM layer per node pair.",
           (_assign("msg_edge", "hk.nets.MLP([mid_size, mid_size])"),)),
      Move("sender_encoder_mlp", op, "Encode the sender term with a two-layer MLP.",
           "A nonlinear sender encoding lets messages depend on sender state non-additively.",
           "More expressive sender features at O(N) cost.",
           (_assign("msg_sender", "hk.nets.MLP([mid_size, mid_size])"),)),
      Move("receiver_encoder_mlp", op, "Encode the receiver term with a two-layer MLP.",
           "A nonlinear receiver encoding lets each node shape what it listens for.",
           "More expressive receiver features at O(N) cost.",
           (_assign("msg_receiver", "hk.nets.MLP([mid_size, mid_size])"),)),
      Move("graph_encoder_mlp", op, "Encode graph features with a two-layer MLP.",
           "Graph-level context (e.g. the current step) may need a nonlinear encoding.",
           "Better global conditioning at negligible cost.",
           (_assign("msg_graph", "hk.nets.MLP([mid_size, mid_size])"),)),
      Move("update_messages_mlp", op,
           "Make the message-to-state update a two-layer MLP instead of a Linear.",
           "A nonlinear read-out of aggregated messages can select what enters the state.",
           "More expressive update at O(N) cost.",
           (_assign("update_msgs", "hk.nets.MLP([hidden_size, hidden_size])"),)),
      Move("update_node_mlp", op, "Make the node skip path a two-layer MLP instead of a Linear.",
           "A nonlinear skip path can preserve and transform the node's own state better.",
           "More expressive skip path at O(N) cost.",
           (_assign("update_node", "hk.nets.MLP([hidden_size, hidden_size])"),)),
      Move("message_he_init", op,
           "Initialise the four message projections with He (fan-in, scale 2) initialisation.",
           "ReLU-family activations keep activation variance under He initialisation.",
           "Better-scaled messages at the start of training; same cost.",
           (Sub(r"hk\.Linear\(mid_size\)", f"hk.Linear(mid_size, w_init={_HE})"),)),
      Move("update_orthogonal_init", op,
           "Initialise the two node-update projections orthogonally.",
           "Orthogonal weights preserve the norm of the recurrent state across many steps.",
           "More stable long rollouts; same cost.",
           (Sub(r"^([ \t]*update_(?:node|msgs) = )hk\.Linear\(hidden_size\)",
                r"\g<1>hk.Linear(hidden_size, w_init=hk.initializers.Orthogonal())"),)),
      Move("update_messages_zero_init", op,
           "Initialise the message-to-state projection at zero.",
           "Starting with the message path switched off lets training open it gradually, "
           "like a residual branch.",
           "Stabler early training; same cost.",
           (_assign("update_msgs", "hk.Linear(hidden_size, w_init=hk.initializers.Constant(0.0))"),)),
      Move("layernorm_no_offset", op, "Drop the LayerNorm's learned offset (keep its scale).",
           "The following layers already have biases, so the offset is redundant.",
           "Slightly fewer parameters; same behaviour otherwise.",
           (Sub(re.escape(_LN), "hk.LayerNorm(axis=-1, create_scale=True, create_offset=False)"),)),
      Move("rmsnorm", op, "Replace the LayerNorm with an RMSNorm.",
           "RMSNorm rescales without re-centring, keeping the sign pattern of the state that "
           "max-based selection relies on.",
           "Cheaper normalisation that preserves the state's mean.",
           (Sub(re.escape(_LN), "hk.RMSNorm(axis=-1)"),)),
      Move("message_projections_no_bias", op,
           "Remove the biases of the receiver and sender projections.",
           "The edge and graph terms already add a bias to every message, so these are "
           "redundant.",
           "Fewer parameters; same function class.",
           (Sub(r"^([ \t]*msg_(?:receiver|sender) = )hk\.Linear\(mid_size\)",
                r"\g<1>hk.Linear(mid_size, with_bias=False)"),)),
      Move("triplet_width_double", op, "Double the triplet feature width T.",
           "More triplet features can represent more kinds of path relations between node "
           "triples.",
           "More expressive triplet messages; doubles the N^3 triplet cost.",
           (_assign("tri_size", "2 * self.nb_triplet_fts"),)),
      Move("triplet_width_half", op, "Halve the triplet feature width T (at least 1).",
           "The N^3 triplet tensor dominates memory and compute; fewer features may suffice.",
           "Roughly halves the triplet cost; may lose some edge reasoning.",
           (_assign("tri_size", "max(1, self.nb_triplet_fts // 2)"),)),
      Move("triplet_output_mlp", op,
           "Make the triplet output projection a two-layer MLP instead of a Linear.",
           "A nonlinear read-out of reduced triplets can build richer edge messages.",
           "More expressive edge messages at O(N^2) cost.",
           (_assign("tri_out", "hk.nets.MLP([hidden_size, hidden_size])"),)),
      Move("gate_bias_open", op, "Start the update gate's bias at -1 instead of -3.",
           "A more open initial gate lets new information into the state earlier in training.",
           "Faster early learning; possibly less stable long rollouts.",
           (Sub(r"(gate_out = hk\.Linear\(hidden_size, b_init=hk\.initializers\.Constant\()-3\)",
                r"\g<1>-1)"),)),
      Move("gate_bias_closed", op, "Start the update gate's bias at -5 instead of -3.",
           "A more closed initial gate keeps the state almost unchanged per step, which helps "
           "long sequential executions.",
           "More stable long rollouts; slower early learning.",
           (Sub(r"(gate_out = hk\.Linear\(hidden_size, b_init=hk\.initializers\.Constant\()-3\)",
                r"\g<1>-5)"),)),
      Move("gate_node_mlp", op, "Make the gate's node projection a two-layer MLP.",
           "A nonlinear gate input lets the gate decide from richer node features.",
           "More selective gating at O(N) cost.",
           (_assign("gate_node", "hk.nets.MLP([hidden_size, hidden_size])"),)),
  ]
  return moves


def _aggregation(name: str, change: str, why: str, effect: str,
                 new: tuple[str, ...]) -> Move:
  return Move(name, "ACTION", change, why, effect, (Lines(_MAX_AGG, new),))


def _action_moves() -> list[Move]:
  act = "ACTION"
  moves = [
      _aggregation(
          "aggregate_mean", "Aggregate messages over senders with a masked mean instead of max.",
          "A mean pools evidence from all neighbours instead of one, and stays scale-free in "
          "the number of neighbours.", "Smoother aggregation; same cost.",
          (_MASK, _DEGREE, "msgs = jnp.sum(msgs * mask, axis=1) / degree  # [B, N, H]")),
      _aggregation(
          "aggregate_sum", "Aggregate messages over senders with a masked sum instead of max.",
          "A sum counts neighbours, which max cannot; useful where degrees matter.",
          "Counting ability; may generalise worse to larger graphs.",
          (_MASK, "msgs = jnp.sum(msgs * mask, axis=1)  # [B, N, H]")),
      _aggregation(
          "aggregate_softmax", "Aggregate with a per-channel softmax over senders (soft max).",
          "A softmax-weighted sum interpolates between max and mean and stays differentiable "
          "with respect to every neighbour.", "Softer selection; same cost.",
          (_MASK, _MASKED, "weights = jax.nn.softmax(masked, axis=1) * mask",
           "msgs = jnp.sum(weights * msgs, axis=1)  # [B, N, H]")),
      _aggregation(
          "aggregate_logsumexp", "Aggregate with a masked log-sum-exp over senders (smooth max).",
          "Log-sum-exp is a smooth upper bound of max, so gradients reach every neighbour.",
          "Max-like behaviour with denser gradients; same cost.",
          (_MASK, _MASKED, "msgs = jax.nn.logsumexp(masked, axis=1)  # [B, N, H]")),
      _aggregation(
          "aggregate_max_mean_concat",
          "Aggregate with both max and mean over senders and concatenate them (2H features).",
          "Max selects, mean summarises; giving the update both lets it use either.",
          "Richer aggregated features; the update projections read 2H inputs.",
          (_MASK, _DEGREE, _MASKED,
           "msgs = jnp.concatenate([jnp.max(masked, axis=1),",
           "                        jnp.sum(msgs * mask, axis=1) / degree], axis=-1)")),
      _aggregation(
          "aggregate_max_mean_average", "Aggregate with the average of max and mean over senders.",
          "Blending max and mean keeps selection while adding a summary of all neighbours.",
          "Balanced aggregation; same cost.",
          (_MASK, _DEGREE, _MASKED,
           "msgs = 0.5 * (jnp.max(masked, axis=1) + jnp.sum(msgs * mask, axis=1) / degree)")),
      _aggregation(
          "aggregate_sum_sqrt_degree",
          "Aggregate with a masked sum divided by the square root of the degree.",
          "The symmetric-normalisation compromise of GCNs: counts neighbours but damps the "
          "growth with degree.", "Partial counting ability; same cost.",
          (_MASK, _DEGREE, "msgs = jnp.sum(msgs * mask, axis=1) / jnp.sqrt(degree)")),
      _aggregation(
          "aggregate_dot_attention",
          "Aggregate with scaled dot-product attention between sender and receiver terms.",
          "Attention lets each receiver pick the senders whose state matches its query, as "
          "in GAT, using the existing receiver and sender projections as query and key.",
          "Content-based neighbour selection; one extra N^2 dot product.",
          (_MASK,
           "scores = jnp.sum(jnp.expand_dims(m_recv, axis=1) * jnp.expand_dims(m_send, axis=2),",
           "                 axis=-1, keepdims=True) / jnp.sqrt(float(m_recv.shape[-1]))",
           "weights = jax.nn.softmax(jnp.where(mask > 0, scores, -BIG_NUMBER), axis=1) * mask",
           "msgs = jnp.sum(weights * msgs, axis=1)  # [B, N, H]")),
      _aggregation(
          "aggregate_edge_attention",
          "Aggregate with attention weights given by the mean of the edge message term.",
          "Edge features (e.g. pointers, weights) can decide which neighbour matters.",
          "Edge-driven neighbour selection; negligible extra cost.",
          (_MASK, "scores = jnp.mean(m_edge, axis=-1, keepdims=True)  # [B, N, N, 1]",
           "weights = jax.nn.softmax(jnp.where(mask > 0, scores, -BIG_NUMBER), axis=1) * mask",
           "msgs = jnp.sum(weights * msgs, axis=1)  # [B, N, H]")),
      Move("message_mlp_no_pre_activation", act,
           "Feed the summed message terms to the message MLP without the activation first.",
           "The MLP's first layer can use the signed sum directly; the pre-activation "
           "discards half of it.", "More information reaches the message MLP; same cost.",
           (Lines((_MSG_MLP_CALL,), ("msgs = msg_mlp(msgs)  # [B, N, N, H]",)),)),
      Move("message_mlp_post_activation", act,
           "Apply the activation after the message MLP as well as before it.",
           "Non-negative messages make the max aggregation a selection among active features.",
           "Sparser messages; same cost.",
           (Lines((_MSG_MLP_CALL,), ("msgs = activation(msg_mlp(activation(msgs)))",)),)),
      Move("drop_graph_message", act, "Remove the graph-feature term from the pairwise messages.",
           "Graph features are broadcast identically to every pair; they may only add noise "
           "to messages.", "Simpler messages; the graph projection is no longer used.",
           (Sub(r"\s*\+ jnp\.expand_dims\(m_graph, axis=\(1, 2\)\)", ""),)),
      Move("drop_receiver_message", act, "Remove the receiver term from the pairwise messages.",
           "The node update already sees the receiver's own features, so messages can carry "
           "sender and edge information only.",
           "Simpler messages; the receiver projection is no longer used.",
           (Sub(r"jnp\.expand_dims\(m_recv, axis=1\) \+ ", ""),)),
      Move("edge_gated_messages", act,
           "Multiply the summed message terms by a sigmoid gate computed from the edge term.",
           "Edges can switch messages on or off per channel, e.g. to follow pointers.",
           "Edge-conditioned messages; one extra elementwise product per pair.",
           (Insert(_MSG_MLP_CALL, ("msgs = msgs * jax.nn.sigmoid(m_edge)  # edge-gated",)),)),
      Move("multiplicative_messages", act,
           "Add the elementwise product of receiver and sender terms to the messages.",
           "Additive messages cannot express interactions between the two endpoints; a "
           "product term can (e.g. comparing their states).",
           "Pairwise interactions; one extra elementwise product per pair.",
           (Insert(_MSG_MLP_CALL,
                   ("msgs = msgs + jnp.expand_dims(m_recv, axis=1) * jnp.expand_dims(m_send, axis=2)",)),)),
      Move("use_graph_adjacency", act,
           "Aggregate only along the graph's edges instead of over all node pairs.",
           "Restricting messages to real edges gives the structural inductive bias of the "
           "algorithm's graph.", "Sparser, structure-aware communication; same cost.",
           (Lines((r"adj_mat = jnp\.ones_like\(adj_mat\)",), ()),)),
      Move("full_adjacency", act, "Let every node pair exchange messages (full adjacency).",
           "A fully connected processor can learn which pairs matter instead of trusting the "
           "input adjacency.", "More communication paths; same cost.",
           (Insert(_MAX_AGG[0], ("adj_mat = jnp.ones_like(adj_mat)  # [B, N, N]",)),),
           absent=(r"adj_mat = jnp\.ones_like\(adj_mat\)",)),
      Move("residual_state_mix", act,
           "Average the new node state with the previous one (residual mixing).",
           "A residual path keeps the state from drifting over long executions.",
           "More stable rollouts; no extra parameters.",
           (Append(("nxt_hidden = 0.5 * (nxt_hidden + hidden)  # [B, N, H]",)),)),
      Move("bounded_state", act, "Squash the new node state with tanh.",
           "A bounded recurrent state cannot blow up over the long rollouts of 64-node graphs.",
           "Bounded state; no extra parameters.",
           (Append(("nxt_hidden = jnp.tanh(nxt_hidden)  # [B, N, H]",)),)),
      Move("no_layernorm", act, "Do not apply the LayerNorm to the updated state.",
           "Normalisation can erase magnitude information that encodes counters or distances.",
           "Cheaper update; the LayerNorm is no longer used.",
           (Lines((r"if layer_norm is not None:", r"\w+ = layer_norm\(\w+\)"), ()),)),
      Move("update_glu", act,
           "Make the node update multiplicative: activation(node path) * sigmoid(message path).",
           "A GLU-style update lets messages gate each state channel instead of adding to it.",
           "Selective updates; same parameters.",
           (Sub(_UPDATE, r"\1activation(update_node(z)) * jax.nn.sigmoid(update_msgs(msgs))"),)),
      Move("update_separate_activations", act,
           "Activate the node path and the message path separately, then add them.",
           "Separate nonlinearities stop one path from cancelling the other before the "
           "activation.", "Different update function; same cost.",
           (Sub(_UPDATE, r"\1activation(update_node(z)) + activation(update_msgs(msgs))"),)),
      Move("update_linear", act, "Drop the activation from the node update (normalise only).",
           "A linear update followed by normalisation keeps signed state values.",
           "Signed state; same cost.",
           (Sub(_UPDATE, r"\1update_node(z) + update_msgs(msgs)"),)),
      Move("triplet_mean_reduction", act, "Reduce the triplet tensor over i with a mean instead of max.",
           "A mean over intermediate nodes summarises all two-hop paths instead of the best one.",
           "Smoother edge messages; same cost.",
           (Sub(r"jnp\.max\(triplets, axis=1\)", "jnp.mean(triplets, axis=1)"),)),
      Move("triplet_logsumexp_reduction", act,
           "Reduce the triplet tensor over i with log-sum-exp instead of max.",
           "Log-sum-exp is a smooth max, so every intermediate node receives gradient.",
           "Max-like edge messages with denser gradients; same cost.",
           (Sub(r"jnp\.max\(triplets, axis=1\)", "jax.nn.logsumexp(triplets, axis=1)"),)),
      Move("triplet_no_activation", act, "Return the triplet edge messages without the activation.",
           "Signed edge messages give the edge decoders more information.",
           "Signed edge messages; same cost.",
           (Sub(r"tri_msgs = activation\(tri_out\((.*)\)\)(?=[ \t]*(#|$))", r"tri_msgs = tri_out(\1)"),)),
      Move("drop_triplet_messages", act, "Stop returning triplet edge messages (tri_msgs = None).",
           "The N^3 triplet computation is the most expensive part of the step; the node "
           "messages may carry enough.", "Much cheaper step; the triplet operators go unused.",
           (Lines((r"triplets = \(",) + (r"\+?\s*jnp\.expand_dims\(tri_\w+\(\w+\), axis=.*\)",) * 7
                  + (r"\)", r"tri_msgs = .*triplets.*"),
                  ("tri_msgs = None  # No edge messages.",)),)),
      Move("gate_from_messages_only", act, "Compute the update gate from the messages only.",
           "Whether to update a node may depend only on what it hears, not on its own state.",
           "Simpler gate; the gate's node projection is no longer used.",
           (Lines((r"gate = jax\.nn\.sigmoid\(", r"gate_out\(activation\(gate_node\(z\) \+ gate_msgs\(msgs\)\)\)\)"),
                  ("gate = jax.nn.sigmoid(gate_out(activation(gate_msgs(msgs))))  # [B, N, H]",)),)),
      Move("no_update_gate", act, "Remove the update gate: the new state is the update itself.",
           "Without the gate every step rewrites the state fully, which may suit algorithms "
           "whose state changes everywhere each step.",
           "Cheaper step; the gate operators are no longer used.",
           (Lines((r"gate = jax\.nn\.sigmoid\(", r"gate_out\(.*\)\)\)\)",
                   r"nxt_hidden = ret \* gate \+ hidden \* \(1 - gate\)"),
                  ("nxt_hidden = ret  # [B, N, H]",)),)),
      Move("layernorm_after_gate", act,
           "Apply the LayerNorm after the gated state update instead of before it.",
           "Normalising the carried state itself keeps its scale fixed across all steps.",
           "Normalised recurrent state; same cost.",
           (Lines((r"if layer_norm is not None:", r"ret = layer_norm\(ret\)"), ()),
            Append(("if layer_norm is not None:", "  nxt_hidden = layer_norm(nxt_hidden)")))),
  ]
  return moves


_MOVE_TAG = re.compile(r"\[move:\s*([a-z0-9_]+)\]")


def named_moves(text: str | None) -> list[str]:
  """Names of the moves a directive (or a history of directives) cites as ``[move: name]``."""
  return _MOVE_TAG.findall(text or "")


CATALOGUE: tuple[Move, ...] = tuple(_operator_moves() + _action_moves())
_BY_NAME = {m.name: m for m in CATALOGUE}
if len(_BY_NAME) != len(CATALOGUE):
  raise ValueError("offline move names must be unique")


def get_move(name: str) -> Move:
  """The move called ``name``."""
  try:
    return _BY_NAME[name]
  except KeyError:
    raise KeyError(f"unknown offline move {name!r}; known: {sorted(_BY_NAME)}") from None


def moves_for(factor: str) -> list[Move]:
  """Every catalogue move of ``factor``."""
  return [m for m in CATALOGUE if m.factor == factor]


def applicable(factor: str, body: str, exclude: Sequence[str] = ()) -> list[Move]:
  """The moves of ``factor`` that apply to region body ``body`` (minus ``exclude``)."""
  return [m for m in moves_for(factor) if m.name not in exclude and m.apply(body) is not None]


__all__ = ["Append", "CATALOGUE", "Edit", "Insert", "Lines", "Move", "Sub", "applicable",
           "get_move", "moves_for", "named_moves"]
