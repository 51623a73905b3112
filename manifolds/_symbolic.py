r"""Exact polynomial conservation laws and the induced metric, with SymPy.

A polynomial $h$ is a conservation law iff $\langle\nabla h, \nabla\varphi_i\rangle \equiv 0$ as a
polynomial, for every $i$. Writing $h = \sum_\alpha c_\alpha\theta^\alpha$ over the monomials of
degree $1..k$, every coefficient of every $\langle\nabla h, \nabla\varphi_i\rangle$ is linear in
$c$; the laws are the nullspace of that sparse integer system, computed exactly over
$\mathbb{Q}$. The lifting $\varphi$ itself is recovered exactly from JAX (see
`manifolds/_symbolic_lift.py` for why that route and not symbolic tracing).
"""

import dataclasses
import itertools as it
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import sympy
from jaxtyping import Array, Float, Int, PyTree
from sympy.polys.domains import QQ
from sympy.polys.matrices import DomainMatrix
from sympy.polys.rings import ring

from models import AbstractFactorization

from ._lifting import lifting_function
from ._symbolic_lift import PolynomialLift, check_degree, polynomial_lift

# Largest number of candidate monomials (unknowns c_α): C(D + k, k) - 1 for D parameters.
MAX_MONOMIALS = 20_000
# Largest d²·D for `symbolic_induced_metric`: d² entries, each a sum of D products.
MAX_METRIC_SIZE = 2**16


class _LawValues(eqx.Module):
    # h(θ) = C · (θ^α)_α, each monomial a product of entries of (θ, 1) (index D is the 1).
    coefficients: Float[Array, "laws monomials"]
    indices: Int[Array, "monomials degree"]
    treedef: object = eqx.field(static=True)
    shapes: tuple = eqx.field(static=True)

    def __call__(self, model: AbstractFactorization) -> Float[Array, " laws"]:
        leaves, treedef = jax.tree.flatten(eqx.filter(model, eqx.is_inexact_array))
        shapes = tuple(leaf.shape for leaf in leaves)
        if treedef != self.treedef or shapes != self.shapes:
            raise ValueError(
                f"`model` must have the structure and parameter shapes of the model the laws "
                f"were computed for, {self.shapes}; got {type(model).__name__} with {shapes}."
            )
        flat = jnp.concatenate([jnp.ravel(leaf) for leaf in leaves])
        flat = jnp.concatenate([flat, jnp.ones(1, flat.dtype)])
        return self.coefficients.astype(flat.dtype) @ jnp.prod(flat[self.indices], axis=1)


@dataclasses.dataclass(frozen=True, eq=False)
class PolynomialConservationLaws:
    r"""The result of [`manifolds.polynomial_conservation_laws`][]: a basis of the polynomial
    conservation laws of degree $\le k$, as SymPy expressions.

    A plain frozen dataclass (not an `eqx.Module`): it holds SymPy objects, not arrays.

    - `symbols`: θ's PyTree (the model's floating-point leaves, `None` elsewhere) with each
      leaf an object array of `sympy.Symbol`s named after the field path and index:
      `U[0, 1]` ↦ `U_0_1`, `weights[1][2, 0]` ↦ `weights_1_2_0`, `factors[0][3]` ↦ `factors_0_3`.
    - `variables`: the same symbols in θ's flat (`ravel_pytree`) order.
    - `lifting`: $\varphi$ in its natural shape, as object arrays of SymPy polynomials.
    - `degree`: $k$.
    - `monomials`: the monomials $\theta^\alpha$ that occur in the laws.
    - `coefficients`: integer `sympy.ImmutableMatrix` $C$ with `laws[i]` $=\sum_\alpha C_{i\alpha}$
      `monomials[α]`, in reduced row echelon form up to scaling of its rows (each row has a
      pivot monomial absent from the other laws; rows are primitive integer vectors).
    - `laws`: tuple of the SymPy expressions $h_i$; an empty tuple when there is none.
    """

    symbols: PyTree
    variables: tuple
    lifting: PyTree
    degree: int
    monomials: tuple
    coefficients: sympy.ImmutableMatrix
    laws: tuple
    _lift: PolynomialLift = dataclasses.field(repr=False)
    _indices: np.ndarray = dataclasses.field(repr=False)

    def latex(self) -> str:
        r"""The laws as a LaTeX `aligned` block, one `h_i &= ...` line each, with symbols typeset
        as e.g. `U_{0,1}` and `\mathrm{weights}_{1,2,0}`."""
        names = self._lift.latex_names
        lines = [
            rf"h_{{{i + 1}}} &= {sympy.latex(law, symbol_names=names)}"
            for i, law in enumerate(self.laws)
        ] or [rf"&\text{{no polynomial conservation law of degree}} \le {self.degree}"]
        return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"

    def to_jax(self) -> _LawValues:
        r"""A callable `model -> Float[Array, " laws"]` giving $(h_i(\theta))_i$ in the active
        floating dtype, for any model of the same structure and shapes. It is an `eqx.Module`
        (monomial index and coefficient arrays), so it works under `jit`, `vmap` and `grad`."""
        coefficients = np.array(self.coefficients.tolist(), dtype=np.float64)
        return _LawValues(
            jnp.asarray(coefficients.reshape(len(self.laws), len(self.monomials))),
            jnp.asarray(self._indices),
            self._lift.treedef,
            self._lift.shapes,
        )


