r"""Linear neural ODEs $x'(s) = A(s)x(s)$: the infinitely deep limit of deep linear networks."""

from collections.abc import Callable, Sequence

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._checks import as_float_array, check_finite, check_key, check_positive_int
from ._custom_types import Key, RealScalarLike
from ._depth_solve import (
    check_options,
    default_tolerance,
    options_of,
    resolve_adjoint,
    solve_in_depth,
)
from ._factorization import AbstractFactorization


def legendre_basis(s: RealScalarLike, size: int) -> Float[Array, " size"]:
    r"""$e_k(s) = \sqrt{2k+1}\,P_k(2s-1)$ for $k = 0, \dots,$ `size`$-1$.

    The shifted Legendre polynomials, normalised so that
    $\int_0^1 e_j(s)e_k(s)\,ds = \delta_{jk}$. Evaluated with the three-term recurrence
    $(k+1)P_{k+1}(x) = (2k+1)xP_k(x) - kP_{k-1}(x)$, which is stable on $[-1, 1]$.
    """
    x = 2 * jnp.asarray(s) - 1
    values = [jnp.ones_like(x)]
    previous, current = jnp.ones_like(x), x
    for k in range(1, size):
        values.append(current)
        previous, current = current, ((2 * k + 1) * x * current - k * previous) / (k + 1)
    norms = jnp.sqrt(2 * jnp.arange(size, dtype=x.dtype) + 1)
    return jnp.stack(values) * norms


