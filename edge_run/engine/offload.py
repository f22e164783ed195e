"""How many layers to offload to the GPU: ``--gpu-layers auto``.

The GGUF's tensor table gives each layer's weight bytes, its metadata the KV cache's bytes per token
(:mod:`edge_run.gguf`); the free device memory comes from llama.cpp
(:func:`edge_run.engine.llama.gpu_devices`). The plan keeps room for the KV cache of ``ctx x slots``
tokens, the compute buffers and a margin, then fits as many layers as the rest allows, counted the way
llama.cpp counts ``n_gpu_layers``: the output layer first, then the repeating layers from the last one
down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_run.gguf import GgufLayout

__all__ = ["OffloadPlan", "plan_offload"]

MIB = 1 << 20
MARGIN = 512 * MIB  # the CUDA/Metal context's own growth, fragmentation, other programs' spikes


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
