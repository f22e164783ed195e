"""llama.cpp's process-wide state: its init and log, the GPUs it can use, rpc-server workers.

``edge_run.engine.llama`` holds the only modules that import ``llama_cpp``, and the rest of the engine
imports them only when a model is loaded or used: importing ``edge_run.engine`` does not load llama.cpp.
Everything here may run on any thread.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
from functools import partial
from typing import TYPE_CHECKING

import llama_cpp as L

from edge_run.engine.types import GpuDevice
from edge_run.errors import EngineFailure

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "add_rpc_servers",
    "amx_built",
    "gpu_devices",
    "gpu_offload_supported",
    "init_backend",
    "quiet_log",
    "reference_switch",
]

log = logging.getLogger(__name__)


def init_backend() -> None:
    """llama.cpp's process-wide init; repeating it is harmless."""
    if not os.environ.get("EDGE_RUN_LLAMA_LOG"):
        L.llama_log_set(quiet_log, ctypes.c_void_p(0))
    L.llama_backend_init()


# A call that an abort callback stopped (``Context.decode``'s ``abort``): asked for, so not an error to log.
# GGML_STATUS_ABORTED is 1, and llama_decode returns 2 for it.
_ABORTED = (b"failed with error 1", b"compute status: 1", b"failed to decode, ret = 2")


@L.llama_log_callback
def quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if level == 4 and not text.rstrip().endswith(_ABORTED):  # GGML_LOG_LEVEL_ERROR
        log.error("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


def amx_built() -> bool:
    """Whether llama.cpp's extra CPU buffer types include AMX's: built in (a native build) where the CPU has AMX.

    Its kernels crash: on a 2-vCPU Intel Xeon with AMX (a Firecracker VM), llama-cpp-python 0.3.36's
    ``ggml_backend_amx_mul_mat`` faults at ``ldtilecfg`` in the first ``llama_decode`` of two or more tokens
    (llama.cpp issue 20824 reports the same fault, still open)."""
    return b"AMX_INT8 = 1" in L.llama_print_system_info()


def gpu_offload_supported() -> bool:
    return bool(L.llama_supports_gpu_offload())


_GPU_TYPES = (1, 2)  # GGML_BACKEND_DEVICE_TYPE_GPU, _IGPU (unified memory: Apple silicon)


def _ggml() -> ctypes.CDLL:
    """ggml's device API, reached through libllama (llama-cpp-python binds none of it)."""
    from llama_cpp.llama_cpp import _lib

    lib: ctypes.CDLL = _lib
    if lib.ggml_backend_dev_memory.restype is not None:  # declared once: restype defaults to int
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_type.restype = ctypes.c_int
        for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.ggml_backend_dev_memory.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        lib.ggml_backend_dev_memory.restype = None
    return lib


# ggml-cpu's reference kernels (``ggml_backend_cpu_set_use_ref``): flash attention walks a row's whole KV on one thread
# (no tiles, no KV split between threads) and K-quant products take a call's rows one by one (no tiled kernel). So a
# row computes alike in any call, alone, beside other sequences' rows or with drafts, on any thread count. llama.cpp
# reaches its CPU backend only through the context's scheduler, a C++ method that libllama exports where symbols
# follow the Itanium ABI (Linux, macOS). Elsewhere the scheduler does without (``Context.reference``).
_GET_SCHED = "_ZNK13llama_context9get_schedEv"


def reference_switch(ptr: L.llama_context_p) -> Callable[[bool], None] | None:
    """What switches the reference kernels of a llama context's CPU backend on and off, for the calls that follow;
    None where that backend is out of reach."""
    try:
        lib = _ggml()
    except AttributeError:  # ggml's symbols are not reached through libllama here
        return None
    if not (hasattr(lib, _GET_SCHED) and hasattr(lib, "ggml_backend_cpu_set_use_ref")):
        return None
    get_sched = lib[_GET_SCHED]
    get_sched.argtypes, get_sched.restype = [ctypes.c_void_p], ctypes.c_void_p
    lib.ggml_backend_sched_get_n_backends.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_sched_get_backend.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.ggml_backend_sched_get_backend.restype = ctypes.c_void_p
    lib.ggml_backend_is_cpu.argtypes, lib.ggml_backend_is_cpu.restype = [ctypes.c_void_p], ctypes.c_bool
    lib.ggml_backend_cpu_set_use_ref.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    sched = get_sched(ctypes.cast(ptr, ctypes.c_void_p))
    if not sched:
        return None
    n = lib.ggml_backend_sched_get_n_backends(sched)
    backends = (lib.ggml_backend_sched_get_backend(sched, i) for i in range(n))
    cpu = next((b for b in backends if b and lib.ggml_backend_is_cpu(b)), None)
    return None if cpu is None else partial(lib.ggml_backend_cpu_set_use_ref, cpu)


def gpu_devices() -> list[GpuDevice]:
    """The GPUs this llama.cpp build can use (none on a CPU build), with their free memory now."""
    init_backend()
    if not gpu_offload_supported():
        return []
    lib = _ggml()
    found = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(dev) not in _GPU_TYPES:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        name = lib.ggml_backend_dev_name(dev) or b"GPU"
        description = lib.ggml_backend_dev_description(dev) or b""
        found.append(GpuDevice(name.decode(), description.decode(errors="replace"), free.value, total.value))
    return found


def add_rpc_servers(servers: tuple[str, ...]) -> None:
    """Make llama.cpp ``rpc-server`` workers (``host:port``) devices that layers can be offloaded to.

    As llama.cpp's own ``--rpc`` does: the RPC backend's ``ggml_backend_rpc_add_server`` registers each
    worker's devices, which then count as GPUs for ``--gpu-layers``. Needs a build with ``GGML_RPC=on``.
    """
    init_backend()
    if not servers:
        return
    if not L.llama_supports_rpc():
        raise EngineFailure(
            "rpc_servers needs llama-cpp-python built with RPC: "
            'CMAKE_ARGS="-DGGML_RPC=on" pip install --force-reinstall --no-deps llama-cpp-python==0.3.36'
        )
    lib = _ggml()
    lib.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    lib.ggml_backend_register.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_register.restype = None
    rpc = lib.ggml_backend_reg_by_name(b"RPC")
    address = lib.ggml_backend_reg_get_proc_address(rpc, b"ggml_backend_rpc_add_server") if rpc else None
    if not address:
        raise EngineFailure("this llama.cpp build has no RPC backend (ggml_backend_rpc_add_server)")
    add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(address)
    for server in servers:
        if server in _RPC_ADDED:
            continue
        _reachable(server)  # ggml aborts the whole process when it cannot connect
        registered = add_server(server.encode())
        if not registered:
            raise EngineFailure(f"could not reach the rpc-server at {server}")
        lib.ggml_backend_register(registered)
        _RPC_ADDED.add(server)


def _reachable(server: str) -> None:
    host, _, port = server.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise EngineFailure(f"could not reach the rpc-server at {server}: {exc}") from None


# llama.cpp's device registry is process-wide, so this mirrors it: a reloaded model must not add a worker twice
_RPC_ADDED: set[str] = set()
