"""Induced and intrinsic metrics, and the geometry of conservation laws."""

from ._deep_linear_metric import DeepLinearMetric as DeepLinearMetric
from ._diagonal_metric import DiagonalChainMetric as DiagonalChainMetric
from ._induced_metric import induced_metric as induced_metric
from ._intrinsic_metric import (
    AbstractIntrinsicMetric as AbstractIntrinsicMetric,
    intrinsic_metric as intrinsic_metric,
)
from ._kernel_tests import (
    KernelInclusionTest as KernelInclusionTest,
    RecoverabilityTest as RecoverabilityTest,
    kernel_inclusion_test as kernel_inclusion_test,
    recoverability_test as recoverability_test,
)
from ._lie_algebra import LieAlgebraTrace as LieAlgebraTrace, lie_algebra_trace as lie_algebra_trace
from ._lifting import (
    laws_function as laws_function,
    lifting_function as lifting_function,
)
from ._log_mean_metric import LogMeanMetric as LogMeanMetric, log_mean_kernel as log_mean_kernel
from ._mirror import MirrorFlowResult as MirrorFlowResult, mirror_flow_test as mirror_flow_test
from ._recovered_metric import (
    FiberConsistency as FiberConsistency,
    RecoveredMetric as RecoveredMetric,
    RecoveredRESULTS as RecoveredRESULTS,
    fiber_consistency as fiber_consistency,
)
from ._relu_metric import (
    AbstractReLUMetric as AbstractReLUMetric,
    ReLUPathMetric as ReLUPathMetric,
)
from ._relu_recovery import ReLURESULTS as ReLURESULTS
from ._relu_two_layer_metric import TwoLayerReLUMetric as TwoLayerReLUMetric
from ._spectral import AbstractSpectralMetric as AbstractSpectralMetric
from ._symbolic import (
    PolynomialConservationLaws as PolynomialConservationLaws,
    polynomial_conservation_laws as polynomial_conservation_laws,
    symbolic_induced_metric as symbolic_induced_metric,
)
from ._two_layer_metric import TwoLayerLinearMetric as TwoLayerLinearMetric
