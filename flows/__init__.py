"""Euclidean and intrinsic gradient flows, integrated with Diffrax."""

from ._euclidean import euclidean_flow as euclidean_flow
from ._intrinsic import intrinsic_flow as intrinsic_flow
from ._solution import (
    FlowSolution as FlowSolution,
    relative_deviation as relative_deviation,
)