def gauss_legendre(num: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Gauss–Legendre nodes and weights on $[0, 1]$ (exact for polynomials of degree
    $\le 2\,$`num`$-1$), as float64 NumPy arrays."""
    x, w = np.polynomial.legendre.leggauss(num)
    return (x + 1) / 2, w / 2


def _evaluate(coeffs, s):
    s = jnp.asarray(s, coeffs.dtype)
    return jnp.tensordot(legendre_basis(s, coeffs.shape[0]), coeffs, axes=1)


def _field(s, R, coeffs):
    # R' = A(s) R. The coefficients come in as `args` so that every adjoint,
    # BacksolveAdjoint included, differentiates with respect to them.
    return _evaluate(coeffs, s) @ R


def _project(values, nodes, weights, size):
    # c_k = ∫ e_k(s) A(s) ds by Gauss–Legendre quadrature: the L²([0,1]) projection.
    basis = jax.vmap(lambda s: legendre_basis(s, size))(jnp.asarray(nodes, values.dtype))
    w = jnp.asarray(weights, values.dtype)
    return jnp.einsum("q,qk,qij->kij", w, basis, values)


class _BalancedField(eqx.Module):
    # (R, Λ)' = (W(s)R, λ(s)) with W(s) = W₀ + e₁(s)W₁. A Module (not a closure) so that
    # diffrax's compiled solve is reused across calls with a constant λ.
    lam: Callable | None

    def __call__(self, s, y, args):
        R, _ = y
        W0, W1, lam = args
        W = W0 + jnp.sqrt(3.0) * (2 * s - 1) * W1
        rate = lam if self.lam is None else jnp.asarray(self.lam(s), R.dtype)
        return W @ R, rate


class LinearNeuralODE(AbstractFactorization):
    r"""A linear neural ODE $x'(s) = A(s)x(s)$, $s \in [0, 1]$, $A(s) \in \mathbb{R}^{n\times n}$.

    The lifting is the end-to-end map $z = \varphi(A) = R(1)$, $R' = A(s)R$, $R(0) = I$,
    computed with `diffrax.diffeqsolve`. With $\Phi(t, s) = R(t)R(s)^{-1}$ the transition
    matrix, $\partial\varphi(A)[\delta A] = \int_0^1 \Phi(1,s)\,\delta A(s)\,\Phi(s,0)\,ds$
    and the induced metric of the function-space model is
    $M(A)[X] = \int_0^1 \Phi(1,s)\Phi(1,s)^\top X\,\Phi(s,0)^\top\Phi(s,0)\,ds$.

    **Parametrisation.** $A(s) = \sum_{k=0}^{p} c_k\,e_k(s)$ with the normalised shifted
    Legendre polynomials $e_k(s) = \sqrt{2k+1}\,P_k(2s-1)$, an orthonormal basis of
    $L^2([0,1])$; the parameters $\theta$ are the coefficients $c_k \in \mathbb{R}^{n\times n}$
    (`coeffs`, shape $(p+1, n, n)$). Orthonormality is why this basis: the Euclidean
    gradient in $c$ is $\partial\ell/\partial c_k = \int_0^1 e_k(s)\,G(s)\,ds$ with
    $G = \nabla_{L^2}\ell$, i.e. the $L^2$-orthogonal projection of the function-space
    gradient $G(s) = \Phi(1,s)^\top\nabla f(z)\Phi(s,0)^\top$ onto the span of the basis. So
    the Euclidean flow on $c$ ([`flows.euclidean_flow`][]) is exactly the Galerkin
    approximation of the $L^2$ gradient flow $\partial_t A = -G$, and the induced metric
    of $c$ is $M_p = \partial\varphi\,P_p\,\partial\varphi^\top$ ($P_p$ the projection), which
    tends to $M(A)$ as $p$ grows (geometrically fast for analytic $A$: the error is the
    squared projection error of $G$). Legendre polynomials, unlike piecewise constants,
    make $A$ smooth, so $\partial_s A$ in the conservation law exists.

    **Conservation law.** One per depth, $H(s) = \partial_s(A + A^\top) + A^\top A - AA^\top$,
    the continuum limit of the deep linear laws with $W_j = I + A(s_j)/L$ (see
    [`models.DeepLinear.from_neural_ode`][]). It is exact for the function-space flow; for
    the Galerkin flow on $p + 1$ coefficients it is conserved up to the basis
    truncation (its drift shrinks as $p$ grows). $H$ is pointwise in $s$ and holds
    $\partial_s A$, so it is the most sensitive quantity: the truncation error of the
    gradient is largest at the ends of $[0, 1]$, and depth-solve errors in the high
    Legendre coefficients are amplified by $\partial_s e_k = O(k^2)$. Measured on the
    `intrinsic run neural-ode` problem ($n = 3$, $t_1 = 5$): $\max_t|H(t) - H(0)|$ is
    $2.7\cdot10^{-2}$ at $p = 10$ and $2.4\cdot10^{-3}$ at $p = 12$ (depth tolerances
    $10^{-12}$), while with the default depth tolerances the drift of
    $\operatorname{tr}H/n$ at $p = 12$ is $5.9\cdot10^{-4}$ instead of $7\cdot10^{-6}$: for
    degrees above about 10, tighten `rtol`/`atol` of the depth solve. The end-to-end
    map $z$ is much less sensitive (the two flows agree to $10^{-9}$ at $p = 10$).

    **Differentiation.** The depth solve is differentiated by the chosen `adjoint`. The
    default, `diffrax.DirectAdjoint()`, is the one under which every tool of the library
    works: `jax.grad`/`jax.vjp` (so [`flows.euclidean_flow`][]), `jax.jvp`/`jax.jacfwd`,
    and [`manifolds.induced_metric`][], which *transposes* a forward linearization
    (the Lie-algebra and kernel tests too). `RecursiveCheckpointAdjoint` and
    `BacksolveAdjoint` (less memory) are reverse mode only; `ForwardMode` (cheaper
    forward derivatives) supports `jax.jvp`/`jax.jacfwd` but not `induced_metric` (its
    tangent goes through a `while_loop`, which cannot be transposed).
    """

    coeffs: Float[Array, "basis n n"]
    solver: dfx.AbstractSolver
    adjoint: dfx.AbstractAdjoint
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    num_steps: int | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    s_grid: tuple[float, ...] = eqx.field(static=True)

    def __init__(
        self,
        coeffs,
        *,
        solver: dfx.AbstractSolver = dfx.Tsit5(),
        adjoint: dfx.AbstractAdjoint | str = dfx.DirectAdjoint(),
        rtol: RealScalarLike | None = None,
        atol: RealScalarLike | None = None,
        num_steps: int | None = None,
        max_steps: int = 4096,
        s_grid: int | Sequence[float] = 17,
    ):
        r"""**Arguments:**

        - `coeffs`: the Legendre coefficients $(c_0, \dots, c_p)$ of $A$, shape
          $(p+1, n, n)$.
        - `solver`: the diffrax solver of the depth solve (default `Tsit5`).
        - `adjoint`: how the depth solve is differentiated, any
          `diffrax.AbstractAdjoint`: `diffrax.DirectAdjoint()` (default; forward and
          reverse mode and `induced_metric`; memory $O(\text{max\_steps})$ in reverse
          mode), `diffrax.RecursiveCheckpointAdjoint()` (reverse mode only; memory
          $O(\log N)$ in the number of steps $N$), `diffrax.BacksolveAdjoint()` (reverse
          mode only; memory $O(1)$; solves the adjoint ODE backwards, so its gradient is
          accurate to the tolerances only), `diffrax.ForwardMode()` (`jax.jvp`/`jacfwd`
          only). The names `"direct"` etc. are deprecated.
        - `rtol`, `atol`: tolerances of the adaptive depth solve; default
          $10^{-2}\sqrt{\varepsilon}$ of the dtype ($1.5\cdot10^{-10}$ in float64).
        - `num_steps`: if given, take exactly this many equal steps instead (any
          solver, tolerances ignored).
        - `max_steps`: step budget of the adaptive solve.
        - `s_grid`: where [`models.LinearNeuralODE.conservation_laws`][] evaluates
          $H(s)$: a number of equispaced points in $[0, 1]$ (endpoints included), or the
          points themselves.

        **Raises:** `ValueError` for coefficients that are not a stack of square
        matrices or not finite (under `jit`: an `equinox.EquinoxRuntimeError` when the
        computation runs), an unknown adjoint name, bad tolerances, step counts or grid;
        `TypeError` for non-float coefficients, a non-diffrax solver or an `adjoint` that
        is not a `diffrax.AbstractAdjoint`.
        """
        coeffs = as_float_array(coeffs, "coeffs")
        if coeffs.ndim != 3 or coeffs.shape[1] != coeffs.shape[2] or coeffs.shape[0] < 1:
            raise ValueError(
                "`coeffs` must have shape (degree + 1, n, n): one square n x n matrix per "
                f"basis function, got shape {coeffs.shape}."
            )
        self.coeffs = check_finite(coeffs, "coeffs")
        self.solver = solver
        self.adjoint = resolve_adjoint(adjoint)
        self.rtol, self.atol, self.num_steps, self.max_steps = check_options(
            solver, rtol, atol, num_steps, max_steps, coeffs.dtype
        )
        self.s_grid = _check_grid(s_grid)

    @property
    def n(self) -> int:
        """The width $n$."""
        return self.coeffs.shape[-1]

    @property
    def degree(self) -> int:
        """The polynomial degree $p$ of $A$ (the basis has $p + 1$ functions)."""
        return self.coeffs.shape[0] - 1

    def A(self, s: RealScalarLike) -> Float[Array, "n n"]:
        r"""$A(s) = \sum_k c_k e_k(s)$ at one depth $s$ (vmap it for a grid)."""
        return _evaluate(self.coeffs, s)

    def lift(self) -> Float[Array, "n n"]:
        r"""$z = R(1)$, $R' = A(s)R$, $R(0) = I$."""
        return solve_in_depth(
            _field, jnp.eye(self.n, dtype=self.coeffs.dtype), self.coeffs, **options_of(self)
        )

    def transition_matrices(self, ts: Float[Array, " T"]) -> Float[Array, "T n n"]:
        r"""$R(s) = \Phi(s, 0)$ at the depths `ts` (non-decreasing, in $[0, 1]$)."""
        ts = jnp.asarray(ts, self.coeffs.dtype)
        return solve_in_depth(
            _field, jnp.eye(self.n, dtype=self.coeffs.dtype), self.coeffs, ts=ts, **options_of(self)
        )

    def conservation_laws(
        self, s_grid: Float[Array, " grid"] | None = None
    ) -> Float[Array, "grid n n"]:
        r"""$H(s) = \partial_s(A + A^\top)(s) + A(s)^\top A(s) - A(s)A(s)^\top$ on a grid of depths.

        **Arguments:** `s_grid`, the depths (default: the model's `s_grid`).

        **Returns:** an array of shape `(len(s_grid), n, n)`, symmetric matrices.
        """
        grid = self.s_grid if s_grid is None else s_grid
        grid = jnp.asarray(grid, self.coeffs.dtype)

        def law(s):
            a, da = jax.jvp(self.A, (s,), (jnp.ones_like(s),))
            return da + da.T + a.T @ a - a @ a.T

        return jax.vmap(law)(grid)

    def balance_residual(self, s_grid: Float[Array, " grid"] | None = None) -> Float[Array, ""]:
        r"""How far from relaxed balance: $\max_s \|H(s) - \hat\lambda(s)I\|_F$ on the grid.

        $\hat\lambda(s) = \operatorname{tr}H(s)/n$ is the best multiple of the identity, so
        the residual is zero exactly when $H(s) = \lambda(s)I$ on the grid. For
        [`models.LinearNeuralODE.relaxed_balanced`][] it is the projection residual of
        the construction onto the polynomial basis.
        """
        H = self.conservation_laws(s_grid)
        lam = jnp.trace(H, axis1=1, axis2=2) / self.n
        eye = jnp.eye(self.n, dtype=H.dtype)
        return jnp.max(jnp.linalg.norm(H - lam[:, None, None] * eye[None], axis=(1, 2)))

    @classmethod
    def from_function(
        cls, fn: Callable, degree: int, *, num_nodes: int | None = None, **options
    ) -> "LinearNeuralODE":
        r"""Project $s \mapsto A(s)$ onto the basis: $c_k = \int_0^1 e_k(s)A(s)\,ds$.

        The integrals are Gauss–Legendre quadratures with `num_nodes` nodes (default
        $\max(64, 2p + 20)$), exact when $A$ is a polynomial of degree $\le 2\,$`num_nodes`$-1-p$.

        **Arguments:** `fn`, a JAX-traceable function of one depth $s$ returning an
        $n\times n$ matrix; `degree` $= p \ge 0$; `options`, those of the constructor.
        """
        degree = _check_degree(degree)
        nodes, weights = gauss_legendre(_num_nodes(num_nodes, degree))
        values = jax.vmap(fn)(jnp.asarray(nodes, jnp.result_type(float)))
        return cls(_project(values, nodes, weights, degree + 1), **options)

    @classmethod
    def random(
        cls, key: Key, n: int, degree: int, *, scale: RealScalarLike = 1.0, **options
    ) -> "LinearNeuralODE":
        r"""Gaussian coefficients, entries of standard deviation
        `scale`$/\sqrt{n(p+1)}$, so that $\mathbb{E}\int_0^1\|A(s)x\|^2ds = $
        `scale`$^2\|x\|^2$. A generic point: $H(s)$ is not a multiple of $I$."""
        n = check_positive_int(n, "n")
        degree = _check_degree(degree)
        c = jax.random.normal(check_key(key), (degree + 1, n, n))
        return cls(scale * c / np.sqrt(n * (degree + 1)), **options)

    @classmethod
    def relaxed_balanced(
        cls,
        key: Key,
        n: int,
        *,
        degree: int,
        lam: RealScalarLike | Callable = 0.0,
        scale: RealScalarLike = 1.0,
        skew_scale: RealScalarLike = 1.0,
        num_nodes: int | None = None,
        **options,
    ) -> "LinearNeuralODE":
        r"""A generic init with $H(s) = \lambda(s)I$, projected onto the basis.

        Write $A = S + W$ with $S$ symmetric and $W$ skew; then
        $H = 2S' + 2[S, W]$. For any skew $W(s)$, symmetric $S_0$ and $\lambda(s)$, let
        $R' = WR$, $R(0) = I$ (so $R(s)$ is orthogonal) and $\Lambda' = \lambda$,
        $\Lambda(0) = 0$; then $S(s) = R(s)\big(S_0 + \tfrac12\Lambda(s)I\big)R(s)^\top$ gives
        $H(s) = \lambda(s)I$ exactly. Here $W(s) = W_0 + e_1(s)W_1$ with random skew $W_0$,
        $W_1$ (entries of size `skew_scale`$/\sqrt n$) and $S_0$ random symmetric (size
        `scale`$/\sqrt n$). $A$ is evaluated at Gauss–Legendre nodes (a tight depth solve
        for $R$, $\Lambda$) and projected onto the polynomials of degree $p$ (see
        [`models.LinearNeuralODE.from_function`][]).

        $S(s)$ is not a polynomial, so the projected model is relaxed balanced only up to
        the projection residual, reported by
        [`models.LinearNeuralODE.balance_residual`][]; it decreases geometrically fast
        with the degree ($A$ is analytic). $W$ is represented exactly when $p \ge 1$.

        **Arguments:**

        - `key`: a JAX PRNG key.
        - `n`: the width.
        - `degree`: the polynomial degree $p \ge 0$ of the basis.
        - `lam`: $\lambda$, a constant or a JAX-traceable function of $s$.
        - `scale`, `skew_scale`: sizes of $S_0$ and of $W$.
        - `num_nodes`: quadrature nodes of the projection (default $\max(64, 2p + 20)$).
        - `options`: those of the constructor (solver, adjoint, tolerances, `s_grid`).
        """
        n = check_positive_int(n, "n")
        degree = _check_degree(degree)
        dtype = jnp.result_type(float)
        ks, k0, k1 = jax.random.split(check_key(key), 3)

        def skew(k):
            g = jax.random.normal(k, (n, n), dtype)
            return skew_scale * (g - g.T) / (2 * np.sqrt(n))

        g = jax.random.normal(ks, (n, n), dtype)
        S0 = scale * (g + g.T) / (2 * np.sqrt(n))
        W0, W1 = skew(k0), (skew(k1) if degree >= 1 else jnp.zeros((n, n), dtype))
        if callable(lam):
            field, rate = _BalancedField(lam), jnp.zeros((), dtype)
        else:
            field, rate = _BalancedField(None), jnp.asarray(lam, dtype)
        nodes, weights = gauss_legendre(_num_nodes(num_nodes, degree))
        tol = 1e-2 * default_tolerance(dtype)
        R, Lam = solve_in_depth(
            field,
            (jnp.eye(n, dtype=dtype), jnp.zeros((), dtype)),
            (W0, W1, rate),
            ts=jnp.asarray(nodes, dtype),
            solver=dfx.Tsit5(),
            adjoint=dfx.RecursiveCheckpointAdjoint(),
            rtol=tol,
            atol=tol,
            num_steps=None,
            max_steps=16_384,
        )
        eye = jnp.eye(n, dtype=dtype)
        S = R @ (S0[None] + 0.5 * Lam[:, None, None] * eye[None]) @ jnp.swapaxes(R, 1, 2)
        x = jnp.asarray(2 * nodes - 1, dtype)[:, None, None]
        A = S + W0[None] + jnp.sqrt(3.0) * x * W1[None]
        return cls(_project(A, nodes, weights, degree + 1), **options)


def _check_degree(degree) -> int:
    if isinstance(degree, bool) or int(degree) != degree or int(degree) < 0:
        raise ValueError(f"`degree` must be a non-negative integer, got {degree!r}.")
    return int(degree)


def _num_nodes(num_nodes, degree) -> int:
    # At least 64 nodes, so that every degree up to 22 reuses one compiled depth solve.
    if num_nodes is None:
        return max(64, 2 * degree + 20)
    return check_positive_int(num_nodes, "num_nodes")


def _check_grid(s_grid) -> tuple[float, ...]:
    if isinstance(s_grid, (int, np.integer)) and not isinstance(s_grid, bool):
        if s_grid < 2:
            raise ValueError(f"`s_grid` as a number of points must be at least 2, got {s_grid}.")
        return tuple(float(x) for x in np.linspace(0.0, 1.0, int(s_grid)))
    grid = np.asarray(s_grid, dtype=float)
    if grid.ndim != 1 or grid.size < 1 or np.any(grid < 0) or np.any(grid > 1):
        raise ValueError(
            "`s_grid` must be a number of points or a 1-D sequence of depths in [0, 1], "
            f"got {s_grid!r}."
        )
    return tuple(float(x) for x in grid)
