r"""ReLU networks and their path-lifting: the abstract interface and layered networks."""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PyTree

from ._checks import as_float_array, check_finite, check_key, check_sequence, check_widths
from ._custom_types import Key, RealScalarLike
from ._factorization import AbstractFactorization

DEFAULT_MAX_PATHS = 10**7
"""Default largest number of paths a ReLU network may have (`max_paths`)."""


def check_num_paths(num_paths: int, max_paths: int, what: str) -> None:
    """Refuse a network with more than `max_paths` paths, before anything is allocated."""
    if isinstance(max_paths, bool) or int(max_paths) != max_paths or max_paths < 1:
        raise ValueError(f"`max_paths` must be a positive integer, got {max_paths!r}.")
    if num_paths > max_paths:
        raise ValueError(
            f"{what} has {num_paths} paths, more than `max_paths` = {max_paths}: the "
            "path-lifting would hold that many entries. Pass a larger `max_paths` if you "
            "have the memory, or use a smaller network."
        )


class AbstractReLUNetwork(AbstractFactorization):
    r"""A ReLU network with its path-lifting $\Phi$ (THEORY §3, "ReLU networks").

    Neurons are inputs, hidden neurons (ReLU) and outputs (linear); the parameters
    $\theta$ are the weights of the edges and, optionally, the biases of the non-input
    neurons. A *path* $p$ goes from an input (an *input path*) or from a neuron's bias (a
    *bias path*) to an output, and

    $$\Phi_p(\theta) = \prod_{e \in p}\theta_e, \qquad
    g_\theta(x) = \sum_p \Phi_p(\theta)\, a_p(\theta, x)\, x_{\mathrm{start}(p)},$$

    with $a_p \in \{0, 1\}$ the product of the activation indicators of the hidden neurons
    on $p$ and $x_{\mathrm{start}(p)} = 1$ for a bias path. On a region of constant
    activation pattern the loss is therefore $f(\Phi(\theta))$.

    One conservation law per hidden neuron $v$ (complete on the dense set where no
    parameter is zero): $h_v = \|\text{incoming weights and bias}\|^2 -
    \|\text{outgoing weights}\|^2$. With $q_e = \theta_e^2/2$, $\nabla\Phi_p =
    \Phi_p\sum_{e\in p}\partial/\partial q_e$, so the induced metric is
    $M = \mathrm{diag}(\Phi)\,B\,\mathrm{diag}(\theta^{-2})\,B^\top\mathrm{diag}(\Phi)$ with
    $B \in \{0,1\}^{\#\text{paths}\times D}$ the path–edge incidence matrix.

    !!! warning "Zero parameters"
        A parameter that is exactly zero puts $\theta$ outside the dense set where the
        theory holds (rank $\partial\Phi = D - \#\text{hidden}$, recoverability). Networks
        may hold zeros, but [`manifolds.intrinsic_metric`][] refuses them.

    Concrete networks: [`models.ReLUNetwork`][] (layers) and [`models.ReLUDAG`][] (any
    DAG, skip connections).
    """

    n_inputs: eqx.AbstractVar[int]
    n_outputs: eqx.AbstractVar[int]
    num_hidden: eqx.AbstractVar[int]
    num_paths: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(self, x: Float[Array, " n_in"]) -> Float[Array, " n_out"]:
        """The network's output on one input (ReLU on hidden neurons, linear outputs).

        Map it over a batch with `jax.vmap`.
        """

    @abc.abstractmethod
    def preactivations(self, x: Float[Array, " n_in"]) -> Float[Array, " hidden"]:
        """The pre-activations of the hidden neurons on one input, in the fixed hidden order."""

    def activation_pattern(self, x: Float[Array, " n_in"]) -> Bool[Array, " hidden"]:
        """Which hidden neurons are active on `x`: `preactivations(x) > 0`."""
        return self.preactivations(x) > 0

    @abc.abstractmethod
    def lift(self) -> PyTree[Float[Array, "..."]]:
        r"""The path-lifting $\Phi(\theta)$: one entry per path, input paths then bias paths."""

    @abc.abstractmethod
    def conservation_laws(self) -> Float[Array, " hidden"]:
        r"""$h_v = \|\text{incoming weights of } v\|^2 + b_v^2 - \|\text{outgoing weights of }
        v\|^2$ for each hidden neuron $v$, in the hidden order."""

    @abc.abstractmethod
    def predict_from_lift(
        self,
        z: PyTree[Float[Array, "..."]],
        pattern: Bool[Array, " hidden"],
        x: Float[Array, " n_in"],
    ) -> Float[Array, " n_out"]:
        r"""The output $\sum_p z_p\, a_p\, x_{\mathrm{start}(p)}$ for a given activation pattern.

        Linear in `z` (of `lift()`'s structure; it may be traced and differentiated).
        Equals `self(x)` when `z = self.lift()` and `pattern = self.activation_pattern(x)`.
        """

    @abc.abstractmethod
    def rescale(self, mu: Float[Array, " hidden"]) -> "AbstractReLUNetwork":
        r"""The network with each hidden neuron $v$'s incoming weights and bias multiplied by
        $e^{\mu_v}$ and its outgoing weights by $e^{-\mu_v}$.

        $\Phi$ and the function $g_\theta$ are unchanged (positive homogeneity of ReLU); the
        law $h_v$ changes. These rescalings are the fibre of $\Phi$ at fixed signs.
        """

    @abc.abstractmethod
    def log_lift(self, x: PyTree[Float[Array, "..."]]) -> PyTree[Float[Array, "..."]]:
        r"""The additive path-lifting $Bx$: $(Bx)_p = \sum_{e\in p} x_e$.

        `x` has the structure of the parameters, `eqx.filter(self, eqx.is_inexact_array)`
        (e.g. $x = \log|\theta|$, then $Bx = \log|\Phi(\theta)|$); the result has `lift()`'s
        structure. Linear in `x`: `jax.linear_transpose` of it gives $B^\top$.
        """


