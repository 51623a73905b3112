r"""The exact polynomial form of a lifting: SymPy symbols for $\theta$ and the coefficients of $\varphi$.

**How $\varphi$ is recovered (and why this route).** Tracing `lift()` with NumPy object arrays of
SymPy symbols would be exact, but it only works for models written with `@`, `*` and
`functools.reduce`: any `jnp` function (and the runtime type checks on `lift`'s annotations)
rejects object arrays. Instead we use JAX itself: a polynomial is its Taylor expansion at 0,

$$\varphi_i(\theta) = \sum_\alpha \frac{\partial^\alpha\varphi_i(0)}{\alpha!}\,\theta^\alpha,$$

and the mixed partials $\partial^\alpha\varphi(0)$ are nested `jax.jvp`s along coordinate
directions, one per sorted multi-index (so $\binom{D+k-1}{k}$ per order $k$, not $D^k$). At
$\theta = 0$ along one-hot directions the floating-point arithmetic of a polynomial with small
integer coefficients only adds and multiplies small integers, so the coefficients come out exact.
Orders are added until the truncated polynomial reproduces $\varphi$ at a few random points to
rounding accuracy; that check certifies the degree, and its failure up to `max_lift_degree`
(or non-finite derivatives at 0) is how a non-polynomial lifting (`jnp.tanh`, norms, …) is
reported. Each coefficient is then read as the simplest rational within rounding of its value.
"""

import dataclasses
import itertools as it
import math
import re
from fractions import Fraction

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import sympy
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PyTree

from models import AbstractFactorization

from ._lifting import lifting_function

# Largest number of floats one Taylor order may hold: (multi-indices) × (d + k·D), the outputs
# and the one-hot directions of the batched nested jvps.
MAX_TAYLOR_ENTRIES = 2**24
# Random points at which a truncated expansion must reproduce φ to certify its degree.
_NUM_CHECKS = 3


@dataclasses.dataclass(frozen=True, eq=False)
class PolynomialLift:
    """$\\varphi$ as a sparse polynomial: term $t$ adds `coefficients[t]·θ^exponents[t]` to the
    flat output `outputs[t]` (flat orders are those of `ravel_pytree`)."""

    symbols: PyTree  # θ's structure, each leaf an object array of SymPy symbols
    variables: tuple  # the symbols in θ's flat order
    latex_names: dict  # symbol -> LaTeX, for `sympy.latex(..., symbol_names=...)`
    lifting: PyTree  # φ's structure, each leaf an object array of SymPy expressions
    outputs: np.ndarray  # (T,) int
    exponents: np.ndarray  # (T, D) int
    coefficients: tuple  # (T,) Fraction
    degree: int
    treedef: object  # of θ: what `to_jax` accepts
    shapes: tuple  # of θ's leaves


def check_degree(value, name: str) -> int:
    # A bool is an int to Python, never a degree.
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"`{name}` must be an int, got {value!r} of type {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"`{name}` must be at least 1, got {value}.")
    return int(value)


def _names(path) -> tuple[str, str, list[str]]:
    # Field names and sequence/dict keys joined by "_", then the entry's indices, e.g.
    # `.weights[1]` entry (2, 0) -> "weights_1_2_0", LaTeX "\mathrm{weights}_{1,2,0}".
    words, numbers = [], []
    for key in path:
        part = getattr(key, "name", getattr(key, "key", getattr(key, "idx", key)))
        (numbers if isinstance(part, int) else words).append(str(part))
    base = re.sub(r"\W", "_", "_".join(words)) or "theta"
    escaped = base.replace("_", r"\_")
    tex = base if len(base) == 1 else rf"\mathrm{{{escaped}}}"
    return base, tex, numbers


def _symbols(theta):
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(theta)
    arrays, variables, latex_names = [], [], {}
    for path, leaf in leaves_with_paths:
        base, tex, numbers = _names(path)
        arr = np.empty(leaf.shape, dtype=object)
        for index in np.ndindex(*leaf.shape):
            subscript = numbers + [str(i) for i in index]
            sym = sympy.Symbol("_".join([base, *subscript]))
            arr[index] = sym
            latex_names[sym] = tex + (f"_{{{','.join(subscript)}}}" if subscript else "")
        arrays.append(arr)
        variables.extend(arr.reshape(-1))
    if len(set(variables)) != len(variables):
        raise ValueError(
            "`model`: two parameters get the same symbol name from their field paths "
            f"({[str(v) for v in variables]}); rename a field so that names are unique."
        )
    symbols = jax.tree_util.tree_unflatten(treedef, arrays)
    return symbols, tuple(variables), latex_names, treedef


def _along(g, v):
    return lambda x: jax.jvp(g, (x,), (v,))[1]


@eqx.filter_jit
def _taylor_block(phi, theta: PyTree[Array], idx: Int[Array, "n k"]) -> Float[Array, "n d"]:
    # Row r: the mixed partial of vec φ at 0 along coordinates idx[r, 0], ..., idx[r, k-1].
    flat, unravel = ravel_pytree(theta)
    f = lambda x: ravel_pytree(phi(unravel(x)))[0]

    def partial(index):
        g = f
        for j in range(idx.shape[1]):
            g = _along(g, jax.nn.one_hot(index[j], flat.size, dtype=flat.dtype))
        return g(jnp.zeros_like(flat))

    return jax.vmap(partial)(idx)


