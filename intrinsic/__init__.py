"""The `intrinsic` command-line application, above the library (`models`, `manifolds`, `flows`).

Importing this package, or `intrinsic._cli`, imports only the standard library: the command
parses its arguments and lists its examples before JAX and the library are imported.
"""
