r"""ReLU networks on any directed acyclic graph of neurons (skip connections allowed)."""

import dataclasses
import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse
from jaxtyping import Array, Bool, Float, PyTree

from ._checks import as_float_array, check_finite
from ._custom_types import Key, RealScalarLike
from ._relu import DEFAULT_MAX_PATHS, AbstractReLUNetwork, ReLUNetwork, check_num_paths


@dataclasses.dataclass(frozen=True, eq=False)
class _Graph:
    # Static index arrays of one graph, built once (cached by the graph's description).
    # Paths: row p lists its parameters (edge ids, then E + i for the bias of non-input
    # node n_inputs + i), padded with D; its nodes, padded with n_nodes; its input (or
    # n_inputs: "x = 1" for a bias path) and its output (0..n_outputs-1).
    param_index: np.ndarray
    node_index: np.ndarray
    start: np.ndarray
    end: np.ndarray
    num_input_paths: int
    # Edges and the forward pass, level by level (a node's level is 1 + the largest level
    # of its sources; nodes of one level are computed together).
    source: np.ndarray
    target: np.ndarray
    levels: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]


def _validate(n_inputs, n_hidden, n_outputs, edges) -> tuple[tuple[int, int], ...]:
    for name, value, low in (("n_inputs", n_inputs, 1), ("n_hidden", n_hidden, 1)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    if isinstance(n_outputs, bool) or int(n_outputs) != n_outputs or n_outputs < 1:
        raise ValueError(f"`n_outputs` must be an integer >= 1, got {n_outputs!r}.")
    n_nodes = n_inputs + n_hidden + n_outputs
    try:
        pairs = tuple((int(s), int(t)) for s, t in edges)
        if any((s, t) != tuple(e) for (s, t), e in zip(pairs, edges)):
            raise TypeError
    except (TypeError, ValueError) as e:
        raise ValueError("`edges` must be a sequence of (source, target) pairs of integers.") from e
    if not pairs:
        raise ValueError("`edges` is empty: the network has no connections.")
    seen = set()
    for s, t in pairs:
        if not (0 <= s < n_nodes and 0 <= t < n_nodes):
            raise ValueError(
                f"edge {(s, t)} refers to a node outside 0..{n_nodes - 1} (nodes: inputs "
                f"0..{n_inputs - 1}, hidden {n_inputs}..{n_inputs + n_hidden - 1}, outputs "
                f"{n_inputs + n_hidden}..{n_nodes - 1})."
            )
        if s >= t:
            raise ValueError(
                f"edge {(s, t)} does not go from a lower to a higher node id: nodes must be "
                "numbered in topological order (this also rules out cycles)."
            )
        if t < n_inputs:
            raise ValueError(f"edge {(s, t)} enters input node {t}: inputs have no incoming edges.")
        if s >= n_inputs + n_hidden:
            raise ValueError(
                f"edge {(s, t)} leaves output node {s}: outputs have no outgoing edges."
            )
        if (s, t) in seen:
            raise ValueError(f"edge {(s, t)} appears more than once in `edges`.")
        seen.add((s, t))
    sources = {s for s, _ in pairs}
    targets = {t for _, t in pairs}
    for v in range(n_inputs, n_inputs + n_hidden):
        if v not in targets or v not in sources:
            raise ValueError(
                f"hidden neuron {v} has no {'incoming' if v not in targets else 'outgoing'} "
                "edge: every hidden neuron needs at least one of each (a dangling neuron "
                "carries no path)."
            )
    return pairs


def _count(n_inputs, n_hidden, n_outputs, edges, bias) -> int:
    # Number of paths ending at each node, by dynamic programming in topological order.
    n_nodes = n_inputs + n_hidden + n_outputs
    count = [1] * n_inputs + [int(bias)] * (n_hidden + n_outputs)
    for s, t in sorted(edges, key=lambda e: e[1]):
        count[t] += count[s]
    return sum(count[n_inputs + n_hidden : n_nodes])


@ft.lru_cache(maxsize=16)
def _graph(n_inputs, n_hidden, n_outputs, edges, bias) -> _Graph:
    n_nodes = n_inputs + n_hidden + n_outputs
    num_edges = len(edges)
    num_params = num_edges + (n_hidden + n_outputs if bias else 0)
    src = np.array([s for s, _ in edges], dtype=np.int32)
    dst = np.array([t for _, t in edges], dtype=np.int32)
    level = np.zeros(n_nodes, dtype=np.int64)
    for e in np.argsort(dst, kind="stable"):
        level[dst[e]] = max(level[dst[e]], level[src[e]] + 1)
    level[n_inputs:] = np.maximum(level[n_inputs:], 1)
    depth = int(level.max())
    width = depth + 1  # the most nodes on a path (and the most parameters: bias + edges)

    # Paths ending at each node, vectorised per incoming edge: extend all of the source's
    # paths by the edge at once. A node's table is dropped after its last outgoing edge.
    last_use = np.full(n_nodes, -1)
    for s, t in edges:
        last_use[s] = max(last_use[s], t)
    tables = {}
    incoming = [[] for _ in range(n_nodes)]
    for e, (_, t) in enumerate(edges):
        incoming[t].append(e)
    for v in range(n_nodes):
        parts = []
        if v < n_inputs:
            parts.append(_single(v, None, n_inputs, num_params, n_nodes, width, v))
        else:
            if bias:
                b = num_edges + v - n_inputs
                parts.append(_single(v, b, n_inputs, num_params, n_nodes, width, n_inputs))
            for e in incoming[v]:
                params, nodes, length, start = tables[int(src[e])]
                params, nodes = params.copy(), nodes.copy()
                rows = np.arange(params.shape[0])
                params[rows, np.sum(params < num_params, axis=1)] = e
                nodes[rows, length] = v
                parts.append((params, nodes, length + 1, start))
        tables[v] = tuple(np.concatenate(cols) for cols in zip(*parts)) if parts else None
        for u in {int(src[e]) for e in incoming[v]}:
            if last_use[u] == v and u < n_inputs + n_hidden:
                del tables[u]
    outputs = [tables[v] for v in range(n_inputs + n_hidden, n_nodes) if tables[v] is not None]
    params, nodes, length, start = (np.concatenate(cols) for cols in zip(*outputs))
    end = nodes[np.arange(nodes.shape[0]), length - 1] - (n_inputs + n_hidden)

    # Order: input paths, then bias paths; longer first; then by node sequence read from
    # the output back (so a layered network's paths come in C order of its lift()).
    reversed_nodes = np.full_like(nodes, -1)
    for k in range(width):
        has = length > k
        reversed_nodes[has, k] = nodes[has, length[has] - 1 - k]
    is_bias = start == n_inputs
    keys = [reversed_nodes[:, k] for k in reversed(range(width))] + [-length, is_bias]
    order = np.lexsort(keys)
    used = int(np.max(np.sum(params < num_params, axis=1)))

    levels = []
    for lev in range(1, depth + 1):
        level_nodes = np.flatnonzero(level == lev).astype(np.int32)
        local = np.full(n_nodes, -1)
        local[level_nodes] = np.arange(level_nodes.size)
        level_edges = np.flatnonzero(level[dst] == lev).astype(np.int32)
        levels.append((level_nodes, level_edges, local[dst[level_edges]].astype(np.int32)))
    return _Graph(
        param_index=params[order][:, :used].astype(np.int32),
        node_index=nodes[order].astype(np.int32),
        start=start[order].astype(np.int32),
        end=end[order].astype(np.int32),
        num_input_paths=int(np.sum(~is_bias)),
        source=src,
        target=dst,
        levels=tuple(levels),
    )


def _single(v, param, n_inputs, num_params, n_nodes, width, start):
    # The one path of length 0 starting (and so far ending) at node v.
    params = np.full((1, width), num_params, dtype=np.int64)
    if param is not None:
        params[0, 0] = param
    nodes = np.full((1, width), n_nodes, dtype=np.int64)
    nodes[0, 0] = v
    return params, nodes, np.ones(1, dtype=np.int64), np.array([start], dtype=np.int64)


class ReLUDAG(AbstractReLUNetwork):
    r"""A ReLU network on any directed acyclic graph of neurons.

    Nodes are numbered in topological order: inputs $0..n_{\mathrm{in}}-1$, then hidden
    neurons, then outputs. Each edge $(s, t)$, $s < t$, carries a weight; skip connections
    (input → output, hidden → hidden across "layers") are allowed. Hidden neurons apply
    ReLU, outputs are linear; with `bias=True` every hidden and output neuron has a bias.

    $$\mathrm{pre}_v = \sum_{(u, v)} w_{uv}\,\mathrm{act}_u + b_v, \qquad
    \mathrm{act}_v = \max(\mathrm{pre}_v, 0)\ (\text{hidden}),\quad
    g(x)_o = \mathrm{pre}_o\ (\text{outputs}).$$

    **Paths.** Enumerated once per graph (vectorised, one step per edge; cached), after
    their number has been counted by dynamic programming and checked against
    `max_paths`. `lift()` is a vector of length `num_paths`: input paths first, then bias
    paths; within each, longer paths first, then by node sequence read from the output
    back (for [`models.ReLUDAG.from_network`][] this is the order of the flattened
    `ReLUNetwork.lift()`). [`models.ReLUDAG.paths`][] lists them and
    [`models.ReLUDAG.incidence`][] gives the path–parameter incidence matrix $B$ (sparse).

    **Parameters** (the order of $\theta$ and of the columns of $B$): `weights`, one per
    edge in the order of `edges`, then `biases`, one per non-input node in id order.
    """

    weights: Float[Array, " edges"]
    biases: Float[Array, " biased"] | None
    n_inputs: int = eqx.field(static=True)
    n_hidden: int = eqx.field(static=True)
    n_outputs: int = eqx.field(static=True)
    edges: tuple[tuple[int, int], ...] = eqx.field(static=True)

    def __init__(
        self,
        n_inputs: int,
        n_hidden: int,
        n_outputs: int,
        edges,
        weights,
        biases=None,
        *,
        max_paths: int = DEFAULT_MAX_PATHS,
    ):
        r"""**Arguments:**

        - `n_inputs`, `n_hidden`, `n_outputs`: the numbers of nodes of each kind
          (at least one each).
        - `edges`: a sequence of `(source, target)` node ids with `source < target`.
        - `weights`: one weight per edge, shape `(len(edges),)`.
        - `biases`: `None`, or one bias per hidden and output neuron, shape
          `(n_hidden + n_outputs,)`.
        - `max_paths`: the largest number of paths accepted (default $10^7$). The path
          tables take about $8(\mathrm{depth} + 1)$ bytes per path.

        **Raises:** `ValueError` for an edge out of range, against the topological order,
        into an input, out of an output or repeated; a hidden neuron without incoming or
        outgoing edge; wrong shapes; non-finite values; more than `max_paths` paths.
        """
        pairs = _validate(n_inputs, n_hidden, n_outputs, edges)
        w = as_float_array(weights, "weights")
        if w.shape != (len(pairs),):
            raise ValueError(
                f"`weights` must have one entry per edge, shape ({len(pairs)},); got {w.shape}."
            )
        b = None
        if biases is not None:
            b = as_float_array(biases, "biases")
            if b.shape != (n_hidden + n_outputs,):
                raise ValueError(
                    f"`biases` must have one entry per hidden and output neuron, shape "
                    f"({n_hidden + n_outputs},); got {b.shape}."
                )
        spec = (int(n_inputs), int(n_hidden), int(n_outputs), pairs, b is not None)
        count = _count(*spec)
        if count == 0:
            raise ValueError("The graph has no path from an input or a bias to an output.")
        check_num_paths(count, max_paths, f"A ReLUDAG with {len(pairs)} edges")
        check_finite(w, "weights")
        if b is not None:
            check_finite(b, "biases")
        dtype = w.dtype if b is None else jnp.result_type(w, b)
        self.weights = w.astype(dtype)
        self.biases = None if b is None else b.astype(dtype)
        self.n_inputs, self.n_hidden, self.n_outputs, self.edges = spec[:4]
        _graph(*spec)  # enumerate the paths now, once

    @property
    def _graph(self) -> _Graph:
        return _graph(self.n_inputs, self.n_hidden, self.n_outputs, self.edges, self.bias)

    @property
    def bias(self) -> bool:
        """Whether the hidden and output neurons have biases."""
        return self.biases is not None

    @property
    def num_hidden(self) -> int:
        return self.n_hidden

    @property
    def num_nodes(self) -> int:
        return self.n_inputs + self.n_hidden + self.n_outputs

    @property
    def num_paths(self) -> int:
        return int(self._graph.start.shape[0])

    @property
    def num_input_paths(self) -> int:
        """The number of paths that start at an input (they come first in `lift()`)."""
        return self._graph.num_input_paths

    def paths(self) -> tuple[tuple[int, ...], ...]:
        """Each path as its node sequence, in the order of `lift()`.

        A bias path starts at the neuron whose bias it carries (a non-input node); an input
        path starts at an input.
        """
        nodes = self._graph.node_index
        return tuple(tuple(int(v) for v in row if v < self.num_nodes) for row in nodes)

    def incidence(self) -> sparse.BCOO:
        r"""The path–parameter incidence matrix $B$, shape `(num_paths, D)`, as a BCOO.

        $B_{pe} = 1$ when parameter $e$ (an edge weight, or the bias that starts $p$) lies
        on path $p$; columns in the order of $\theta$ (`weights`, then `biases`).
        """
        index = self._graph.param_index
        rows, cols = np.nonzero(index < self._num_params)
        indices = np.stack([rows, index[rows, cols]], axis=1)
        data = jnp.ones(indices.shape[0], dtype=self.weights.dtype)
        return sparse.BCOO((data, jnp.asarray(indices)), shape=(self.num_paths, self._num_params))

    @property
    def _num_params(self) -> int:
        return len(self.edges) + (0 if self.biases is None else self.biases.shape[0])

    def _flat(self, tree, pad):
        parts = [tree.weights]
        if tree.biases is not None:
            parts.append(tree.biases)
        parts.append(jnp.full((1,), pad, dtype=tree.weights.dtype))
        return jnp.concatenate(parts)

    def _forward(self, x):
        graph = self._graph
        first_output = self.n_inputs + self.n_hidden
        act = jnp.zeros(self.num_nodes, dtype=jnp.result_type(x, self.weights))
        act = act.at[: self.n_inputs].set(x)
        pre = act
        for nodes, level_edges, local in graph.levels:
            messages = self.weights[level_edges] * act[graph.source[level_edges]]
            y = jax.ops.segment_sum(messages, local, num_segments=nodes.size)
            if self.biases is not None:
                y = y + self.biases[nodes - self.n_inputs]
            pre = pre.at[nodes].set(y)
            act = act.at[nodes].set(jnp.where(nodes < first_output, jax.nn.relu(y), y))
        return pre

    def __call__(self, x: Float[Array, " n_in"]) -> Float[Array, " n_out"]:
        return self._forward(x)[self.n_inputs + self.n_hidden :]

    def preactivations(self, x: Float[Array, " n_in"]) -> Float[Array, " hidden"]:
        return self._forward(x)[self.n_inputs : self.n_inputs + self.n_hidden]

    def lift(self) -> Float[Array, " paths"]:
        return jnp.prod(self._flat(self, 1.0)[self._graph.param_index], axis=1)

    def log_lift(self, x: PyTree[Float[Array, "..."]]) -> Float[Array, " paths"]:
        return jnp.sum(self._flat(x, 0.0)[self._graph.param_index], axis=1)

    def conservation_laws(self) -> Float[Array, " hidden"]:
        graph = self._graph
        # Segment n_hidden collects the edges whose endpoint is not hidden (dropped).
        hidden_of = lambda nodes: np.where(
            (nodes >= self.n_inputs) & (nodes < self.n_inputs + self.n_hidden),
            nodes - self.n_inputs,
            self.n_hidden,
        )
        sq = self.weights**2
        into = jax.ops.segment_sum(sq, hidden_of(graph.target), num_segments=self.n_hidden + 1)
        out = jax.ops.segment_sum(sq, hidden_of(graph.source), num_segments=self.n_hidden + 1)
        laws = into[:-1] - out[:-1]
        if self.biases is not None:
            laws = laws + self.biases[: self.n_hidden] ** 2
        return laws

    def predict_from_lift(
        self,
        z: Float[Array, " paths"],
        pattern: Bool[Array, " hidden"],
        x: Float[Array, " n_in"],
    ) -> Float[Array, " n_out"]:
        graph = self._graph
        # Activation of every node (inputs, outputs and the padding are "on").
        on = jnp.concatenate(
            [jnp.ones(self.n_inputs, bool), pattern, jnp.ones(self.n_outputs + 1, bool)]
        )
        active = jnp.all(on[graph.node_index], axis=1)
        x_ext = jnp.concatenate([x, jnp.ones(1, x.dtype)])
        terms = jnp.where(active, z * x_ext[graph.start], 0)
        return jax.ops.segment_sum(terms, graph.end, num_segments=self.n_outputs)

    def rescale(self, mu: Float[Array, " hidden"]) -> "ReLUDAG":
        graph = self._graph
        node_mu = jnp.concatenate(
            [jnp.zeros(self.n_inputs, mu.dtype), mu, jnp.zeros(self.n_outputs, mu.dtype)]
        )
        weights = self.weights * jnp.exp(node_mu[graph.target] - node_mu[graph.source])
        biases = None
        if self.biases is not None:
            biases = self.biases * jnp.exp(node_mu[self.n_inputs :])
        return eqx.tree_at(
            lambda n: (n.weights, n.biases), self, (weights, biases), is_leaf=lambda v: v is None
        )

    @classmethod
    def random(
        cls,
        key: Key,
        n_inputs: int,
        n_hidden: int,
        n_outputs: int,
        edges,
        *,
        bias: bool = False,
        scale: RealScalarLike = 1.0,
        max_paths: int = DEFAULT_MAX_PATHS,
    ) -> "ReLUDAG":
        r"""Gaussian weights (and biases) with fan-in scaling.

        The weight of $(s, t)$ and the bias of $t$ have standard deviation
        `scale`$/\sqrt{\mathrm{fan\_in}(t)}$. Almost surely no parameter is zero.
        """
        pairs = _validate(n_inputs, n_hidden, n_outputs, edges)
        spec = (int(n_inputs), int(n_hidden), int(n_outputs), pairs, bool(bias))
        check_num_paths(_count(*spec), max_paths, f"A ReLUDAG with {len(pairs)} edges")
        n_nodes = n_inputs + n_hidden + n_outputs
        fan_in = np.bincount([t for _, t in pairs], minlength=n_nodes).clip(min=1)
        wkey, bkey = jax.random.split(key)
        std_w = scale / jnp.sqrt(jnp.asarray(fan_in[[t for _, t in pairs]], dtype=float))
        weights = std_w * jax.random.normal(wkey, (len(pairs),))
        biases = None
        if bias:
            std_b = scale / jnp.sqrt(jnp.asarray(fan_in[n_inputs:], dtype=float))
            biases = std_b * jax.random.normal(bkey, (n_hidden + n_outputs,))
        return cls(n_inputs, n_hidden, n_outputs, pairs, weights, biases, max_paths=max_paths)

    @classmethod
    def from_network(cls, network: ReLUNetwork, *, max_paths: int = DEFAULT_MAX_PATHS) -> "ReLUDAG":
        r"""The same network as a DAG (nodes layer by layer), with the same parameters.

        Edges are listed layer by layer, $W_k$ in row-major order, so `weights` is the
        concatenation of the flattened $W_k$ and `biases` that of the $b_k$; `lift()` is
        the concatenation of the flattened arrays of `network.lift()`, in order.
        """
        if not isinstance(network, ReLUNetwork):
            raise TypeError(
                f"`network` must be a models.ReLUNetwork, got {type(network).__name__}."
            )
        widths = network.widths
        offsets = np.cumsum((0,) + widths)
        edges = []
        for k in range(1, len(widths)):
            rows, cols = np.meshgrid(np.arange(widths[k]), np.arange(widths[k - 1]), indexing="ij")
            edges += zip(
                (offsets[k - 1] + cols.ravel()).tolist(), (offsets[k] + rows.ravel()).tolist()
            )
        weights = jnp.concatenate([w.ravel() for w in network.weights])
        biases = None if network.biases is None else jnp.concatenate(network.biases)
        return cls(
            widths[0],
            sum(widths[1:-1]),
            widths[-1],
            edges,
            weights,
            biases,
            max_paths=max_paths,
        )
