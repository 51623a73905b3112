r"""Closed-form intrinsic metric of two-layer ReLU networks, neuron by neuron."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from models import AbstractReLUNetwork, ReLUNetwork

from ._intrinsic_metric import intrinsic_metric
from ._relu_metric import AbstractReLUMetric, ReLUPathMetric, _as_signs, check_network, guard
from ._relu_recovery import ReLURESULTS as RESULTS, network_at, ravel


class TwoLayerReLUMetric(AbstractReLUMetric):
    r"""Intrinsic metric of a two-layer [`models.ReLUNetwork`][], in closed form.

    Paths through different hidden neurons share no parameter, so $K$ is block-diagonal:
    one block per hidden neuron $j$, with outgoing weights $u_j \in \mathbb{R}^{n_2}$,
    incoming weights and bias $v_j \in \mathbb{R}^{n_0(+1)}$, paths
    $z_j = u_jv_j^\top$ (the input paths through $j$, and its bias paths as a last
    column) and law $c_j = \|v_j\|^2 - \|u_j\|^2$ (THEORY §3). With
    $s_j = \sqrt{c_j^2 + 4\|z_j\|^2}$, $\|v_j\|^2 = (s_j + c_j)/2$ and
    $\|u_j\|^2 = (s_j - c_j)/2$ (each computed without cancellation), and

    $$K_j(z_j)[X] = \frac{z_jz_j^\top X}{\|v_j\|^2} + \frac{X z_j^\top z_j}{\|u_j\|^2};$$

    the output-bias paths ($\Phi = b_2$) have the identity block.

    `recover(z)` is closed-form too: $v_j$ is $\pm\|v_j\|$ times the direction of the
    largest row of $z_j$ and $u_j = z_jv_j/\|v_j\|^2$, so $\Phi(\theta) = z$ always; of the
    two signs, the one that agrees best with the stored signs $\sigma$, weighted by
    magnitude ($\max_\pm \sum_e \sigma_e\theta_e$). When `consistent(z)`, these are exactly
    the stored signs. After a weight crossed zero this still picks the likely answer
    (the small weight changed sign, not all the others of its neuron), but only
    [`manifolds.AbstractReLUMetric.with_signs_from`][] at the crossing is certain.

    **Failures** (as [`manifolds.ReLUPathMetric`][], per `throw`): a neuron with
    $z_j = 0$ (off the dense set), or non-finite $z$.
    """

    network: ReLUNetwork
    laws: Float[Array, " hidden"]
    signs: Float[Array, " D"]
    path_signs: Float[Array, " paths"]
    throw: bool = eqx.field(static=True)

    def __init__(self, network: ReLUNetwork, *, throw: bool = True):
        r"""**Arguments:** `network`, a two-layer [`models.ReLUNetwork`][] at $\theta_0$;
        `throw`, raise on failure (`True`) or return NaN.

        **Raises:** `TypeError` for another network; `ValueError` for a depth other than
        two or a parameter exactly zero.
        """
        check_network(network)
        if not isinstance(network, ReLUNetwork) or network.depth != 2:
            raise ValueError(
                "TwoLayerReLUMetric needs a two-layer ReLUNetwork, got "
                f"{type(network).__name__}"
                + (f" of widths {network.widths}" if isinstance(network, ReLUNetwork) else "")
                + "; use ReLUPathMetric for other networks."
            )
        self.network = network
        self.laws = network.conservation_laws()
        self.signs = jnp.sign(ravel_pytree(eqx.filter(network, eqx.is_inexact_array))[0])
        self.path_signs = jnp.sign(ravel(network_at(network, self.signs).lift()))
        self.throw = bool(throw)

    def _neurons(self, z):
        # (n_1, n_2, n_0 [+1]): the block z_j = u_j v_jᵀ of each hidden neuron j.
        zt = jnp.transpose(z[0], (1, 0, 2))
        if self.network.bias:
            zt = jnp.concatenate([zt, jnp.transpose(z[1])[:, :, None]], axis=2)
        return zt

    def _paths(self, zt, out_bias):
        n0 = self.network.widths[0]
        inputs = jnp.transpose(zt[:, :, :n0], (1, 0, 2))
        if self.network.bias:
            return (inputs, jnp.transpose(zt[:, :, n0]), out_bias)
        return (inputs,)

    def _norms(self, zt, throw):
        c = self.laws
        sq = jnp.sum(zt**2, axis=(1, 2))
        s = jnp.sqrt(c**2 + 4 * sq)
        vv = jnp.where(c >= 0, (s + c) / 2, 2 * sq / (s - c))
        uu = jnp.where(c <= 0, (s - c) / 2, 2 * sq / (s + c))
        ok = jnp.all(sq > 0) & jnp.all(jnp.isfinite(zt))
        result = RESULTS.where(ok, RESULTS.successful, RESULTS.off_dense_set)
        return guard(vv, result, throw), uu, result

    def __call__(self, z: tuple[Float[Array, "..."], ...]) -> lx.FunctionLinearOperator:
        zt = self._neurons(z)
        vv, uu, _ = self._norms(zt, self.throw)
        left = jnp.einsum("jik,jlk->jil", zt, zt) / vv[:, None, None]  # u_j u_jᵀ
        right = jnp.einsum("jki,jkl->jil", zt, zt) / uu[:, None, None]  # v_j v_jᵀ

        def mv(x):
            xt = self._neurons(x)
            y = jnp.einsum("jil,jlm->jim", left, xt) + jnp.einsum("jil,jlm->jim", xt, right)
            return self._paths(y, x[-1] if self.network.bias else None)

        return lx.FunctionLinearOperator(
            mv,
            jax.eval_shape(lambda: z),
            tags=(lx.symmetric_tag, lx.positive_semidefinite_tag),
        )

    def recover(self, z: tuple[Float[Array, "..."], ...]) -> ReLUNetwork:
        return self._recover(z, self.throw)[0]

    def recover_with_result(
        self, z: tuple[Float[Array, "..."], ...]
    ) -> tuple[ReLUNetwork, RESULTS]:
        return self._recover(z, False)

    def _recover(self, z, throw):
        net = self.network
        zt = self._neurons(z)
        vv, _, result = self._norms(zt, throw)
        rows = jnp.sum(zt**2, axis=2)  # (n_1, n_2)
        best = jnp.take_along_axis(zt, jnp.argmax(rows, axis=1)[:, None, None], axis=1)[:, 0]
        v = best * jnp.sqrt(vv / jnp.sum(best**2, axis=1))[:, None]
        u = jnp.einsum("jik,jk->ji", zt, v) / vv[:, None]
        ref = network_at(net, self.signs)
        ref_v = (
            ref.weights[0]
            if ref.biases is None
            else jnp.concatenate([ref.weights[0], ref.biases[0][:, None]], axis=1)
        )
        agreement = jnp.sum(ref_v * v, axis=1) + jnp.sum(ref.weights[1].T * u, axis=1)
        flip = jnp.where(agreement < 0, -1.0, 1.0).astype(v.dtype)[:, None]
        v, u = v * flip, u * flip
        n0 = net.widths[0]
        weights = (v[:, :n0], jnp.transpose(u))
        biases = None if net.biases is None else (v[:, n0], z[-1])
        recovered = eqx.tree_at(
            lambda n: (n.weights, n.biases), net, (weights, biases), is_leaf=lambda x: x is None
        )
        return recovered, result

    def with_signs_from(
        self, z: tuple[Float[Array, "..."], ...], path_signs: PyTree[Array] | None = None
    ) -> "TwoLayerReLUMetric":
        if path_signs is not None:
            flat, unravel = ravel_pytree(z)
            z = unravel(jnp.abs(flat) * jnp.asarray(_as_signs(path_signs), flat.dtype))
        theta = ravel_pytree(eqx.filter(self.recover(z), eqx.is_inexact_array))[0]
        signs = jnp.sign(jnp.asarray(np.asarray(theta)))
        path_signs = jnp.sign(ravel(network_at(self.network, signs).lift()))
        return eqx.tree_at(lambda m: (m.signs, m.path_signs), self, (signs, path_signs))


@intrinsic_metric.register
def _(model: AbstractReLUNetwork, *, rtol: float | None = None) -> AbstractReLUMetric:
    # No balance condition: every level set of the laws has the metric (on the dense set).
    del rtol
    if isinstance(model, ReLUNetwork) and model.depth == 2:
        return TwoLayerReLUMetric(model)
    return ReLUPathMetric(model)
