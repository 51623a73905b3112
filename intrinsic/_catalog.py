"""The built-in examples as plain data: names, descriptions, default configurations.

Standard library only, so that `intrinsic list`, `--help` and argument errors answer before
JAX is imported; `_examples` attaches the functions that build each example.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """What the command knows about an example without building it."""

    name: str
    description: str
    defaults: dict
    # What `intrinsic sweep` may sweep, decided before JAX loads: `values` are array values
    # of the model's constructor (all members from one vmap, one ensemble); `data` change
    # the loss or the time span too (each member built and integrated on its own). Every
    # other parameter sets the shapes of θ or of the data, and is refused.
    values: frozenset = frozenset()
    data: frozenset = frozenset({"seed", "t1"})
    # Whether `model.lift()` is a polynomial in θ (the SymPy list of laws needs one).
    polynomial: bool = True


CATALOG = {
    e.name: e
    for e in (
        ExampleSpec(
            "diagonal",
            "Diagonal linear chain z = u_1 ⊙ ... ⊙ u_L on sparse regression "
            "(u_{j+1}^2 - u_j^2 = lam).",
            dict(n=6, depth=2, lam=0.5, scale=0.5, t1=20.0),
            values=frozenset({"lam", "scale"}),
        ),
        ExampleSpec(
            "two-layer-linear",
            "Two-layer linear net Z = U V^T, relaxed balanced (U^T U - V^T V = lam I), "
            "on low-rank regression.",
            dict(n=4, r=3, m=5, lam=0.5, scale=1.0, t1=10.0),
            values=frozenset({"lam", "scale"}),
        ),
        ExampleSpec(
            "deep-linear",
            "Deep linear net Z = W_L ... W_1 with square widths n, relaxed balanced "
            "(W_{j+1}^T W_{j+1} - W_j W_j^T = lam I), on low-rank regression.",
            dict(n=3, depth=3, lam=0.3, scale=1.0, t1=10.0),
            values=frozenset({"lam", "scale"}),
        ),
        ExampleSpec(
            "neural-ode",
            "Linear neural ODE x'(s) = A(s) x(s), A in Legendre polynomials of degree "
            "`degree`, relaxed balanced (H(s) = lam I up to the projection), on low-rank "
            "regression; the log-mean metric K(z).",
            dict(n=3, degree=10, lam=0.5, scale=1.0, t1=5.0),
            values=frozenset({"lam", "scale"}),
            polynomial=False,  # z = R(1) of a depth solve
        ),
        ExampleSpec(
            "relu",
            "ReLU network (layered, or a DAG with --skip I:J), student-teacher regression "
            "on Gaussian inputs; path-lifting z, metric K(z) = M(θ(z)); both flows stop "
            "and restart at each change of activation pattern on the data.",
            # Seed 2: four changes of activation pattern before t1 and no weight crossing
            # zero (where a neuron's whole path block can vanish and z forgets the
            # direction of its weights; see flows.intrinsic_flow).
            dict(widths=(2, 5, 1), bias=False, skip=(), samples=12, scale=1.0, t1=6.0, seed=2),
            # The scale also sets the teacher (the data); and flows with activation
            # events do not run under vmap: every ReLU member is integrated on its own.
            data=frozenset({"scale", "seed", "t1"}),
        ),
    )
}
DEFAULT_EXAMPLE = "two-layer-linear"
