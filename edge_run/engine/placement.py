"""Where a model's layers go: ``--gpu-layers`` resolved against the GPUs found, ``auto`` planned.

The GGUF's tensor table gives each layer's weight bytes, its metadata the KV cache's bytes per token
(:mod:`edge_run.gguf`); the free device memory comes from llama.cpp (:func:`gpu_devices`). The plan
keeps room for the KV cache of ``ctx x slots`` tokens, the compute buffers and a margin, then fits as
many layers as the rest allows, counted the way llama.cpp counts ``n_gpu_layers``: the output layer
first, then the repeating layers from the last one down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_run.gguf import GgufLayout, read_layout

if TYPE_CHECKING:
    from pathlib import Path

    from edge_run.engine.types import EngineOptions, GpuDevice

__all__ = ["OffloadPlan", "Placement", "gpu_devices", "plan_offload"]

MIB = 1 << 20
MARGIN = 512 * MIB  # the CUDA/Metal context's own growth, fragmentation, other programs' spikes


def gpu_devices() -> list[GpuDevice]:
    """The GPUs this llama.cpp build can use (none on a CPU build), with their free memory now.

    The first call loads llama.cpp.
    """
    from edge_run.engine.llama import backend

    return backend.gpu_devices()


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a model's layers go: ``--gpu-layers`` resolved against the GPUs found."""

    layers: int  # llama.cpp's n_gpu_layers, at most total_layers
    layout: GgufLayout
    devices: tuple[GpuDevice, ...]
    reason: str

    @classmethod
    def resolve(cls, path: Path, options: EngineOptions) -> Placement:
        devices = tuple(gpu_devices())
        layout = read_layout(path)
        if not devices:
            return cls(0, layout, devices, "no GPU in this llama.cpp build")
        if options.gpu_layers is not None:
            layers = min(options.gpu_layers, layout.n_layer + 1)
            return cls(layers, layout, devices, f"--gpu-layers {options.gpu_layers}")
        plan = plan_offload(
            layout,
            free=sum(d.free for d in devices),
            kv_tokens=options.ctx * options.slots,
            n_batch=options.batch,
        )
        return cls(plan.layers, layout, devices, f"auto: {plan.reason}")

    @property
    def total_layers(self) -> int:
        """The repeating layers and the output layer."""
        return self.layout.n_layer + 1

    @property
    def full(self) -> bool:
        """Every layer on the GPU (never true without one)."""
        return self.layers >= self.total_layers

    def describe(self) -> str:
        """One line for the start-up banner and ``models show``."""
        if not self.devices:
            return "CPU"
        gpus = ", ".join(d.label for d in self.devices)
        if self.layers == 0:
            return f"CPU, {gpus} unused ({self.reason})"
        done = "all" if self.full else str(self.layers)
        return f"{gpus}: {done} of {self.total_layers} layers offloaded ({self.reason})"


@dataclass(frozen=True, slots=True)
class OffloadPlan:
    """The layers to offload and the figures they were chosen from (bytes)."""

    layers: int  # llama.cpp's n_gpu_layers: 0 = none, n_layer + 1 = all
    total_layers: int  # n_layer + 1: the repeating layers and the output layer
    free: int  # device memory free before loading
    needed: int  # estimated device memory for those layers, their KV cache and compute buffers
    reason: str

    @property
    def full(self) -> bool:
        return self.layers >= self.total_layers


def plan_offload(layout: GgufLayout, *, free: int, kv_tokens: int, n_batch: int, margin: int = MARGIN) -> OffloadPlan:
    """The most layers whose weights and KV cache fit in ``free`` after compute buffers and ``margin``.

    ``kv_tokens`` is every slot's context together (ctx x slots); ``n_batch`` the largest batch decoded
    at once (its logits and activations live in the compute buffer).
    """
    total = layout.n_layer + 1
    compute = n_batch * (layout.n_vocab + 8 * layout.n_embd) * 4  # f32 logits and activations
    budget = free - margin - compute
    kv_layer = layout.kv_bytes_per_token * kv_tokens
    layers, used = 0, 0
    for k in range(1, total + 1):
        # k = 1 is the output layer; each further k adds the next repeating layer from the end
        cost = layout.output_bytes if k == 1 else layout.layer_bytes[layout.n_layer - (k - 1)] + kv_layer
        if used + cost > budget:
            break
        layers, used = k, used + cost
    needed = used + (compute + margin if layers else 0)
    gib = 1 << 30
    if layers == total:
        reason = f"all {total} layers fit: {needed / gib:.2f} of {free / gib:.2f} GiB free"
    elif layers == 0:
        reason = f"no layer fits in {free / gib:.2f} GiB free (KV cache {kv_tokens} tokens)"
    else:
        reason = f"{layers} of {total} layers fit in {free / gib:.2f} GiB free (KV cache {kv_tokens} tokens)"
    return OffloadPlan(layers=layers, total_layers=total, free=free, needed=needed, reason=reason)
