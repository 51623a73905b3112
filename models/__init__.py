"""Factorizations θ ↦ z = φ(θ) of neural networks, as Equinox modules."""

from ._deep_linear import DeepLinear as DeepLinear
from ._diagonal_linear import DiagonalLinear as DiagonalLinear
from ._factorization import AbstractFactorization as AbstractFactorization
from ._layered_dag import layered_dag as layered_dag
from ._linear_neural_ode import LinearNeuralODE as LinearNeuralODE
from ._neural_ode import NeuralODE as NeuralODE
from ._output_lifting import OutputLifting as OutputLifting
from ._relu import AbstractReLUNetwork as AbstractReLUNetwork, ReLUNetwork as ReLUNetwork
from ._relu_dag import ReLUDAG as ReLUDAG
from ._two_layer_linear import TwoLayerLinear as TwoLayerLinear