def _monomials(D: int, degree: int) -> np.ndarray:
    r"""The candidate monomials as rows of variable indices, padded with $D$ (the constant 1);
    graded order, degree 1 first, so that echelon pivots fall on low degrees and first
    variables."""
    count = math.comb(D + degree, degree) - 1
    if count > MAX_MONOMIALS:
        raise ValueError(
            f"`degree`={degree} with D={D} parameters gives {count} candidate monomials, more "
            f"than MAX_MONOMIALS={MAX_MONOMIALS}; use a smaller degree or model."
        )
    blocks = []
    for k in range(1, degree + 1):
        idx = np.array(list(it.combinations_with_replacement(range(D), k)), np.int32)
        blocks.append(np.pad(idx, ((0, 0), (0, degree - k)), constant_values=D))
    return np.concatenate(blocks)


def _system(lift: PolynomialLift, combos: np.ndarray) -> DomainMatrix:
    r"""The matrix $A$ with $Ac = 0$ iff $\sum_\alpha c_\alpha\theta^\alpha$ is a law: row
    $(i, \gamma)$ is the coefficient of $\theta^\gamma$ in $\langle\nabla h, \nabla\varphi_i\rangle$,
    where $\partial_j\theta^\alpha\,\partial_j\theta^\beta = \alpha_j\beta_j\theta^{\alpha+\beta-2e_j}$."""
    D = len(lift.variables)
    mono = np.zeros((len(combos), D + 1), np.int64)  # exponents (and a padding column)
    np.add.at(mono, (np.arange(len(combos))[:, None], combos), 1)
    mono = mono[:, :D]
    # Scale each φ_i to integer coefficients (its equations are homogeneous in φ_i).
    coef = np.empty(len(lift.coefficients), dtype=object)
    for i in np.unique(lift.outputs):
        terms = np.flatnonzero(lift.outputs == i)
        lcm = math.lcm(*(lift.coefficients[t].denominator for t in terms))
        coef[terms] = [int(lift.coefficients[t] * lcm) for t in terms]
    keys, cols, vals = [], [], []
    for j in range(D):
        a, b = np.flatnonzero(mono[:, j]), np.flatnonzero(lift.exponents[:, j])
        gamma = mono[a][:, None, :] + lift.exponents[b][None, :, :]
        gamma[..., j] -= 2
        out = np.broadcast_to(lift.outputs[b][None, :, None], (len(a), len(b), 1))
        keys.append(np.concatenate([out, gamma], axis=-1).reshape(-1, D + 1))
        cols.append(np.repeat(a, len(b)))
        weights = (mono[a, j][:, None] * lift.exponents[b, j][None, :]).astype(object)
        vals.append((weights * coef[b][None, :]).reshape(-1))
    keys = np.concatenate(keys)
    _, rows = np.unique(keys, axis=0, return_inverse=True)
    entries: dict[tuple[int, int], int] = {}
    for r, c, v in zip(
        rows.reshape(-1).tolist(), np.concatenate(cols).tolist(), np.concatenate(vals)
    ):
        entries[r, c] = entries.get((r, c), 0) + v
    dod: dict[int, dict[int, object]] = {}
    for (r, c), v in entries.items():
        if v:
            dod.setdefault(r, {})[c] = QQ(v)
    return DomainMatrix(dod, (len(keys) and int(rows.max()) + 1, len(combos)), QQ)


