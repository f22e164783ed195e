"""The llama.cpp adapter: thin wrappers over ``llama_cpp``'s low-level C API.

Its modules are the only ones under ``edge_run`` that import ``llama_cpp``; this package itself imports
nothing, so that :mod:`edge_run.engine.llama.grammar` can be imported without loading llama.cpp.
"""

from __future__ import annotations

__all__: list[str] = []
