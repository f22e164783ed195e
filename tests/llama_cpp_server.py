"""``python -m llama_cpp.server`` (llama-cpp-python's own server, third-party to edge-run) with llama.cpp's
extra CPU buffer types off, as edge-run and ``llama-server --no-repack`` load models.

The upstream tests run it as a replica. Its default load puts weights in the AMX and repack buffers, and on
Intel CPUs with AMX the vendored llama.cpp then segfaults in ``llama_decode`` on any prompt of two or more
tokens. The server has no option for it, so this launcher changes the one default and runs the server as it is:

    python tests/llama_cpp_server.py --model M.gguf --port N ...   (the same arguments as llama_cpp.server)
"""

from __future__ import annotations

import runpy
import sys

import llama_cpp.llama_cpp as capi

_default_params = capi.llama_model_default_params


def _params_without_extra_buffer_types() -> capi.llama_model_params:
    params = _default_params()
    params.use_extra_bufts = False
    print("llama_cpp_server.py: a model loads with use_extra_bufts=False", file=sys.stderr, flush=True)
    return params


if __name__ == "__main__":
    capi.llama_model_default_params = _params_without_extra_buffer_types  # what llama_cpp.Llama calls
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
