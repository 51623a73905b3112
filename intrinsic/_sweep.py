"""`intrinsic sweep`: one example, one parameter swept, all flows as one ensemble."""

import json
import os

import numpy as np


def parse_param(spec: str) -> tuple[str, np.ndarray]:
    """`name=start:stop:num` → (name, `numpy.linspace(start, stop, num)`)."""
    name, sep, rng = spec.partition("=")
    parts = rng.split(":")
    if not sep or not name or len(parts) != 3:
        raise ValueError(
            f"--param must look like name=start:stop:num (e.g. lam=-1:1:101), got {spec!r}"
        )
    try:
        start, stop, num = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(
            f"--param {spec!r}: start and stop must be numbers, num an integer"
        ) from None
    if num < 1 or not np.isfinite([start, stop]).all():
        raise ValueError(f"--param {spec!r}: need finite start, stop and num >= 1")
    return name, np.linspace(start, stop, num)


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
    sigma = np.linalg.svd(z.reshape(z.shape[0], -1) if z.ndim > 1 else z[None], compute_uv=False)
    top = sigma[0] if sigma.size and sigma[0] > 0 else 1.0
    return {
        "rank": int(np.sum(sigma > rtol * top)),
        "nuclear_norm": float(np.sum(sigma)),
        "sparsity": float(np.mean(np.abs(z) <= rtol * np.max(np.abs(z)))) if z.size else 0.0,
    }


def sweep(
    example, config: dict, name: str, values, *, devices, out: str, chunks: int, progress: bool
) -> dict:
    """Build `example` at each value of `config[name]`, integrate every Euclidean flow
    as one ensemble (sharded over `devices` when given), and summarise the end states."""
    import diffrax as dfx
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from flows import SaveAt, euclidean_ensemble, stack

    if name not in config:
        raise ValueError(
            f"--param {name}: example {example.name!r} has no parameter {name!r}; it has "
            + ", ".join(sorted(k for k in config if k != "seed"))
        )
    cast = type(config[name])
    if name in example.values:
        # λ and the scale are values of the constructor: every member from one vmapped
        # build (the seed, hence the key, is the same for all).
        batch = eqx.filter_vmap(lambda v: example.build_model({**config, name: v}))(
            jnp.asarray(values, jnp.result_type(float))
        )
    else:
        # A static parameter (a width, a depth, a flag), or the ReLU example's scale,
        # which also sets its teacher: the members are built one by one.
        batch = stack([example.build_model({**config, name: cast(v)}) for v in values])
    # Same seed, same data: one loss for all (built at the first value).
    loss = example.build_loss({**config, name: cast(values[0])})
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
    ts = jnp.linspace(0.0, t1, 21)
    step = -(-num_members // max(1, chunks))
    if devices is not None:  # whole multiples of the mesh: no padding inside a chunk
        step = -(-step // devices) * devices
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_members, desc="flows", unit="flow")
    solutions = []
    for lo in range(0, num_members, step):
        chunk = eqx.combine(jax.tree.map(lambda x, lo=lo: x[lo : lo + step], arrays), static)
        sol = euclidean_ensemble(
            chunk,
            loss,
            0.0,
            t1,
            saveat=SaveAt(ts=ts),
            stepsize_controller=dfx.PIDController(rtol=1e-8, atol=1e-8),
            sharding=sharding,
        )
        solutions.append(jax.device_get(sol))
        if bar is not None:
            bar.update(min(step, num_members - lo))
    if bar is not None:
        bar.close()
    rows = []
    for sol in solutions:
        for b in range(sol.losses.shape[0]):
            z_end = jax.tree.map(lambda x, b=b: x[b, -1], sol.zs)
            drift = (
                max(float(np.max(np.abs(h[b] - h[b, :1]))) for h in jax.tree.leaves(sol.conserved))
                if jax.tree.leaves(sol.conserved)
                else 0.0
            )
            rows.append(
                {
                    name: float(values[len(rows)]),
                    "final_loss": float(sol.losses[b, -1]),
                    "initial_loss": float(sol.losses[b, 0]),
                    "succeeded": bool(sol.succeeded[b]),
                    "steps": int(sol.stats["num_steps"][b]),
                    "conservation_drift": drift,
                    **_end_state(jax.tree.leaves(z_end)[0]),
                }
            )
    report = {
        "example": example.name,
        "config": {k: v for k, v in config.items() if k != name},
        "param": name,
        "devices": devices,
        "rows": rows,
    }
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "sweep.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    _plot(report, os.path.join(out, "sweep.png"))
    return report


def _plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = report["param"]
    x = [r[name] for r in report["rows"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    axes[0].semilogy(x, [max(r["final_loss"], 1e-300) for r in report["rows"]], ".-")
    axes[0].set(xlabel=name, ylabel="final loss")
    axes[1].plot(x, [r["nuclear_norm"] for r in report["rows"]], ".-")
    axes[1].set(xlabel=name, ylabel="nuclear norm of z(t1)")
    axes[2].plot(x, [r["rank"] for r in report["rows"]], ".-", label="numerical rank")
    axes[2].plot(x, [r["sparsity"] for r in report["rows"]], ".--", label="fraction of zeros")
    axes[2].set(xlabel=name)
    axes[2].legend()
    fig.suptitle(f"intrinsic sweep {report['example']}: end states of the Euclidean flow")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_sweep(report) -> str:
    name = report["param"]
    head = f"{name:>9} {'final loss':>12} {'rank':>5} {'nuclear':>10} {'zeros':>6} {'drift':>9} {'steps':>6} ok"
    lines = [head, "-" * len(head)]
    for r in report["rows"]:
        lines.append(
            f"{r[name]:9.4f} {r['final_loss']:12.4e} {r['rank']:5d} {r['nuclear_norm']:10.4f} "
            f"{r['sparsity']:6.2f} {r['conservation_drift']:9.1e} {r['steps']:6d} "
            f"{'yes' if r['succeeded'] else 'NO'}"
        )
    return "\n".join(lines)