@eqx.filter_jit
def _values(phi, theta: PyTree[Array], points: Float[Array, "p D"]) -> Float[Array, "p d"]:
    _, unravel = ravel_pytree(theta)
    return jax.vmap(lambda x: ravel_pytree(phi(unravel(x)))[0])(points)


def _rational(value: float, eps: float) -> Fraction:
    simple = Fraction(value).limit_denominator(1000)
    return simple if abs(float(simple) - value) <= 4 * eps * abs(value) else Fraction(value)


def _taylor_terms(phi, theta, d: int, max_lift_degree: int):
    # Add Taylor orders k = 0, 1, ... until the truncated expansion reproduces φ at random
    # points; return (outputs, exponents, float coefficients, degree).
    flat, _ = ravel_pytree(theta)
    D, dtype = flat.size, flat.dtype
    eps = float(jnp.finfo(dtype).eps)
    rng = np.random.default_rng(0)
    points = rng.uniform(0.5, 1.5, (_NUM_CHECKS, D)) * rng.choice([-1.0, 1.0], (_NUM_CHECKS, D))
    targets = np.asarray(_values(phi, theta, jnp.asarray(points, dtype)), np.float64)
    outputs, exponents, values = [], [], []
    for k in range(max_lift_degree + 1):
        count = math.comb(D + k - 1, k)
        if count * (d + k * D) > MAX_TAYLOR_ENTRIES:
            raise ValueError(
                f"`model.lift()` was not certified polynomial up to degree {k - 1}, and order "
                f"{k} needs {count} mixed partials of a d={d} output in D={D} variables: "
                f"{count} × (d + k·D) > MAX_TAYLOR_ENTRIES={MAX_TAYLOR_ENTRIES}. Use a smaller model."
            )
        idx = np.array(list(it.combinations_with_replacement(range(D), k)), np.int32)
        block = np.asarray(_taylor_block(phi, theta, jnp.asarray(idx.reshape(count, k))))
        if not np.all(np.isfinite(block)):
            raise ValueError(
                f"`model.lift()` has non-finite derivatives of order {k} at θ = 0, so it is not "
                "a polynomial in θ; the symbolic routines need a polynomial lifting."
            )
        exps = np.zeros((count, D), np.int64)
        np.add.at(exps, (np.arange(count)[:, None], idx), 1)
        factorials = np.array([math.prod(math.factorial(e) for e in row) for row in exps])
        rows, cols = np.nonzero(block)
        outputs.append(cols)
        exponents.append(exps[rows])
        values.append(block[rows, cols] / factorials[rows])
        out, ex, co = (np.concatenate(x) for x in (outputs, exponents, values))
        terms = co * np.prod(points[:, None, :] ** ex[None], axis=-1)  # (points, terms)
        approx, scale = np.zeros_like(targets), np.zeros_like(targets)
        np.add.at(approx.T, out, terms.T)
        np.add.at(scale.T, out, np.abs(terms).T)  # bounds the rounding error of `approx`
        if np.all(np.abs(approx - targets) <= 1e3 * eps * (1 + scale + np.abs(targets))):
            return out, ex, co, k
    raise ValueError(
        f"`model.lift()` is not a polynomial in θ of degree ≤ max_lift_degree={max_lift_degree}: "
        "its Taylor expansion at 0 truncated there does not reproduce it at random points. "
        "The symbolic routines need a polynomial lifting (no jnp.tanh, norms, division by "
        "parameters, ...); raise `max_lift_degree` if its degree is just higher."
    )


def polynomial_lift(model: AbstractFactorization, max_lift_degree: int) -> PolynomialLift:
    """Recover $\\varphi$ exactly as a polynomial in symbols named after θ's field paths."""
    phi, theta = lifting_function(model)
    max_lift_degree = check_degree(max_lift_degree, "max_lift_degree")
    symbols, variables, latex_names, treedef = _symbols(theta)
    if not variables:
        raise ValueError("`model` has no floating-point parameters: θ is empty.")
    out_leaves, out_treedef = jax.tree.flatten(jax.eval_shape(phi, theta))
    d = sum(math.prod(leaf.shape) for leaf in out_leaves)
    out, ex, co, degree = _taylor_terms(phi, theta, d, max_lift_degree)
    eps = float(jnp.finfo(ravel_pytree(theta)[0].dtype).eps)
    coefficients = tuple(_rational(float(c), eps) for c in co)
    summands = [[] for _ in range(d)]
    for o, e, c in zip(out, ex, coefficients, strict=True):
        summands[o].append(
            sympy.Rational(c.numerator, c.denominator)
            * sympy.Mul(*(variables[j] ** int(e[j]) for j in np.flatnonzero(e)))
        )
    exprs = np.empty(d, dtype=object)
    exprs[:] = [sympy.Add(*terms) for terms in summands]
    sizes = np.cumsum([math.prod(leaf.shape) for leaf in out_leaves])[:-1]
    lifting = jax.tree.unflatten(
        out_treedef,
        [a.reshape(leaf.shape) for a, leaf in zip(np.split(exprs, sizes), out_leaves, strict=True)],
    )
    shapes = tuple(leaf.shape for leaf in jax.tree.leaves(theta))
    return PolynomialLift(
        symbols, variables, latex_names, lifting, out, ex, coefficients, degree, treedef, shapes
    )
