"""`intrinsic sweep`: one example, one parameter swept, all flows as one ensemble."""

import os

import numpy as np

from . import _options
from ._report import number, write_json


def parse_param(spec: str) -> tuple[str, np.ndarray]:
    """`name=start:stop:num` → (name, the values as in `numpy.linspace(start, stop, num)`)."""
    name, values = _options.parse_param(spec)
    return name, np.asarray(values)


def request_devices(num: int | None) -> None:
    """Before JAX starts its backend: on a CPU-only machine, simulate `num` devices.

    XLA reads `XLA_FLAGS` when the first computation initialises the backend (not at
    `import jax`), so this works as long as nothing has run yet."""
    if num is None:
        return
    flag = f"--xla_force_host_platform_device_count={num}"
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


def _end_state(z, rtol=1e-6):
    """Summaries of a final z: numerical rank, nuclear norm, fraction of tiny entries."""
    z = np.asarray(z)
    if not np.all(np.isfinite(z)):
        return {"rank": None, "nuclear_norm": None, "sparsity": None}
    sigma = np.linalg.svd(z.reshape(z.shape[0], -1) if z.ndim > 1 else z[None], compute_uv=False)
    top = sigma[0] if sigma.size and sigma[0] > 0 else 1.0
    return {
        "rank": int(np.sum(sigma > rtol * top)),
        "nuclear_norm": float(np.sum(sigma)),
        "sparsity": float(np.mean(np.abs(z) <= rtol * np.max(np.abs(z)))) if z.size else 0.0,
    }


def _row(name, value, sol, b=None):
    """One member's summary; `b` indexes a batched solution."""
    import jax

    pick = (lambda x: x) if b is None else (lambda x: x[b])
    z_end = jax.tree.map(lambda x: pick(x)[-1], sol.zs)
    laws = [np.asarray(pick(h)) for h in jax.tree.leaves(sol.conserved)]
    with np.errstate(invalid="ignore"):
        drift = max((float(np.max(np.abs(h - h[:1]))) for h in laws), default=0.0)
    losses = np.asarray(pick(sol.losses))
    return {
        name: float(value),
        "final_loss": float(losses[-1]),
        "initial_loss": float(losses[0]),
        "succeeded": bool(pick(sol.succeeded)) and bool(np.isfinite(losses).all()),
        "steps": int(pick(sol.stats["num_steps"])),
        "conservation_drift": drift,
        **_end_state(jax.tree.leaves(z_end)[0]),
    }