def _primitive(row: dict, position: dict) -> dict[int, int]:
    # A rational row as the primitive integer vector on the same line (same sign).
    scale = math.lcm(*(int(v.denominator) for v in row.values()))
    ints = {c: int(v * scale) for c, v in row.items()}
    g = math.gcd(*ints.values())
    return {position[c]: v // g for c, v in ints.items()}


def polynomial_conservation_laws(
    model: AbstractFactorization, degree: int = 2, *, max_lift_degree: int = 8
) -> PolynomialConservationLaws:
    r"""A basis, exact over $\mathbb{Q}$, of the polynomial conservation laws of degree $\le k$.

    These are the non-constant polynomials $h$ of degree at most $k$ with
    $\nabla h(\theta) \perp \nabla\varphi_i(\theta)$ for every $i$ and every $\theta$, so that
    $h(\theta(t))$ is constant along the gradient flow of any loss $f(\varphi(\theta))$.
    Products of laws are laws, so a basis of degree $\le 4$ contains e.g. $(u^2 - v^2)^2$.

    For `TwoLayerLinear` and $k = 2$ they span the entries of $U^\top U - V^\top V$; for
    `DeepLinear`, those of every $h_j = W_{j+1}^\top W_{j+1} - W_jW_j^\top$.

    **Arguments:**

    - `model`: a [`models.AbstractFactorization`][] whose `lift()` is a polynomial in θ (only
      its structure and shapes matter, not its values).
    - `degree`: $k \ge 1$.
    - `max_lift_degree`: the largest degree of $\varphi$ tried before it is declared not
      polynomial.

    **Returns:** a [`manifolds.PolynomialConservationLaws`][].

    **Raises:** `TypeError` if `model` is not a factorization or a degree is not an int;
    `ValueError` for a degree below 1, a lifting that is not polynomial of degree $\le$
    `max_lift_degree`, or more than `MAX_MONOMIALS` (20 000) candidate monomials.

    !!! note
        $\varphi$ is read off its Taylor expansion at $\theta = 0$ (nested `jax.jvp`s), its
        degree certified at random points, so `lift()` must be traceable at $\theta = 0$; no
        SymPy tracing of `lift()` is needed, and `jnp` functions are fine. The laws then cost
        an exact sparse elimination with $\binom{D+k}{k} - 1$ unknowns: well under a second
        for $k = 2$ and $D \le 50$ once compiled.
    """
    _, theta = lifting_function(model)  # raises TypeError for a non-factorization
    degree = check_degree(degree, "degree")
    D = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(theta))
    combos = _monomials(D, degree)
    lift = polynomial_lift(model, max_lift_degree)
    kernel = _system(lift, combos).nullspace().rref()[0].to_sdm()
    used = sorted({c for row in kernel.values() for c in row})
    rows = [_primitive(kernel[r], {c: p for p, c in enumerate(used)}) for r in sorted(kernel)]
    monomials = tuple(sympy.Mul(*(lift.variables[j] for j in combos[c] if j < D)) for c in used)
    coefficients = sympy.ImmutableMatrix(
        len(rows), len(used), lambda i, p: sympy.Integer(rows[i].get(p, 0))
    )
    laws = tuple(sympy.Add(*(v * monomials[p] for p, v in sorted(row.items()))) for row in rows)
    indices = combos[used].reshape(len(used), degree)
    return PolynomialConservationLaws(
        lift.symbols,
        lift.variables,
        lift.lifting,
        degree,
        monomials,
        coefficients,
        laws,
        lift,
        indices,
    )


def symbolic_induced_metric(
    model: AbstractFactorization, *, max_lift_degree: int = 8
) -> sympy.ImmutableMatrix:
    r"""The induced metric $M(\theta) = \partial\varphi(\theta)\partial\varphi(\theta)^\top$ as an
    exact $d\times d$ SymPy matrix, $M_{ik} = \sum_j \partial_j\varphi_i\,\partial_j\varphi_k$.

    Rows and columns follow $\mathrm{vec}\,\varphi$ in `ravel_pytree` order (row-major), and
    the symbols are those of [`manifolds.polynomial_conservation_laws`][] (`U_0_1`, ...).

    **Arguments:** `model`, a factorization with a polynomial lifting; `max_lift_degree` as in
    [`manifolds.polynomial_conservation_laws`][].

    **Raises:** `ValueError` if $d^2 D$ exceeds `MAX_METRIC_SIZE` ($2^{16}$; e.g. `TwoLayerLinear`
    with $(n, r, m) = (5, 3, 5)$ has $d^2D = 18750$) or the lifting is not polynomial;
    `TypeError` if `model` is not a factorization.
    """
    phi, theta = lifting_function(model)
    D = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(theta))
    d = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(jax.eval_shape(phi, theta)))
    if d * d * D > MAX_METRIC_SIZE:
        raise ValueError(
            f"`model` is too big for symbolic_induced_metric: d²·D = {d}²·{D} = {d * d * D} "
            f"exceeds MAX_METRIC_SIZE={MAX_METRIC_SIZE}; use manifolds.induced_metric instead."
        )
    lift = polynomial_lift(model, max_lift_degree)
    R, *gens = ring(lift.variables, QQ)
    terms = [{} for _ in range(d)]
    for o, e, c in zip(lift.outputs, lift.exponents, lift.coefficients, strict=True):
        terms[o][tuple(int(p) for p in e)] = QQ(c.numerator, c.denominator)
    grads = []  # grads[i][j] = ∂_j φ_i, only for the variables φ_i depends on
    for i, poly in enumerate(R.from_dict(t) for t in terms):
        support = np.flatnonzero(lift.exponents[lift.outputs == i].any(axis=0))
        grads.append({int(j): poly.diff(gens[j]) for j in support})
    entries = {}
    for i, k in it.combinations_with_replacement(range(d), 2):
        common = grads[i].keys() & grads[k].keys()
        entries[i, k] = entries[k, i] = sum((grads[i][j] * grads[k][j] for j in common), R.zero)
    return sympy.ImmutableMatrix(d, d, lambda i, k: entries[i, k].as_expr())
