"""The engine's public surface: everything outside ``edge_run.engine`` imports from here, never from its modules."""

from __future__ import annotations

from edge_run.engine.engine import Engine, EngineOptions, Generation, Placement
from edge_run.engine.llama import GpuDevice, SamplerSpec, gpu_devices, json_grammar
from edge_run.engine.scheduler import Chunk, TokenLogprob
from edge_run.engine.threads import CoreShare
from edge_run.gguf import GgufLayout, read_layout

__all__ = [
    "Chunk",
    "CoreShare",
    "Engine",
    "EngineOptions",
    "Generation",
    "GgufLayout",
    "GpuDevice",
    "Placement",
    "SamplerSpec",
    "TokenLogprob",
    "gpu_devices",
    "json_grammar",
    "read_layout",
]
