"""``--gpu-layers auto``: the GGUF layout reader and the plan, on simulated GPU memory figures."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from edge_run.config import ConfigError, load_settings
from edge_run.engine import EngineOptions, GpuDevice, Placement
from edge_run.engine import placement as placement_module
from edge_run.engine.placement import plan_offload
from edge_run.errors import EngineFailure
from edge_run.gguf import GgufLayout, read_layout
from edge_run.paths import Paths

MIB = 1 << 20


def _str(s: str) -> bytes:
    data = s.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf(path: Path, meta: dict[str, object], tensors: list[tuple[str, int]], align: int = 32) -> None:
    """A minimal GGUF v3: metadata, tensor infos (1-D, F32) and zeroed data of the given byte sizes (sparse)."""
    kv = b""
    for key, value in meta.items():
        kv += _str(key)
        if isinstance(value, str):
            kv += struct.pack("<I", 8) + _str(value)
        elif isinstance(value, int):
            kv += struct.pack("<I", 4) + struct.pack("<I", value)
        elif isinstance(value, list) and value and isinstance(value[0], str):
            kv += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(_str(v) for v in value)
        elif isinstance(value, list):
            kv += struct.pack("<IIQ", 9, 6, len(value)) + b"".join(struct.pack("<f", v) for v in value)
    infos, offset = b"", 0
    for name, size in tensors:
        infos += _str(name) + struct.pack("<IQIQ", 1, size // 4, 0, offset)
        offset += -(-size // align) * align
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + kv + infos
    head += b"\0" * (-len(head) % align)
    with path.open("wb") as f:  # the zeroed data as a hole: the layout reader never reads it
        f.write(head)
        f.truncate(len(head) + offset)


def tiny_model(path: Path, *, layers: int = 3, layer_bytes: int = 4 * MIB, tied: bool = True) -> Path:
    meta: dict[str, object] = {
        "general.architecture": "llama",
        "llama.block_count": layers,
        "llama.embedding_length": 256,
        "llama.attention.head_count": 8,
        "llama.attention.head_count_kv": 2,
        "tokenizer.ggml.tokens": [f"t{i}" for i in range(1000)],  # long arrays are skipped, counted
        "tokenizer.ggml.scores": [0.0] * 1000,
    }
    tensors = [("token_embd.weight", 8 * MIB)]
    for i in range(layers):
        tensors += [(f"blk.{i}.attn_q.weight", layer_bytes // 4), (f"blk.{i}.ffn_up.weight", layer_bytes * 3 // 4)]
    tensors.append(("output_norm.weight", 1024))
    if not tied:
        tensors.append(("output.weight", 6 * MIB))
    write_gguf(path, meta, tensors)
    return path


def layout(layers: int = 4, layer: int = 100 * MIB, output: int = 50 * MIB, kv: int = 1024) -> GgufLayout:
    return GgufLayout(
        n_layer=layers,
        layer_bytes=(layer,) * layers,
        output_bytes=output,
        kv_bytes_per_token=kv,
        n_vocab=1000,
        n_embd=256,
    )


# -- the GGUF reader -------------------------------------------------------------------------


def test_layout_sums_each_layer_and_sizes_the_kv_cache(tmp_path: Path) -> None:
    lay = read_layout(tiny_model(tmp_path / "m.gguf"))
    assert lay.n_layer == 3
    assert lay.layer_bytes == (4 * MIB,) * 3
    assert lay.output_bytes == 8 * MIB + 1024  # tied: llama.cpp loads the embeddings again as output
    assert lay.kv_bytes_per_token == (32 + 32) * 2 * 2  # (K + V) head size x kv heads x f16
    assert (lay.n_vocab, lay.n_embd) == (1000, 256)


def test_an_untied_output_layer_is_counted_on_its_own(tmp_path: Path) -> None:
    lay = read_layout(tiny_model(tmp_path / "m.gguf", tied=False))
    assert lay.output_bytes == 6 * MIB + 1024


@pytest.mark.parametrize("data", [b"", b"GGML" + b"\0" * 64, b"GGUF\3\0\0\0" + b"\xff" * 8])
def test_a_file_that_is_not_a_whole_gguf_is_a_clear_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(EngineFailure, match=r"bad\.gguf"):
        read_layout(path)


# -- the plan --------------------------------------------------------------------------------


def test_everything_fits_on_a_big_card() -> None:
    plan = plan_offload(layout(), free=80 << 30, kv_tokens=16384, n_batch=512)
    assert plan.layers == plan.total_layers == 5 and plan.full
    assert "all 5 layers fit" in plan.reason


def test_nothing_fits_when_the_margin_alone_is_more_than_free() -> None:
    plan = plan_offload(layout(), free=256 * MIB, kv_tokens=16384, n_batch=512)
    assert plan.layers == 0 and plan.needed == 0
    assert "no layer fits" in plan.reason


def test_the_output_layer_comes_first_then_layers_from_the_end() -> None:
    lay = layout(layers=4, layer=100 * MIB, output=50 * MIB, kv=0)
    compute = 512 * (1000 + 8 * 256) * 4
    base = 512 * MIB + compute  # margin and compute buffers
    assert plan_offload(lay, free=base + 49 * MIB, kv_tokens=0, n_batch=512).layers == 0
    assert plan_offload(lay, free=base + 50 * MIB, kv_tokens=0, n_batch=512).layers == 1
    assert plan_offload(lay, free=base + 149 * MIB, kv_tokens=0, n_batch=512).layers == 1
    two = plan_offload(lay, free=base + 150 * MIB, kv_tokens=0, n_batch=512)
    assert two.layers == 2 and two.needed == base + 150 * MIB


def test_a_larger_kv_cache_leaves_room_for_fewer_layers() -> None:
    lay = layout(layers=8, layer=100 * MIB, output=50 * MIB, kv=1024)
    free = 2 << 30
    few_slots = plan_offload(lay, free=free, kv_tokens=4 * 4096, n_batch=512)
    many_slots = plan_offload(lay, free=free, kv_tokens=64 * 4096, n_batch=512)
    assert 0 < many_slots.layers < few_slots.layers
    # the KV cache of the offloaded layers is part of what they need
    assert many_slots.needed <= free and few_slots.needed <= free


def test_a_bigger_batch_reserves_more_compute_memory() -> None:
    lay = layout(layers=8, layer=100 * MIB, output=50 * MIB, kv=0)
    free = 1 << 30
    assert (
        plan_offload(lay, free=free, kv_tokens=0, n_batch=8192).layers
        < plan_offload(lay, free=free, kv_tokens=0, n_batch=512).layers
    )


# -- the placement: settings x devices --------------------------------------------------------


def options(gpu_layers: int | None = None, slots: int = 4) -> EngineOptions:
    return EngineOptions(ctx=4096, threads=2, gpu_layers=gpu_layers, slots=slots, max_queue=8, batch=512)


def fake_gpus(monkeypatch: pytest.MonkeyPatch, *free_total: tuple[int, int]) -> None:
    devices = [GpuDevice(f"CUDA{i}", "Fake GPU", free, total) for i, (free, total) in enumerate(free_total)]
    monkeypatch.setattr(placement_module, "gpu_devices", lambda: devices)


def test_auto_offloads_everything_that_fits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_gpus(monkeypatch, (8 << 30, 8 << 30))
    placement = Placement.resolve(tiny_model(tmp_path / "m.gguf"), options())
    assert placement.layers == placement.total_layers == 4
    assert placement.describe().startswith("CUDA0 Fake GPU: all of 4 layers offloaded (auto: all 4 layers fit")


def test_auto_offloads_part_of_the_model_on_a_small_card(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "m.gguf", layers=6, layer_bytes=64 * MIB)
    lay = read_layout(path)
    kv = lay.kv_bytes_per_token * 4 * 4096  # a layer's KV cache: 4 slots x 4096 tokens
    free = 512 * MIB + 512 * (1000 + 8 * 256) * 4 + lay.output_bytes + 2 * (64 * MIB + kv)
    fake_gpus(monkeypatch, (free, 1 << 30))
    placement = Placement.resolve(path, options())
    assert placement.layers == 3  # the output layer and the last two
    assert "3 of 7 layers offloaded" in placement.describe()


def test_free_memory_of_several_gpus_adds_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "m.gguf", layers=6, layer_bytes=64 * MIB)
    fake_gpus(monkeypatch, (600 * MIB, 1 << 30))
    one = Placement.resolve(path, options()).layers
    fake_gpus(monkeypatch, (600 * MIB, 1 << 30), (600 * MIB, 1 << 30))
    assert Placement.resolve(path, options()).layers > one


def test_no_room_means_cpu_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_gpus(monkeypatch, (300 * MIB, 4 << 30))
    placement = Placement.resolve(tiny_model(tmp_path / "m.gguf"), options())
    assert placement.layers == 0
    assert placement.describe().startswith("CPU, CUDA0 Fake GPU unused (auto: no layer fits")


def test_a_number_is_taken_as_given_up_to_all_layers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_gpus(monkeypatch, (300 * MIB, 4 << 30))  # too little for auto: an explicit number still wins
    path = tiny_model(tmp_path / "m.gguf")
    assert Placement.resolve(path, options(gpu_layers=2)).layers == 2
    assert Placement.resolve(path, options(gpu_layers=999)).layers == 4
    assert Placement.resolve(path, options(gpu_layers=0)).describe().startswith("CPU, CUDA0 Fake GPU unused")


def test_a_cpu_build_places_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_gpus(monkeypatch)
    placement = Placement.resolve(tiny_model(tmp_path / "m.gguf"), options(gpu_layers=99))
    assert (placement.layers, placement.describe()) == (0, "CPU")


# -- the setting -------------------------------------------------------------------------------


def test_auto_is_the_default_and_can_be_written_anywhere(tmp_path: Path) -> None:
    paths = Paths.resolve({"EDGE_RUN_HOME": str(tmp_path)})
    assert load_settings(paths, environ={}).gpu_layers is None
    assert load_settings(paths, environ={"EDGE_RUN_GPU_LAYERS": "auto"}).gpu_layers is None
    assert load_settings(paths, environ={"EDGE_RUN_GPU_LAYERS": "12"}).gpu_layers == 12
    paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text("gpu_layers = 7\n")
    assert load_settings(paths, environ={}).gpu_layers == 7
    assert load_settings(paths, environ={}, overrides={"gpu_layers": "auto"}).gpu_layers is None
    with pytest.raises(ConfigError, match="gpu_layers"):
        load_settings(paths, environ={"EDGE_RUN_GPU_LAYERS": "-3"})
