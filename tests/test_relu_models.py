"""ReLU networks (layered and DAG): forward pass, path-lifting, laws, rescalings, errors."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import manifolds
import models

from .helpers import dense_jacobian, dense_laws_jacobian

# Two hidden layers (2, 3) -> (4, 5), output 6, with skips input -> second hidden layer,
# first hidden layer -> output and input -> output.
SKIP_EDGES = [(0, 2), (1, 2), (0, 3), (1, 3), (2, 4), (3, 4), (2, 5), (3, 5)]
SKIP_EDGES += [(0, 4), (1, 5), (4, 6), (5, 6), (2, 6), (0, 6)]
# A deeper, irregular DAG: 3 inputs, 5 hidden, 2 outputs, skips of every length.
IRREGULAR_EDGES = [(0, 3), (1, 3), (1, 4), (2, 4), (3, 5), (4, 5), (0, 6), (5, 6), (3, 7)]
IRREGULAR_EDGES += [(6, 7), (7, 8), (2, 8), (4, 9), (6, 9), (7, 9), (5, 8), (1, 9)]

NETWORKS = {
    "mlp-2-3-2": lambda k: models.ReLUNetwork.random(k, (2, 3, 2)),
    "mlp-bias-3-4-2": lambda k: models.ReLUNetwork.random(k, (3, 4, 2), bias=True),
    "mlp-2-3-4-2": lambda k: models.ReLUNetwork.random(k, (2, 3, 4, 2)),
    "mlp-bias-2-3-2-2-1": lambda k: models.ReLUNetwork.random(k, (2, 3, 2, 2, 1), bias=True),
    "dag-skip": lambda k: models.ReLUDAG.random(k, 2, 4, 1, SKIP_EDGES),
    "dag-skip-bias": lambda k: models.ReLUDAG.random(k, 2, 4, 1, SKIP_EDGES, bias=True),
    "dag-irregular-bias": lambda k: models.ReLUDAG.random(k, 3, 5, 2, IRREGULAR_EDGES, bias=True),
}


def _graph_of(net):
    """(n_in, n_hidden, n_out, edges, parameter of each edge, bias parameters) of any net."""
    if isinstance(net, models.ReLUDAG):
        return net.n_inputs, net.n_hidden, net.n_outputs, list(net.edges)
    widths = net.widths
    off = np.cumsum((0,) + widths)
    edges = [
        (int(off[k - 1] + j), int(off[k] + i))
        for k in range(1, len(widths))
        for i in range(widths[k])
        for j in range(widths[k - 1])
    ]
    return widths[0], sum(widths[1:-1]), widths[-1], edges


def _flat_params(net):
    # Layered nets: the DAG's parameter order (rows of every W_k, then the biases).
    if isinstance(net, models.ReLUDAG):
        w, b = np.asarray(net.weights), net.biases
    else:
        w = np.concatenate([np.asarray(x).ravel() for x in net.weights])
        b = None if net.biases is None else jnp.concatenate(net.biases)
    return w, None if b is None else np.asarray(b)


def _brute_force_paths(net):
    """Every path by depth-first search: {node sequence: [parameter indices]}."""
    n_in, n_hid, n_out, edges = _graph_of(net)
    n = n_in + n_hid + n_out
    out = {v: [(e, t) for e, (s, t) in enumerate(edges) if s == v] for v in range(n)}
    paths = {}

    def dfs(v, nodes, params):
        if v >= n_in + n_hid:
            paths[tuple(nodes)] = params
        for e, t in out[v]:
            dfs(t, nodes + [t], params + [e])

    for i in range(n_in):
        dfs(i, [i], [])
    if net.biases is not None:
        for v in range(n_in, n):
            dfs(v, [v], [len(edges) + v - n_in])
    return paths


def _brute_force_lift(net):
    w, b = _flat_params(net)
    theta = w if b is None else np.concatenate([w, b])
    return {nodes: np.prod(theta[params]) for nodes, params in _brute_force_paths(net).items()}


def _as_dag(net):
    return net if isinstance(net, models.ReLUDAG) else models.ReLUDAG.from_network(net)


def _flat_jnp(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_forward_pass_equals_path_formula(name, getkey):
    net = NETWORKS[name](getkey())
    xs = jax.random.normal(getkey(), (16, net.n_inputs))

    @jax.jit
    def run(net, xs):
        z = net.lift()
        patterns = jax.vmap(net.activation_pattern)(xs)
        via_lift = jax.vmap(lambda x, a: net.predict_from_lift(z, a, x))(xs, patterns)
        # Linear in z: its gradient (at z = 0) paired with z gives the same output.
        zero = jax.tree.map(jnp.zeros_like, z)
        grads = jax.grad(lambda zz: jnp.sum(net.predict_from_lift(zz, patterns[0], xs[0])))(zero)
        total = sum(jnp.vdot(g, zz) for g, zz in zip(jax.tree.leaves(grads), jax.tree.leaves(z)))
        return jax.vmap(net)(xs), via_lift, patterns, total

    out, via_lift, patterns, total = run(net, xs)
    np.testing.assert_allclose(via_lift, out, rtol=1e-12, atol=1e-12)
    assert patterns.shape == (16, net.num_hidden) and patterns.dtype == bool
    assert 0 < np.mean(patterns) < 1  # both sides of the kinks are exercised
    np.testing.assert_allclose(total, jnp.sum(out[0]), rtol=1e-12)


def test_forward_pass_by_hand():
    w1 = jnp.array([[1.0, -2.0], [0.5, 1.0]])
    w2 = jnp.array([[3.0, -1.0]])
    b = (jnp.array([0.25, -4.0]), jnp.array([0.5]))
    net = models.ReLUNetwork([w1, w2], b)
    x = jnp.array([1.0, 0.5])  # pre-activations (0.25, -3.0): the second neuron is off
    np.testing.assert_allclose(net.preactivations(x), [0.25, -3.0])
    np.testing.assert_allclose(net(x), [3.0 * 0.25 + 0.5])
    assert net.num_paths == 4 + 2 + 1 and net.num_hidden == 2


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_lift_equals_brute_force_paths(name, getkey):
    net = NETWORKS[name](getkey())
    reference = _brute_force_lift(net)
    assert net.num_paths == len(reference)
    dag = _as_dag(net)
    paths = dag.paths()
    assert sorted(paths) == sorted(reference)
    np.testing.assert_allclose(dag.lift(), [reference[p] for p in paths], rtol=1e-13)
    np.testing.assert_allclose(_flat(net.lift()), dag.lift(), rtol=1e-13)
    # Input paths first; a bias path starts at a non-input node.
    starts_at_input = [p[0] < dag.n_inputs for p in paths]
    assert starts_at_input == sorted(starts_at_input, reverse=True)
    assert sum(starts_at_input) == dag.num_input_paths


def test_layered_lift_shapes_and_entries(getkey):
    net = models.ReLUNetwork.random(getkey(), (2, 3, 4, 2), bias=True)
    inputs, *biases = net.lift()
    w1, w2, w3 = net.weights
    b1, b2, b3 = net.biases
    assert inputs.shape == (2, 4, 3, 2)
    assert [b.shape for b in biases] == [(2, 4, 3), (2, 4), (2,)]
    for i3, i2, i1, i0 in itertools.product(range(2), range(4), range(3), range(2)):
        expected = w3[i3, i2] * w2[i2, i1] * w1[i1, i0]
        np.testing.assert_allclose(inputs[i3, i2, i1, i0], expected, rtol=1e-13)
    np.testing.assert_allclose(biases[0], np.einsum("ab,bc,c->abc", w3, w2, b1), rtol=1e-13)
    np.testing.assert_allclose(biases[1], w3 * b2[None, :], rtol=1e-13)
    np.testing.assert_allclose(biases[2], b3)
    assert len(models.ReLUNetwork.random(getkey(), (2, 3, 2)).lift()) == 1


@pytest.mark.parametrize("name", ["mlp-bias-2-3-2-2-1", "mlp-2-3-4-2"])
def test_dag_from_network_agrees(name, getkey):
    net = NETWORKS[name](getkey())
    dag = models.ReLUDAG.from_network(net)
    xs = jax.random.normal(getkey(), (8, net.n_inputs))
    mu = jax.random.normal(getkey(), (net.num_hidden,))
    x = jax.tree.map(lambda t: jax.random.normal(getkey(), t.shape), net)
    x_dag = models.ReLUDAG.from_network(x)

    @jax.jit
    def both(n, x, xs, mu):
        pattern = n.activation_pattern(xs[0])
        return (
            jax.vmap(n)(xs),
            jax.vmap(n.preactivations)(xs),
            n.conservation_laws(),
            _flat_jnp(n.rescale(mu).lift()),
            _flat_jnp(n.log_lift(x)),
            n.predict_from_lift(n.lift(), pattern, xs[0]),
        )

    for a, b in zip(both(dag, x_dag, xs, mu), both(net, x, xs, mu)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def _laws_by_hand(net, mu=None):
    n_in, n_hid, n_out, edges = _graph_of(net)
    w, b = _flat_params(net)
    node_mu = np.zeros(n_in + n_hid + n_out)
    if mu is not None:
        node_mu[n_in : n_in + n_hid] = mu
    laws = np.zeros(n_hid)
    for e, (s, t) in enumerate(edges):
        sq = w[e] ** 2 * np.exp(2 * (node_mu[t] - node_mu[s]))
        if n_in <= t < n_in + n_hid:
            laws[t - n_in] += sq
        if n_in <= s < n_in + n_hid:
            laws[s - n_in] -= sq
    if b is not None:
        laws += b[:n_hid] ** 2 * np.exp(2 * node_mu[n_in : n_in + n_hid])
    return laws


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_laws_formula_and_rescaling(name, getkey):
    net = NETWORKS[name](getkey())
    np.testing.assert_allclose(net.conservation_laws(), _laws_by_hand(net), rtol=1e-12)
    mu = 0.5 * jax.random.normal(getkey(), (net.num_hidden,))
    rescaled = jax.jit(lambda n, m: n.rescale(m))(net, mu)
    # The rescalings are the fibre of Φ (and of the function), and move the laws.
    np.testing.assert_allclose(_flat(rescaled.lift()), _flat(net.lift()), rtol=1e-12)
    xs = jax.random.normal(getkey(), (5, net.n_inputs))
    outputs = jax.jit(lambda a, b: (jax.vmap(a)(xs), jax.vmap(b)(xs)))(rescaled, net)
    np.testing.assert_allclose(*outputs, rtol=1e-12)
    np.testing.assert_allclose(
        rescaled.conservation_laws(), _laws_by_hand(net, np.asarray(mu)), rtol=1e-12
    )
    assert np.max(np.abs(rescaled.conservation_laws() - net.conservation_laws())) > 1e-2


@pytest.mark.parametrize("name", ["mlp-2-3-2", "mlp-bias-2-3-2-2-1", "dag-skip-bias"])
def test_laws_orthogonal_to_loss_gradients(name, getkey):
    net = NETWORKS[name](getkey())
    phi, theta = manifolds.lifting_function(net)
    dh = eqx.filter_jit(dense_laws_jacobian)(net)
    assert dh.shape == (net.num_hidden, ravel_pytree(theta)[0].size)
    num_paths = ravel_pytree(net.lift())[0].size
    a = jax.random.normal(getkey(), (2, num_paths + 2, num_paths)) / np.sqrt(num_paths)
    b = jax.random.normal(getkey(), (2, num_paths + 2))
    # Random quadratic losses of z, and a loss on the network's outputs (a regression).
    xs = jax.random.normal(getkey(), (6, net.n_inputs))
    ys = jax.random.normal(getkey(), (6, net.n_outputs))
    skeleton = eqx.filter(net, eqx.is_inexact_array, inverse=True)

    @eqx.filter_jit
    def gradients(theta):
        def of_z(p, a, b):
            return 0.5 * jnp.sum((a @ ravel_pytree(phi(p))[0] - b) ** 2)

        batched = jax.vmap(jax.grad(of_z), in_axes=(None, 0, 0))(theta, a, b)
        grads = [jax.tree.map(lambda g, i=i: g[i], batched) for i in range(2)]
        regression = lambda p: jnp.sum((jax.vmap(eqx.combine(p, skeleton))(xs) - ys) ** 2)
        grads.append(jax.grad(regression)(theta))
        return [ravel_pytree(g)[0] for g in grads]

    for grad in gradients(theta):
        assert np.linalg.norm(grad) > 1e-3
        assert np.max(np.abs(dh @ grad)) <= 1e-12 * np.linalg.norm(grad) * np.max(np.abs(dh))


def _dense_incidence(net):
    paths = _brute_force_paths(net)
    dag = _as_dag(net)
    num_params = ravel_pytree(eqx.filter(dag, eqx.is_inexact_array))[0].size
    b = np.zeros((len(paths), num_params))
    for row, nodes in enumerate(dag.paths()):
        b[row, paths[nodes]] = 1.0
    return b


@pytest.mark.parametrize("name", ["mlp-bias-3-4-2", "mlp-2-3-4-2", "dag-irregular-bias"])
def test_log_lift_is_the_incidence_matrix(name, getkey):
    net = NETWORKS[name](getkey())
    b = _dense_incidence(net)
    dag = _as_dag(net)
    np.testing.assert_array_equal(dag.incidence().todense(), b)
    params = eqx.filter(net, eqx.is_inexact_array)
    x = jax.tree.map(lambda t: jax.random.normal(getkey(), t.shape), params)
    x_dag = x if net is dag else models.ReLUDAG.from_network(x)
    x_flat = ravel_pytree(eqx.filter(x_dag, eqx.is_inexact_array))[0]
    y_flat = jax.random.normal(getkey(), (b.shape[0],))
    y = ravel_pytree(net.lift())[1](y_flat)

    @jax.jit
    def apply(net, params, x, y):
        # B x, and Bᵀ y through jax.linear_transpose.
        return net.log_lift(x), jax.linear_transpose(net.log_lift, params)(y)[0]

    bx, bt = apply(net, params, x, y)
    np.testing.assert_allclose(_flat(bx), b @ x_flat, rtol=1e-12)
    bt_dag = bt if net is dag else models.ReLUDAG.from_network(bt)
    np.testing.assert_allclose(
        ravel_pytree(eqx.filter(bt_dag, eqx.is_inexact_array))[0], b.T @ y_flat, rtol=1e-12
    )
    # log|Φ(θ)| = B log|θ|.
    logs = jax.tree.map(lambda t: jnp.log(jnp.abs(t)), params)
    np.testing.assert_allclose(
        _flat(net.log_lift(logs)), np.log(np.abs(_flat(net.lift()))), rtol=1e-10, atol=1e-12
    )


def _rank(a, rtol=1e-9):
    s = np.linalg.svd(np.asarray(a), compute_uv=False)
    return int(np.sum(s > rtol * s[0]))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_rank_is_parameters_minus_hidden(name, getkey):
    net = NETWORKS[name](getkey())
    jac = eqx.filter_jit(dense_jacobian)(net)
    assert jac.shape[0] == net.num_paths
    assert _rank(jac) == jac.shape[1] - net.num_hidden
    # The laws complete it: ker ∂Φ ∩ ker ∂h = {0} (recoverability).
    dh = eqx.filter_jit(dense_laws_jacobian)(net)
    assert _rank(np.vstack([jac, dh])) == jac.shape[1]


def test_theory_reference_values(getkey):
    # THEORY §4: ReLU widths [2, 3, 2], no bias: D = 12, 12 paths, 3 hidden, rank ∂Φ = 9.
    net = models.ReLUNetwork.random(getkey(), (2, 3, 2))
    jac = dense_jacobian(net)
    assert jac.shape == (12, 12) and net.num_paths == 12 and net.num_hidden == 3
    assert _rank(jac) == 9


@pytest.mark.parametrize("name", ["mlp-2-3-2", "mlp-bias-2-3-2-2-1", "dag-skip", "dag-skip-bias"])
def test_lie_algebra_and_recoverability(name, getkey):
    net = NETWORKS[name](getkey())
    trace = manifolds.lie_algebra_trace(net, key=getkey())
    assert trace.converged and trace.frobenius
    assert trace.dimension == trace.span_rank == trace.num_parameters - net.num_hidden
    assert trace.num_conservation_laws == net.num_hidden
    assert manifolds.recoverability_test(net).holds
    laws = manifolds.laws_function(net)[0]
    assert manifolds.recoverability_test(net, laws).holds
    result = manifolds.kernel_inclusion_test(net, laws)
    assert result.holds and result.kernel_dimension == 0


def test_jit_vmap_of_construction_and_methods(getkey):
    build = lambda k: models.ReLUDAG.random(k, 2, 4, 1, SKIP_EDGES, bias=True)
    nets = eqx.filter_jit(jax.vmap(build))(jax.random.split(getkey(), 3))
    zs = jax.jit(jax.vmap(lambda n: n.lift()))(nets)
    assert zs.shape == (3, nets.num_paths)
    np.testing.assert_allclose(zs[1], jax.tree.map(lambda x: x[1], nets).lift())
    build = lambda k: models.ReLUNetwork.random(k, (2, 3, 2), bias=True)
    layered = eqx.filter_jit(jax.vmap(build))(jax.random.split(getkey(), 3))
    assert jax.jit(jax.vmap(lambda n: n.conservation_laws()))(layered).shape == (3, 3)


def test_path_counts():
    assert models.ReLUNetwork.random(jax.random.key(0), (8, 5, 8, 5, 5)).num_paths == 8000
    net = models.ReLUNetwork.random(jax.random.key(0), (2, 3, 4, 2), bias=True)
    assert net.num_paths == 48 + 24 + 8 + 2
    dag = models.ReLUDAG.random(jax.random.key(0), 2, 4, 1, SKIP_EDGES)
    assert dag.num_paths == len(_brute_force_paths(dag))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: models.ReLUNetwork.random(jax.random.key(0), (3, 2)), "at least 3 widths"),
        (lambda: models.ReLUNetwork.random(jax.random.key(0), (3, 0, 2)), "positive integers"),
        (
            lambda: models.ReLUNetwork([jnp.ones((3, 2)), jnp.ones((2, 4))]),
            r"weights\[1\] has shape \(2, 4\)",
        ),
        (
            lambda: models.ReLUNetwork([jnp.ones((3, 2)), jnp.ones((1, 3))], [jnp.ones(3)]),
            "one vector per layer",
        ),
        (
            lambda: models.ReLUNetwork(
                [jnp.ones((3, 2)), jnp.ones((1, 3))], [jnp.ones(2), jnp.ones(1)]
            ),
            r"biases\[0\]` must have shape \(3,\)",
        ),
        (
            lambda: models.ReLUNetwork([jnp.ones((3, 2)), jnp.full((1, 3), jnp.nan)]),
            "finite",
        ),
        (
            lambda: models.ReLUNetwork.random(jax.random.key(0), (10, 10, 10, 10), max_paths=999),
            r"widths \(10, 10, 10, 10\) has 10000 paths, more than `max_paths` = 999",
        ),
        (
            lambda: models.ReLUNetwork.random(jax.random.key(0), (100,) * 5),
            r"10000000000 paths, more than `max_paths` = 10000000",
        ),
        (
            lambda: models.ReLUDAG.random(jax.random.key(0), 2, 4, 1, SKIP_EDGES, max_paths=5),
            "14 edges has 13 paths, more than `max_paths` = 5",
        ),
    ],
)
def test_bad_networks(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "edges, match",
    [
        ([(0, 2), (2, 9)], "outside 0..3"),
        ([(0, 2), (2, 2), (2, 3)], "lower to a higher node id"),
        ([(0, 2), (3, 2), (2, 3)], "lower to a higher node id"),
        ([(0, 1), (0, 2), (2, 3)], "enters input node 1"),
        ([(0, 2), (2, 3), (0, 2)], "more than once"),
        ([(0, 3), (1, 3)], "hidden neuron 2 has no incoming"),
        ([(0, 2), (1, 3)], "hidden neuron 2 has no outgoing"),
        ([(0, 2), (2, 3), (3, 4)], "outside 0..3"),
        ([(0, 2, 1)], "pairs of integers"),
        ([], "empty"),
    ],
)
def test_bad_edges(edges, match):
    with pytest.raises(ValueError, match=match):
        models.ReLUDAG.random(jax.random.key(0), 2, 1, 1, edges)


def test_bad_dag_arguments():
    with pytest.raises(ValueError, match="leaves output node 2"):
        models.ReLUDAG.random(jax.random.key(0), 1, 1, 2, [(0, 1), (1, 2), (2, 3)])
    with pytest.raises(ValueError, match="one entry per edge"):
        models.ReLUDAG(2, 1, 1, [(0, 2), (2, 3)], jnp.ones(3))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        models.ReLUDAG(2, 1, 1, [(0, 2), (2, 3)], jnp.ones(2), jnp.ones(3))
    with pytest.raises(ValueError, match="`n_hidden` must be an integer >= 1"):
        models.ReLUDAG(2, 0, 1, [(0, 2)], jnp.ones(1))
    with pytest.raises(TypeError, match="ReLUNetwork"):
        models.ReLUDAG.from_network(models.DeepLinear.random(jax.random.key(0), (2, 2, 2)))


def test_zero_weights_are_allowed_in_the_model_but_not_in_the_metric():
    net = models.ReLUNetwork([jnp.array([[1.0, 0.0]]), jnp.array([[2.0]])])
    assert float(net(jnp.array([1.0, 5.0]))[0]) == 2.0
    with pytest.raises(ValueError, match=r"exactly zero \(first: .weights\[0\]\[0, 1\]"):
        manifolds.intrinsic_metric(net)


def test_layered_dag_edges_and_paths(getkey):
    # Layers 0 = {0, 1}, 1 = {2, 3}, 2 = {4, 5}, 3 = {6}; skips input -> layer 2 and
    # layer 1 -> output, each a full bipartite connection.
    net = models.layered_dag(getkey(), (2, 2, 2, 1), [(0, 2), (1, 3)], bias=True)
    assert isinstance(net, models.ReLUDAG)
    assert (net.n_inputs, net.n_hidden, net.n_outputs) == (2, 4, 1)
    layers = [(0, 1), (2, 3), (4, 5), (6,)]
    expected = {(u, v) for i, j in [(0, 1), (1, 2), (2, 3), (0, 2), (1, 3)]
                for u in layers[i] for v in layers[j]}  # fmt: skip
    assert list(net.edges) == sorted(expected)
    # Input paths 0-1-2-3, 0-2-3, 0-1-3: 2·2·2 + 2·2 + 2·2; bias paths from layers 1, 2, 3:
    # 2·(2 + 1) + 2 + 1.
    assert (net.num_input_paths, net.num_paths) == (16, 16 + 9)
    # Without skips: the graph of the layered network of the same widths.
    widths = (3, 4, 2, 2)
    plain = models.layered_dag(getkey(), widths)
    mlp = models.ReLUDAG.from_network(models.ReLUNetwork.random(getkey(), widths))
    assert set(plain.edges) == set(mlp.edges)
    assert plain.num_paths == mlp.num_paths


@pytest.mark.parametrize(
    "widths, skips, match",
    [
        ((2, 1), (), "at least 3 widths"),
        ((2, 3, 1), [(0, 1)], r"pairs \(i, j\) of layers .* got \(0, 1\)"),
        ((2, 3, 1), [(0, 3)], r"i \+ 1 < j <= 2 .* got \(0, 3\)"),
        ((2, 3, 3, 1), [(-1, 2)], r"got \(-1, 2\)"),
    ],
)
def test_layered_dag_errors(widths, skips, match):
    with pytest.raises(ValueError, match=match):
        models.layered_dag(jax.random.key(0), widths, skips)
