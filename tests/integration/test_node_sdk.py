"""The official Node.js openai SDK against the real server (installed from npm by .ci/run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import MODEL_ID

pytestmark = pytest.mark.integration

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture(scope="module")
def node_sdk() -> Path:
    """The SDK comes from the npm registry on first use; without Node.js the test is skipped (never in CI)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Node.js and npm for the Node SDK test")
        pytest.skip("Node.js is not installed")
    if not (NODE_DIR / "node_modules" / "openai").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=600)
    return NODE_DIR / "sdk_check.mjs"


def test_node_sdk_chat_stream_and_tool_call(server, node_sdk):
    out = subprocess.run(
        ["node", str(node_sdk), server.base_url, server.key, MODEL_ID],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["content"]
    assert result["usage"]["total_tokens"] == result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"]
    assert result["streamed"] == result["content"]
    assert result["finish"] in ("stop", "length")
    assert result["tool"]["name"] == "get_weather"
    assert result["tool"]["finish"] == "tool_calls"
    assert isinstance(result["tool"]["arguments"]["city"], str)
