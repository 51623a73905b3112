r"""ReLU networks on any directed acyclic graph of neurons (skip connections allowed)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse
from jaxtyping import Array, Bool, Float, PyTree

from ._checks import as_float_array, check_finite, check_key
from ._custom_types import Key, RealScalarLike
from ._dag_paths import PathIndex, count_paths, path_index, validate_edges
from ._relu import DEFAULT_MAX_PATHS, AbstractReLUNetwork, ReLUNetwork, check_num_paths


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
        pairs = validate_edges(n_inputs, n_hidden, n_outputs, edges)
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
        count = count_paths(*spec)
        if count == 0:
            raise ValueError("The graph has no path from an input or a bias to an output.")
        check_num_paths(count, max_paths, f"A ReLUDAG with {len(pairs)} edges")
        # The checked arrays are the ones stored: under `jit` the check is in their data flow.
        w = check_finite(w, "weights")
        if b is not None:
            b = check_finite(b, "biases")
        dtype = w.dtype if b is None else jnp.result_type(w, b)
        self.weights = w.astype(dtype)
        self.biases = None if b is None else b.astype(dtype)
        self.n_inputs, self.n_hidden, self.n_outputs, self.edges = spec[:4]
        path_index(*spec)  # enumerate the paths now, once

    @property
    def _graph(self) -> PathIndex:
        return path_index(self.n_inputs, self.n_hidden, self.n_outputs, self.edges, self.bias)

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
        pairs = validate_edges(n_inputs, n_hidden, n_outputs, edges)
        spec = (int(n_inputs), int(n_hidden), int(n_outputs), pairs, bool(bias))
        check_num_paths(count_paths(*spec), max_paths, f"A ReLUDAG with {len(pairs)} edges")
        n_nodes = n_inputs + n_hidden + n_outputs
        fan_in = np.bincount([t for _, t in pairs], minlength=n_nodes).clip(min=1)
        wkey, bkey = jax.random.split(check_key(key))
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