def _expand(a: Array, rank: int) -> Array:
    # Prepend unit axes (explicit broadcasting: rank promotion may be disallowed).
    return jnp.reshape(a, (1,) * (rank - a.ndim) + a.shape)


def _outer_chain(weights, biases, combine, unit):
    # Q_L = unit (n_L,), Q_{k-1}[i_L..i_{k-1}] = combine(Q_k[i_L..i_k], W_k[i_k, i_{k-1}]):
    # Q_0 holds the input paths and combine(Q_k, b_k) the paths starting at layer k's biases.
    n_out = weights[-1].shape[0]
    q = jnp.full((n_out,), unit, dtype=weights[-1].dtype)
    suffix = [q]
    for w in reversed(weights):
        q = combine(q[..., None], _expand(w, q.ndim + 1))
        suffix.append(q)
    suffix = suffix[::-1]  # suffix[k] = Q_k, shape (n_L, ..., n_k)
    paths = [suffix[0]]
    if biases is not None:
        paths += [combine(suffix[k], _expand(b, suffix[k].ndim)) for k, b in enumerate(biases, 1)]
    return tuple(paths)


class ReLUNetwork(AbstractReLUNetwork):
    r"""A layered ReLU network $x \mapsto W_L\sigma(\cdots\sigma(W_1x + b_1)\cdots) + b_L$.

    Widths $(n_0, \dots, n_L)$, $L \ge 2$, weights $W_k \in \mathbb{R}^{n_k\times n_{k-1}}$,
    optional biases $b_k \in \mathbb{R}^{n_k}$ on every hidden and output layer. Hidden
    neurons are ordered layer by layer ($n_1 + \dots + n_{L-1}$ of them).

    **Path-lifting.** `lift()` is a tuple `(input_paths, *bias_paths)`:

    - `input_paths`, shape $(n_L, n_{L-1}, \dots, n_0)$:
      $\Phi[i_L, \dots, i_0] = \prod_{k=1}^{L} W_k[i_k, i_{k-1}]$;
    - with biases, `bias_paths[k-1]` for $k = 1..L$, shape $(n_L, \dots, n_k)$:
      $\Phi[i_L, \dots, i_k] = \big(\prod_{j=k+1}^{L} W_j[i_j, i_{j-1}]\big)\, b_k[i_k]$
      (the last one is $b_L$ itself).

    It is built from the layer structure (outer products of the $W_k$), never by
    enumerating paths: $\#\text{paths} = \prod_k n_k + \sum_{k\ge1}\prod_{j\ge k} n_j$ (the
    sum with biases only), checked against `max_paths` at construction.
    """

    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...] | None

    def __init__(self, weights, biases=None, *, max_paths: int = DEFAULT_MAX_PATHS):
        r"""**Arguments:**

        - `weights`: $(W_1, \dots, W_L)$, $L \ge 2$; $W_k$ of shape $(n_k, n_{k-1})$.
        - `biases`: `None` (no biases), or $(b_1, \dots, b_L)$, $b_k$ of shape $(n_k,)$.
        - `max_paths`: the largest number of paths accepted (default $10^7$).

        **Raises:** `ValueError` for fewer than two layers, shapes that do not chain,
        non-finite entries, or more than `max_paths` paths; `TypeError` for non-float
        input.
        """
        weights = check_sequence(weights, "weights", 2)
        ws = tuple(as_float_array(w, f"weights[{k}]") for k, w in enumerate(weights))
        for k, w in enumerate(ws):
            if w.ndim != 2:
                raise ValueError(f"`weights[{k}]` must be a matrix, got shape {w.shape}.")
            if k > 0 and w.shape[1] != ws[k - 1].shape[0]:
                raise ValueError(
                    f"`weights` do not chain: weights[{k}] has shape {w.shape} but "
                    f"weights[{k - 1}] has shape {ws[k - 1].shape}; expected weights[{k}] "
                    f"of shape (n_{k + 1}, {ws[k - 1].shape[0]})."
                )
        widths = (ws[0].shape[1],) + tuple(w.shape[0] for w in ws)
        if min(widths) < 1:
            raise ValueError(f"every width must be positive, got widths {widths}.")
        bs = None
        if biases is not None:
            biases = check_sequence(biases, "biases", 1)
            if len(biases) != len(ws):
                raise ValueError(
                    f"`biases` must have one vector per layer ({len(ws)}), got {len(biases)}."
                )
            bs = tuple(as_float_array(b, f"biases[{k}]") for k, b in enumerate(biases))
            for k, b in enumerate(bs):
                if b.shape != (widths[k + 1],):
                    raise ValueError(
                        f"`biases[{k}]` must have shape ({widths[k + 1]},), got {b.shape}."
                    )
        check_num_paths(
            _count_paths(widths, bs is not None), max_paths, f"A ReLUNetwork of widths {widths}"
        )
        # The checked arrays are the ones stored: under `jit` the check is in their data flow.
        ws = tuple(check_finite(w, f"weights[{k}]") for k, w in enumerate(ws))
        if bs is not None:
            bs = tuple(check_finite(b, f"biases[{k}]") for k, b in enumerate(bs))
        dtype = jnp.result_type(*ws, *(bs or ()))
        self.weights = tuple(w.astype(dtype) for w in ws)
        self.biases = None if bs is None else tuple(b.astype(dtype) for b in bs)

    @property
    def widths(self) -> tuple[int, ...]:
        r"""$(n_0, n_1, \dots, n_L)$."""
        return (self.weights[0].shape[1],) + tuple(w.shape[0] for w in self.weights)

    @property
    def depth(self) -> int:
        """The number of layers $L$."""
        return len(self.weights)

    @property
    def bias(self) -> bool:
        """Whether the network has biases."""
        return self.biases is not None

    @property
    def n_inputs(self) -> int:
        return self.widths[0]

    @property
    def n_outputs(self) -> int:
        return self.widths[-1]

    @property
    def num_hidden(self) -> int:
        return sum(self.widths[1:-1])

    @property
    def num_paths(self) -> int:
        return _count_paths(self.widths, self.bias)

    def _hidden_split(self, v):
        return jnp.split(v, list(_cumulative(self.widths[1:-1]))[:-1])

    def __call__(self, x: Float[Array, " n_in"]) -> Float[Array, " n_out"]:
        for k in range(len(self.weights) - 1):
            x = jax.nn.relu(self._affine(k, x))
        return self._affine(len(self.weights) - 1, x)

    def _affine(self, k, x):
        y = self.weights[k] @ x
        return y if self.biases is None else y + self.biases[k]

    def preactivations(self, x: Float[Array, " n_in"]) -> Float[Array, " hidden"]:
        pre = []
        for k in range(len(self.weights) - 1):
            y = self._affine(k, x)
            pre.append(y)
            x = jax.nn.relu(y)
        return jnp.concatenate(pre)

    def lift(self) -> tuple[Float[Array, "..."], ...]:
        r"""`(input_paths, *bias_paths)`; see the class docstring for the shapes."""
        return _outer_chain(self.weights, self.biases, jnp.multiply, 1.0)

    def log_lift(self, x: PyTree[Float[Array, "..."]]) -> tuple[Float[Array, "..."], ...]:
        return _outer_chain(x.weights, x.biases, jnp.add, 0.0)

    def conservation_laws(self) -> Float[Array, " hidden"]:
        ws = self.weights
        laws = []
        for k in range(len(ws) - 1):
            incoming = jnp.sum(ws[k] ** 2, axis=1)
            if self.biases is not None:
                incoming = incoming + self.biases[k] ** 2
            laws.append(incoming - jnp.sum(ws[k + 1] ** 2, axis=0))
        return jnp.concatenate(laws)

    def predict_from_lift(
        self,
        z: tuple[Float[Array, "..."], ...],
        pattern: Bool[Array, " hidden"],
        x: Float[Array, " n_in"],
    ) -> Float[Array, " n_out"]:
        # Horner-like contraction: sum out i_0 against x, then each hidden layer against its
        # activation indicators, adding the bias paths that start there on the way.
        masks = self._hidden_split(pattern)
        acc = jnp.tensordot(z[0], x, axes=1)
        for k, mask in enumerate(masks):
            if self.biases is not None:
                acc = acc + z[k + 1]
            acc = jnp.tensordot(acc, mask.astype(acc.dtype), axes=1)
        if self.biases is not None:
            acc = acc + z[-1]
        return acc

    def rescale(self, mu: Float[Array, " hidden"]) -> "ReLUNetwork":
        ones_in = jnp.ones(self.widths[0], mu.dtype)
        ones_out = jnp.ones(self.widths[-1], mu.dtype)
        scales = [ones_in, *(jnp.exp(m) for m in self._hidden_split(mu)), ones_out]
        weights = tuple(
            w * scales[k + 1][:, None] / scales[k][None, :] for k, w in enumerate(self.weights)
        )
        biases = (
            None
            if self.biases is None
            else tuple(b * scales[k + 1] for k, b in enumerate(self.biases))
        )
        return eqx.tree_at(
            lambda n: (n.weights, n.biases), self, (weights, biases), is_leaf=lambda v: v is None
        )

    @classmethod
    def random(
        cls,
        key: Key,
        widths,
        *,
        bias: bool = False,
        scale: RealScalarLike = 1.0,
        max_paths: int = DEFAULT_MAX_PATHS,
    ) -> "ReLUNetwork":
        r"""Gaussian weights and biases with fan-in scaling.

        Entries of $W_k$ and $b_k$ have standard deviation `scale`$/\sqrt{n_{k-1}}$. Almost
        surely no parameter is zero (the dense set where the theory holds).

        **Arguments:** `key`; `widths` $(n_0, \dots, n_L)$, $L \ge 2$; `bias`; `scale`;
        `max_paths` (checked before anything is drawn).
        """
        widths = check_widths(widths, min_len=3)
        check_num_paths(_count_paths(widths, bias), max_paths, f"A ReLUNetwork of widths {widths}")
        keys = jax.random.split(check_key(key), 2 * (len(widths) - 1))
        std = [scale / math.sqrt(n) for n in widths[:-1]]
        weights = [
            std[k] * jax.random.normal(keys[2 * k], (widths[k + 1], widths[k]))
            for k in range(len(widths) - 1)
        ]
        biases = None
        if bias:
            biases = [
                std[k] * jax.random.normal(keys[2 * k + 1], (widths[k + 1],))
                for k in range(len(widths) - 1)
            ]
        return cls(weights, biases, max_paths=max_paths)


def _cumulative(sizes):
    total = 0
    for s in sizes:
        total += s
        yield total


def _count_paths(widths, bias: bool) -> int:
    count = math.prod(widths)
    if bias:
        count += sum(math.prod(widths[k:]) for k in range(1, len(widths)))
    return count
