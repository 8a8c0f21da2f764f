"""fiberlab: a verification suite for trust-region policy optimisation in LLM reinforcement learning.

Layers (each a sub-package): ``fiberlab.theory`` (SymPy), ``fiberlab.numerics`` (float64 NumPy/SciPy,
mpmath and cvxpy references), ``fiberlab.gpu`` (PyTorch objectives). The claim registry lives in
:mod:`fiberlab.registry`; the command line in :mod:`fiberlab.cli`.
"""

__version__ = "0.1.0"
