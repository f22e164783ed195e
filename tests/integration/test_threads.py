"""llama.cpp's compute threads are pinned one per core, unless the user configures OpenMP otherwise."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import openai
import pytest

from tests.conftest import MODEL_ID

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
        reason="reads thread affinity from /proc; needs 2 CPUs",
    ),
]


def single_cpu_threads(pid: int) -> list[str]:
    """The CPU of every thread of ``pid`` that may run on exactly one CPU."""
    pinned = []
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        allowed = next(line for line in status.read_text().splitlines() if line.startswith("Cpus_allowed_list:"))
        cpus = allowed.split(":", 1)[1].strip()
        if cpus.isdigit():
            pinned.append(cpus)
    return pinned


@pytest.mark.parametrize("user_setting", [None, "false"])
def test_compute_threads_are_pinned_unless_the_user_says_otherwise(make_server, monkeypatch, user_setting):
    monkeypatch.delenv("OMP_PROC_BIND", raising=False)
    monkeypatch.delenv("OMP_PLACES", raising=False)
    env = {"OMP_PROC_BIND": user_setting} if user_setting else None
    server = make_server("--threads", "2", "--slots", "1", env=env)
    client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
    client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    pinned = single_cpu_threads(server.proc.pid)
    if user_setting is None:
        assert len(pinned) >= 2
        assert len(set(pinned)) >= 2  # one core each, not stacked on one
    else:
        assert pinned == []
