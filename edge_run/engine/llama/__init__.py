"""The llama.cpp adapter: thin wrappers over ``llama_cpp``'s low-level C API.

Its modules are the only ones under ``edge_run`` that import ``llama_cpp``; this package itself imports
nothing, so that :mod:`edge_run.engine.llama.grammar` can be imported without loading llama.cpp. It sets
libgomp's spinning before any of them loads llama.cpp (:func:`_openmp_spinning`).
"""

from __future__ import annotations

import os

__all__: list[str] = []

# libgomp's defaults, but for the "throttled" spin: 1000 instead of 100 (OMP_WAIT_POLICY=active, whose own 5-minute
# spin GOMP_SPINCOUNT puts back to the default 3 ms).
_OPENMP_SPINNING = {"OMP_WAIT_POLICY": "active", "GOMP_SPINCOUNT": "300000"}


def _openmp_spinning() -> None:
    """llama.cpp's CPU threads meet at an OpenMP barrier after every operation. libgomp spins there a while before it
    sleeps, but barely (100 turns) once it manages more threads than the machine has cores: from the second thread
    team on, that is from a second model (each engine thread leads a team of its own), an image encoder or an
    embedder. Every barrier then went through a futex: 2-thread steps of a 135M model took 1.7 times as long, and
    the thread governor fell back to one thread for good (2 cores; bench/README.md). libgomp reads its settings once,
    when llama.cpp loads; a user's own are kept."""
    if not any(name in os.environ for name in _OPENMP_SPINNING):
        os.environ.update(_OPENMP_SPINNING)


_openmp_spinning()
