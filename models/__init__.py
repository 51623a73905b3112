"""Factorizations θ ↦ z = φ(θ) of neural networks, as Equinox modules."""

from ._deep_linear import DeepLinear as DeepLinear
from ._diagonal_linear import DiagonalLinear as DiagonalLinear
from ._factorization import AbstractFactorization as AbstractFactorization
from ._two_layer_linear import TwoLayerLinear as TwoLayerLinear
