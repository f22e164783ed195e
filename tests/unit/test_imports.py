"""Importing the engine's surface does not load llama.cpp: only loading a model, listing GPUs or building a
grammar does. A process where ``llama_cpp`` cannot be imported at all still imports ``edge_run.engine``, and
the layers above it (``edge_run.api``, ``edge_run.serving``), which reach the engine only through that surface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Any import of llama_cpp, or of a module inside it, fails in the child process
NO_LLAMA_CPP = """
import sys

class NoLlamaCpp:
    def find_spec(self, name, path=None, target=None):
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            raise ImportError(f"{name} is not importable here")
        return None

sys.meta_path.insert(0, NoLlamaCpp())
"""


def run_without_llama_cpp(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", NO_LLAMA_CPP + code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_engine_surface_imports_without_llama_cpp() -> None:
    done = run_without_llama_cpp(
        "import edge_run.engine as e\n"
        f"assert e.__file__.startswith({str(ROOT)!r}), e.__file__\n"
        "from edge_run.engine import Engine, EngineOptions, Generation, Chunk, SamplerSpec, json_grammar\n"
        "import edge_run.models.inventory, edge_run.gguf\n"
        "assert not any(m == 'llama_cpp' or m.startswith('llama_cpp.') for m in sys.modules)\n"
        "print('ok')\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_http_and_serving_layers_import_without_llama_cpp() -> None:
    done = run_without_llama_cpp(
        "import edge_run.api, edge_run.api.app, edge_run.api.deps, edge_run.server\n"
        "import edge_run.serving.request, edge_run.serving.prompt, edge_run.serving.sampling\n"
        "import edge_run.serving.tools, edge_run.serving.assembly, edge_run.serving.metering\n"
        "assert not any(m == 'llama_cpp' or m.startswith('llama_cpp.') for m in sys.modules)\n"
        "print('ok')\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_json_grammar_loads_llama_cpp_at_its_first_call_not_at_import() -> None:
    done = run_without_llama_cpp(
        "from edge_run.engine.llama.grammar import json_grammar\n"
        "try:\n"
        "    json_grammar(None)\n"
        "except ImportError as exc:\n"
        "    print('call:', exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "call: llama_cpp is not importable here"


def test_the_engine_surface_leaves_llama_cpp_unloaded() -> None:
    """Where llama_cpp is installed too: nothing at import time reaches for it."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, edge_run.engine; print('llama_cpp' in sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