def sweep(
    example,
    config: dict,
    name: str,
    values,
    *,
    mode: str,
    devices,
    out: str,
    chunks: int,
    progress: bool,
) -> dict:
    """Build `example` at each value of `config[name]`, integrate the Euclidean flows, and
    summarise the end states.

    `mode` (from `_options.sweep_mode`): `"ensemble"` for a value of the constructor (λ,
    the scale of a linear example), all members from one vmap and one
    `flows.euclidean_ensemble` (sharded over `devices` when given); `"loop"` for a
    parameter that changes the loss or the time span (the seed, t1, the ReLU example's
    scale), or any ReLU member (activation events do not run under vmap): each member
    with its own model, loss and t1, one `flows.euclidean_flow` after another (the
    losses are Modules, so the compiled flow is reused)."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(values), desc="flows", unit="flow")
    if mode == "ensemble":
        rows = _ensemble_rows(example, config, name, values, devices, chunks, bar)
    else:
        rows = _loop_rows(example, config, name, values, bar)
    if bar is not None:
        bar.close()
    failed = sum(not r["succeeded"] for r in rows)
    report = {
        "example": example.name,
        "status": "ok" if not failed else f"failed ({failed} of {len(rows)} members)",
        "config": {k: v for k, v in config.items() if k != name},
        "param": name,
        "mode": mode,
        "devices": devices,
        "rows": rows,
    }
    write_json(os.path.join(out, "sweep.json"), report)
    _plot(report, os.path.join(out, "sweep.png"))
    return report


def _options_of(t1):
    import diffrax as dfx
    import jax.numpy as jnp

    from flows import SaveAt

    return dict(
        saveat=SaveAt(ts=jnp.linspace(0.0, t1, 21)),
        stepsize_controller=dfx.PIDController(rtol=1e-8, atol=1e-8),
    )


def _cast(config, name, v):
    return int(v) if isinstance(config[name], int) else float(v)


def _loop_rows(example, config, name, values, bar):
    from flows import euclidean_flow

    rows = []
    for v in values:
        member = {**config, name: _cast(config, name, v)}
        model, loss = example.build_model(member), example.build_loss(member)
        sol = euclidean_flow(
            model, loss, 0.0, member["t1"], throw=False, **_options_of(member["t1"])
        )
        rows.append(_row(name, v, sol))
        if bar is not None:
            bar.update(1)
    return rows


def _ensemble_rows(example, config, name, values, devices, chunks, bar):
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from flows import euclidean_ensemble

    try:
        # λ and the scale are values of the constructor: every member from one vmapped
        # build (the seed, hence the key, is the same for all).
        batch = eqx.filter_vmap(lambda v: example.build_model({**config, name: v}))(
            jnp.asarray(values, jnp.result_type(float))
        )
    except Exception:
        # Under vmap a value check is an eqx.error_if, whose message names no value: find
        # the first member that the eager constructor refuses, and report it.
        for v in values:
            example.build_model({**config, name: float(v)})  # raises ValueError
        raise
    # Same seed, same data: one loss for all (λ and the scale do not enter the data).
    loss = example.build_loss(config)
    arrays, static = eqx.partition(batch, eqx.is_array)
    num_members = len(values)
    sharding = None
    if devices is not None:
        available = jax.devices()
        if devices > len(available):
            raise ValueError(
                f"--devices {devices}: only {len(available)} device(s) are visible "
                f"({available[0].platform}); on CPU, start a fresh process so that "
                "XLA_FLAGS=--xla_force_host_platform_device_count can take effect."
            )
        mesh = Mesh(np.array(available[:devices]), ("batch",))
        sharding = NamedSharding(mesh, PartitionSpec("batch"))
    t1 = config["t1"]
    step = -(-num_members // max(1, chunks))
    if devices is not None:  # whole multiples of the mesh: no padding inside a chunk
        step = -(-step // devices) * devices
    rows = []
    for lo in range(0, num_members, step):
        chunk = eqx.combine(jax.tree.map(lambda x, lo=lo: x[lo : lo + step], arrays), static)
        sol = jax.device_get(
            euclidean_ensemble(chunk, loss, 0.0, t1, sharding=sharding, **_options_of(t1))
        )
        rows += [_row(name, values[lo + b], sol, b) for b in range(sol.losses.shape[0])]
        if bar is not None:
            bar.update(min(step, num_members - lo))
    return rows


def _plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = report["param"]
    rows = report["rows"]
    x = [r[name] for r in rows]

    def ys(key, floor=None):
        vals = [float("nan") if r[key] is None else r[key] for r in rows]
        return vals if floor is None else [max(v, floor) for v in vals]

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), layout="constrained")
    axes[0].semilogy(x, ys("final_loss", 1e-300), ".-")
    axes[0].set(xlabel=name, ylabel="final loss f(z(t1))")
    axes[1].plot(x, ys("nuclear_norm"), ".-")
    axes[1].set(xlabel=name, ylabel="nuclear norm of z(t1)")
    axes[2].plot(x, ys("rank"), ".-")
    axes[2].set(xlabel=name, ylabel="numerical rank of z(t1)")
    axes[3].plot(x, ys("sparsity"), ".-")
    axes[3].set(xlabel=name, ylabel="fraction of zero entries of z(t1)")
    bad = [r[name] for r in rows if not r["succeeded"]]
    for ax in axes:
        for v in bad:
            ax.axvline(v, color="C3", alpha=0.3)
    title = f"intrinsic sweep {report['example']}: end states of the Euclidean flow"
    if bad:
        title += f" — FAILED for {len(bad)} of {len(rows)} members (red lines)"
    fig.suptitle(title, color="C3" if bad else "black")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_sweep(report) -> str:
    name = report["param"]
    head = f"{name:>9} {'final loss':>12} {'rank':>5} {'nuclear':>10} {'zeros':>6} {'drift':>9} {'steps':>6} ok"
    lines = [head, "-" * len(head)]
    nan = float("nan")
    for r in report["rows"]:
        rank = f"{r['rank']:5d}" if r["rank"] is not None else f"{'—':>5}"
        lines.append(
            f"{r[name]:9.4g} {number(r['final_loss'], '.4e', 12)} {rank} "
            f"{number(r['nuclear_norm'] if r['nuclear_norm'] is not None else nan, '.4f', 10)} "
            f"{number(r['sparsity'] if r['sparsity'] is not None else nan, '.2f', 6)} "
            f"{number(r['conservation_drift'], '.1e', 9)} {r['steps']:6d} "
            f"{'yes' if r['succeeded'] else 'FAILED'}"
        )
    return "\n".join(lines)
