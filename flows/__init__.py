"""Euclidean and intrinsic gradient flows, integrated with Diffrax."""

from ._checkpoint import resumable_euclidean_flow as resumable_euclidean_flow
from ._ensemble import (
    euclidean_ensemble as euclidean_ensemble,
    intrinsic_ensemble as intrinsic_ensemble,
    stack as stack,
)
from ._euclidean import euclidean_flow as euclidean_flow
from ._intrinsic import intrinsic_flow as intrinsic_flow
from ._output_loss import (
    OutputLoss as OutputLoss,
    half_mean_squared_error as half_mean_squared_error,
)
from ._solution import (
    RESULTS as RESULTS,
    FlowSolution as FlowSolution,
    SaveAt as SaveAt,
    relative_deviation as relative_deviation,
)
