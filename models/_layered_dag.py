r"""A layered ReLU network with skip connections, as a `ReLUDAG`."""

from ._checks import check_widths
from ._custom_types import Key, RealScalarLike
from ._relu import DEFAULT_MAX_PATHS
from ._relu_dag import ReLUDAG


def layered_dag(
    key: Key,
    widths,
    skips=(),
    *,
    bias: bool = False,
    scale: RealScalarLike = 1.0,
    max_paths: int = DEFAULT_MAX_PATHS,
) -> ReLUDAG:
    r"""A random [`models.ReLUDAG`][] on layers of the given widths: consecutive layers fully
    connected, plus a full connection from layer $i$ to layer $j$ for each skip $(i, j)$.

    Layers are numbered $0$ (inputs) to $L$ (outputs), and nodes layer by layer, so layer $k$
    holds the nodes $n_0 + \dots + n_{k-1}$ to $n_0 + \dots + n_k - 1$. The edges are

    $$\{(u, v) : u \in \text{layer } k,\ v \in \text{layer } k + 1\} \cup
    \bigcup_{(i, j) \in \text{skips}} \{(u, v) : u \in \text{layer } i,\ v \in \text{layer } j\},$$

    sorted; the weights are drawn by [`models.ReLUDAG.random`][]. Without skips this is the
    graph of [`models.ReLUNetwork`][]`(widths)` (a `ReLUDAG` all the same, so that skips can be
    switched on without changing the type).

    **Arguments:**

    - `key`: a JAX PRNG key.
    - `widths`: $(n_0, \dots, n_L)$, $L \ge 2$ (at least one hidden layer).
    - `skips`: pairs $(i, j)$ of layer indices with $0 \le i$ and $i + 1 < j \le L$.
    - `bias`, `scale`, `max_paths`: as in [`models.ReLUDAG.random`][].

    **Returns:** a `ReLUDAG` with $n_0$ inputs, $n_1 + \dots + n_{L-1}$ hidden neurons and
    $n_L$ outputs.

    **Raises:** `ValueError` for invalid widths, a skip that is not a pair of layers at least
    two apart, or more than `max_paths` paths.
    """
    widths = check_widths(widths, min_len=3)
    last = len(widths) - 1
    skips = tuple(tuple(s) for s in skips)
    for s in skips:
        if len(s) != 2 or not 0 <= s[0] < s[1] - 1 < last:
            raise ValueError(
                f"`skips` must hold pairs (i, j) of layers with 0 <= i and i + 1 < j <= {last} "
                f"(layers are numbered 0 = inputs to {last} = outputs), got {s}."
            )
    starts = [sum(widths[:k]) for k in range(len(widths))]
    pairs = [(k, k + 1) for k in range(last)] + list(skips)
    edges = sorted(
        (starts[i] + a, starts[j] + b)
        for i, j in pairs
        for a in range(widths[i])
        for b in range(widths[j])
    )
    return ReLUDAG.random(
        key,
        widths[0],
        sum(widths[1:-1]),
        widths[-1],
        edges,
        bias=bias,
        scale=scale,
        max_paths=max_paths,
    )
