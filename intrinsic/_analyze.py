"""`intrinsic analyze`: conservation laws and intrinsic-dynamics verdicts for one model."""

import importlib

import jax
import numpy as np

import manifolds
from models import AbstractFactorization

# Print the laws symbolically up to this many parameters (SymPy is exact but not fast).
SYMBOLIC_MAX_PARAMETERS = 40


def load_factorization(spec: str, key) -> AbstractFactorization:
    """Load `module:attribute`: a factorization, or a callable `key -> factorization`."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected a built-in example or `module:attribute`, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import module {module_name!r} from {spec!r}: {e}") from None
    try:
        obj = module
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(obj, AbstractFactorization) and callable(obj):
        try:
            obj = obj(key)
        except Exception as e:
            raise ValueError(
                f"{spec!r} must be a models.AbstractFactorization or a callable key -> one; "
                f"calling it with a PRNG key raised {type(e).__name__}: {e}"
            ) from None
    if not isinstance(obj, AbstractFactorization):
        raise ValueError(
            f"{spec!r} must be a models.AbstractFactorization or a callable key -> one, "
            f"got {type(obj).__name__}"
        )
    return obj


def analyze(
    model: AbstractFactorization,
    *,
    key,
    symbolic: bool | None = None,
    max_depth: int | None = None,
) -> dict:
    """Every verdict of `manifolds` on `model`, as a JSON-ready dict.

    The Lie algebra trace goes `max_depth` bracket levels at most (`None`: until a level
    adds nothing). Recoverability and kernel inclusion use the complete laws, i.e. the
    Lie algebra: when it is undecided, so are they (`None`, with the reason), rather
    than recomputed without the bound."""
    phi, theta = manifolds.lifting_function(model)
    num_params = sum(int(np.size(x)) for x in jax.tree.leaves(theta))
    dim = sum(int(np.size(x)) for x in jax.tree.leaves(jax.eval_shape(phi, theta)))
    trace = manifolds.lie_algebra_trace(model, key=key, max_depth=max_depth)
    report = {
        "model": type(model).__name__,
        "num_parameters": num_params,
        "lifted_dimension": dim,
        "span_rank": trace.span_rank,
        "lie_dimensions_per_level": list(trace.dimensions_per_level),
        "lie_dimension": trace.dimension,
        "num_conservation_laws": trace.num_conservation_laws,
        "frobenius": trace.frobenius,
        "lie_converged": trace.converged,
        "lie_reason": trace.reason,
        "rank_tolerance": trace.tolerance,
        "singular_value_gap": trace.singular_value_gap,
    }
    if trace.converged:
        rec = manifolds.recoverability_test(model, key=key)
        report["recoverability"] = {
            "holds": rec.holds,
            "kernel_dimension": rec.kernel_dimension,
            "tolerance": rec.tolerance,
        }
        inc = manifolds.kernel_inclusion_test(model, key=key)
        report["kernel_inclusion"] = {
            "holds": inc.holds,
            "residual": inc.residual,
            "kernel_dimension": inc.kernel_dimension,
            "tolerance": inc.tolerance,
        }
    else:
        undecided = {"holds": None, "kernel_dimension": None, "tolerance": trace.tolerance}
        report["recoverability"] = dict(undecided)
        report["kernel_inclusion"] = {**undecided, "residual": None}
    if symbolic is None:
        symbolic = num_params <= SYMBOLIC_MAX_PARAMETERS
    if symbolic:
        laws = manifolds.polynomial_conservation_laws(model, degree=2)
        report["polynomial_laws_degree_2"] = [str(law) for law in laws.laws]
    return report


def format_report(report: dict) -> str:
    def verdict(flag):
        return {True: "yes", False: "no", None: "undecided"}[flag]

    lines = [
        f"model: {report['model']}",
        f"parameters D = {report['num_parameters']}, lifted dimension d = "
        f"{report['lifted_dimension']}, rank ∂φ = {report['span_rank']}",
        "dim Lie(W) per bracket level: "
        + " → ".join(str(k) for k in report["lie_dimensions_per_level"])
        + f" (converged: {verdict(report['lie_converged'])}"
        + (f"; {report['lie_reason'].rstrip('.')}" if report["lie_reason"] else "")
        + f"; rank tolerance {report['rank_tolerance']:.1e}, singular-value gap "
        f"{report['singular_value_gap']:.1e})",
        "number of conservation laws: "
        + (
            str(report["num_conservation_laws"])
            if report["num_conservation_laws"] is not None
            else "undecided (at most "
            f"{report['num_parameters'] - report['lie_dimensions_per_level'][-1]})"
        ),
        f"Frobenius (Lie(W) = W): {verdict(report['frobenius'])}",
    ]
    rec, inc = report["recoverability"], report["kernel_inclusion"]
    if rec["holds"] is None:
        lines.append(
            "recoverability and kernel inclusion: undecided (they need the complete Lie "
            "algebra, which is undecided)"
        )
    else:
        lines += [
            "recoverability (ker ∂φ ∩ ker ∂h = {0}): "
            f"{verdict(rec['holds'])} (kernel dimension {rec['kernel_dimension']})",
            "kernel inclusion (ker ∂φ ∩ ker ∂h ⊆ ker ∂M): "
            f"{verdict(inc['holds'])} (residual {inc['residual']:.2e}, tolerance "
            f"{inc['tolerance']:.1e}, kernel dimension {inc['kernel_dimension']})",
        ]
    if "polynomial_laws_degree_2" in report:
        lines.append("polynomial conservation laws of degree ≤ 2 (a basis):")
        lines += [f"    {law}" for law in report["polynomial_laws_degree_2"]]
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    return "\n".join(lines)
