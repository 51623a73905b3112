"""One attention head as a factorization: a new architecture in one file."""

# --8<-- [start:model]
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float

import manifolds
import models


class AttentionHead(models.AbstractFactorization):
    r"""One attention head: its output on tokens $x_1..x_T$ is
    $\sum_t \mathrm{softmax}_t(x^\top W_q^\top W_k x_t)\, W_oW_v x_t$, a function of
    $z = (W_q^\top W_k, W_oW_v)$ only."""

    Wq: Float[Array, "h d"]
    Wk: Float[Array, "h d"]
    Wv: Float[Array, "h d"]
    Wo: Float[Array, "d h"]

    def lift(self):
        return self.Wq.T @ self.Wk, self.Wo @ self.Wv

    def conservation_laws(self):
        return self.Wq @ self.Wq.T - self.Wk @ self.Wk.T, self.Wo.T @ self.Wo - self.Wv @ self.Wv.T

    @classmethod
    def random(cls, key, d: int, h: int) -> "AttentionHead":
        kq, kk, kv, ko = jax.random.split(key, 4)
        normal = lambda k, shape: jax.random.normal(k, shape) / jnp.sqrt(d)
        return cls(normal(kq, (h, d)), normal(kk, (h, d)), normal(kv, (h, d)), normal(ko, (d, h)))

    @classmethod
    def relaxed_balanced(cls, key, d: int, h: int, lam_qk, lam_ov) -> "AttentionHead":
        # Both products are two-layer linear nets: wrap their exact initializations.
        kqk, kov = jax.random.split(key)
        qk = models.TwoLayerLinear.relaxed_balanced(kqk, d, h, d, lam_qk)
        ov = models.TwoLayerLinear.relaxed_balanced(kov, d, h, d, lam_ov)
        return cls(qk.U.T, qk.V.T, ov.V.T, ov.U)


# --8<-- [end:model]


# --8<-- [start:metric]
class AttentionHeadMetric(manifolds.AbstractIntrinsicMetric):
    r"""$K(z) = K_{qk}(z_{qk}) \oplus K_{ov}(z_{ov})$: the two products do not share weights."""

    qk: manifolds.TwoLayerLinearMetric
    ov: manifolds.TwoLayerLinearMetric

    def __call__(self, z) -> lx.FunctionLinearOperator:
        k_qk, k_ov = self.qk(z[0]), self.ov(z[1])
        return lx.FunctionLinearOperator(
            lambda g: (k_qk.mv(g[0]), k_ov.mv(g[1])),
            jax.eval_shape(lambda: z),
            tags=(lx.symmetric_tag, lx.positive_semidefinite_tag),
        )


@manifolds.intrinsic_metric.register
def _(model: AttentionHead, *, rtol=None) -> AttentionHeadMetric:
    # Raises, as for TwoLayerLinear, unless both products are relaxed balanced.
    qk = models.TwoLayerLinear(model.Wq.T, model.Wk.T)
    ov = models.TwoLayerLinear(model.Wo, model.Wv.T)
    return AttentionHeadMetric(
        manifolds.intrinsic_metric(qk, rtol=rtol), manifolds.intrinsic_metric(ov, rtol=rtol)
    )


# --8<-- [end:metric]


def build(key):
    """For `intrinsic analyze attention_head:build`."""
    return AttentionHead.random(key, d=3, h=2)
