"""The engine's public surface: everything outside ``edge_run.engine`` imports from here, never from its modules.

Importing it does not load llama.cpp: that happens when a model is loaded, GPUs are listed
(:func:`gpu_devices`) or a grammar is built (:func:`json_grammar`).
"""

from __future__ import annotations

from edge_run.engine.engine import Engine
from edge_run.engine.generation import Generation
from edge_run.engine.llama.grammar import json_grammar
from edge_run.engine.media import MEDIA_MARKER, MediaInput, MediaSpan
from edge_run.engine.placement import Placement, gpu_devices
from edge_run.engine.threads import CoreShare
from edge_run.engine.types import Chunk, EngineOptions, GpuDevice, SamplerSpec, ThoughtLimit, TokenLogprob
from edge_run.gguf import GgufLayout, read_layout

__all__ = [
    "MEDIA_MARKER",
    "Chunk",
    "CoreShare",
    "Engine",
    "EngineOptions",
    "Generation",
    "GgufLayout",
    "GpuDevice",
    "MediaInput",
    "MediaSpan",
    "Placement",
    "SamplerSpec",
    "ThoughtLimit",
    "TokenLogprob",
    "gpu_devices",
    "json_grammar",
    "read_layout",
]
