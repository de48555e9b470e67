"""Compiled (Numba) cores of the estimators.

Each module holds module-level ``@njit`` functions that receive only contiguous
float64/int64 arrays and scalars, next to a plain-NumPy ``*_reference``
implementation of the same computation that the tests compare against.
:mod:`~hclstat.kernels.multinomial_group_lasso` is the exception: plain NumPy
(its work is BLAS products, which a compiled loop does not beat), certified
against cvxpy in the tests instead.
Nothing here imports from the rest of the package.
"""
