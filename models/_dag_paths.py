r"""The paths of a DAG of neurons, enumerated once: index arrays for the path-lifting of
`ReLUDAG` (validation of the edges, path counting, level-by-level enumeration)."""

import dataclasses
import functools as ft

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class PathIndex:
    # Static index arrays of one graph, built once (cached by the graph's description).
    # Paths: row p lists its parameters (edge ids, then E + i for the bias of non-input
    # node n_inputs + i), padded with D; its nodes, padded with n_nodes; its input (or
    # n_inputs: "x = 1" for a bias path) and its output (0..n_outputs-1).
    param_index: np.ndarray
    node_index: np.ndarray
    start: np.ndarray
    end: np.ndarray
    num_input_paths: int
    # Edges and the forward pass, level by level (a node's level is 1 + the largest level
    # of its sources; nodes of one level are computed together).
    source: np.ndarray
    target: np.ndarray
    levels: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]


def validate_edges(n_inputs, n_hidden, n_outputs, edges) -> tuple[tuple[int, int], ...]:
    for name, value, low in (("n_inputs", n_inputs, 1), ("n_hidden", n_hidden, 1)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    if isinstance(n_outputs, bool) or int(n_outputs) != n_outputs or n_outputs < 1:
        raise ValueError(f"`n_outputs` must be an integer >= 1, got {n_outputs!r}.")
    n_nodes = n_inputs + n_hidden + n_outputs
    try:
        pairs = tuple((int(s), int(t)) for s, t in edges)
        if any((s, t) != tuple(e) for (s, t), e in zip(pairs, edges)):
            raise TypeError
    except (TypeError, ValueError) as e:
        raise ValueError("`edges` must be a sequence of (source, target) pairs of integers.") from e
    if not pairs:
        raise ValueError("`edges` is empty: the network has no connections.")
    seen = set()
    for s, t in pairs:
        if not (0 <= s < n_nodes and 0 <= t < n_nodes):
            raise ValueError(
                f"edge {(s, t)} refers to a node outside 0..{n_nodes - 1} (nodes: inputs "
                f"0..{n_inputs - 1}, hidden {n_inputs}..{n_inputs + n_hidden - 1}, outputs "
                f"{n_inputs + n_hidden}..{n_nodes - 1})."
            )
        if s >= t:
            raise ValueError(
                f"edge {(s, t)} does not go from a lower to a higher node id: nodes must be "
                "numbered in topological order (this also rules out cycles)."
            )
        if t < n_inputs:
            raise ValueError(f"edge {(s, t)} enters input node {t}: inputs have no incoming edges.")
        if s >= n_inputs + n_hidden:
            raise ValueError(
                f"edge {(s, t)} leaves output node {s}: outputs have no outgoing edges."
            )
        if (s, t) in seen:
            raise ValueError(f"edge {(s, t)} appears more than once in `edges`.")
        seen.add((s, t))
    sources = {s for s, _ in pairs}
    targets = {t for _, t in pairs}
    for v in range(n_inputs, n_inputs + n_hidden):
        if v not in targets or v not in sources:
            raise ValueError(
                f"hidden neuron {v} has no {'incoming' if v not in targets else 'outgoing'} "
                "edge: every hidden neuron needs at least one of each (a dangling neuron "
                "carries no path)."
            )
    return pairs


def count_paths(n_inputs, n_hidden, n_outputs, edges, bias) -> int:
    # Number of paths ending at each node, by dynamic programming in topological order.
    n_nodes = n_inputs + n_hidden + n_outputs
    count = [1] * n_inputs + [int(bias)] * (n_hidden + n_outputs)
    for s, t in sorted(edges, key=lambda e: e[1]):
        count[t] += count[s]
    return sum(count[n_inputs + n_hidden : n_nodes])


@ft.lru_cache(maxsize=16)
def path_index(n_inputs, n_hidden, n_outputs, edges, bias) -> PathIndex:
    n_nodes = n_inputs + n_hidden + n_outputs
    num_edges = len(edges)
    num_params = num_edges + (n_hidden + n_outputs if bias else 0)
    src = np.array([s for s, _ in edges], dtype=np.int32)
    dst = np.array([t for _, t in edges], dtype=np.int32)
    level = np.zeros(n_nodes, dtype=np.int64)
    for e in np.argsort(dst, kind="stable"):
        level[dst[e]] = max(level[dst[e]], level[src[e]] + 1)
    level[n_inputs:] = np.maximum(level[n_inputs:], 1)
    depth = int(level.max())
    width = depth + 1  # the most nodes on a path (and the most parameters: bias + edges)

    # Paths ending at each node, vectorised per incoming edge: extend all of the source's
    # paths by the edge at once. A node's table is dropped after its last outgoing edge.
    last_use = np.full(n_nodes, -1)
    for s, t in edges:
        last_use[s] = max(last_use[s], t)
    tables = {}
    incoming = [[] for _ in range(n_nodes)]
    for e, (_, t) in enumerate(edges):
        incoming[t].append(e)
    for v in range(n_nodes):
        parts = []
        if v < n_inputs:
            parts.append(_single(v, None, n_inputs, num_params, n_nodes, width, v))
        else:
            if bias:
                b = num_edges + v - n_inputs
                parts.append(_single(v, b, n_inputs, num_params, n_nodes, width, n_inputs))
            for e in incoming[v]:
                params, nodes, length, start = tables[int(src[e])]
                params, nodes = params.copy(), nodes.copy()
                rows = np.arange(params.shape[0])
                params[rows, np.sum(params < num_params, axis=1)] = e
                nodes[rows, length] = v
                parts.append((params, nodes, length + 1, start))
        tables[v] = tuple(np.concatenate(cols) for cols in zip(*parts)) if parts else None
        for u in {int(src[e]) for e in incoming[v]}:
            if last_use[u] == v and u < n_inputs + n_hidden:
                del tables[u]
    outputs = [tables[v] for v in range(n_inputs + n_hidden, n_nodes) if tables[v] is not None]
    params, nodes, length, start = (np.concatenate(cols) for cols in zip(*outputs))
    end = nodes[np.arange(nodes.shape[0]), length - 1] - (n_inputs + n_hidden)

    # Order: input paths, then bias paths; longer first; then by node sequence read from
    # the output back (so a layered network's paths come in C order of its lift()).
    reversed_nodes = np.full_like(nodes, -1)
    for k in range(width):
        has = length > k
        reversed_nodes[has, k] = nodes[has, length[has] - 1 - k]
    is_bias = start == n_inputs
    keys = [reversed_nodes[:, k] for k in reversed(range(width))] + [-length, is_bias]
    order = np.lexsort(keys)
    used = int(np.max(np.sum(params < num_params, axis=1)))

    levels = []
    for lev in range(1, depth + 1):
        level_nodes = np.flatnonzero(level == lev).astype(np.int32)
        local = np.full(n_nodes, -1)
        local[level_nodes] = np.arange(level_nodes.size)
        level_edges = np.flatnonzero(level[dst] == lev).astype(np.int32)
        levels.append((level_nodes, level_edges, local[dst[level_edges]].astype(np.int32)))
    return PathIndex(
        param_index=params[order][:, :used].astype(np.int32),
        node_index=nodes[order].astype(np.int32),
        start=start[order].astype(np.int32),
        end=end[order].astype(np.int32),
        num_input_paths=int(np.sum(~is_bias)),
        source=src,
        target=dst,
        levels=tuple(levels),
    )


def _single(v, param, n_inputs, num_params, n_nodes, width, start):
    # The one path of length 0 starting (and so far ending) at node v.
    params = np.full((1, width), num_params, dtype=np.int64)
    if param is not None:
        params[0, 0] = param
    nodes = np.full((1, width), n_nodes, dtype=np.int64)
    nodes[0, 0] = v
    return params, nodes, np.ones(1, dtype=np.int64), np.array([start], dtype=np.int64)
