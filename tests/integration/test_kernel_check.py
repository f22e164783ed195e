"""The kernel check at a model's first load on a machine (``engine/llama/kernels.py``): it finds rows that do not
compute alike, its verdict is kept and read back, and a model whose kernels fail it is served in safe mode, where a
request still gets the answer a fresh server gives it."""

from __future__ import annotations

import concurrent.futures
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_run.engine import EngineOptions
from edge_run.engine.llama import context, kernels
from edge_run.engine.llama.kernels import check, checked, machine_key
from edge_run.engine.llama.model import Model
from edge_run.engine.slots import TILE
from edge_run.engine.threads import CoreShare
from tests.integration.test_determinism import answer, client, comparable, turn
from tests.payloads import synth_pair
from tests.support import set_up, share_of_cores, start_server

pytestmark = pytest.mark.integration

FREE = TILE == 64  # x86-64: prompts are cut freely, and the check asks about it too


def test_the_check_passes_here_and_finds_k_quant_rows_past_the_row_limit(
    model_path: Path, k_quant_model_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Both test models compute their rows alike on the suite's CPUs (the suite proves each property on its own too),
    generated rows on the reference kernels in calls of any size. Without them, asked about K-quant rows in calls of
    63, past the row limit of 7 where ggml-cpu's tiled kernel takes the products, the check finds that they do not
    compute alike: it can fail."""
    if os.environ.get("GGML_CPU_TILED_MM") == "0":
        pytest.skip("GGML_CPU_TILED_MM=0 in this process: ggml's tiled kernel is off")
    threads = share_of_cores()
    for path in (model_path, k_quant_model_path):
        model = Model(path, gpu_layers=0)
        try:
            assert check(model, threads=threads, row_limit=None, free_cuts=FREE) == [], path.name
            with monkeypatch.context() as m:
                m.setattr(context, "reference_switch", lambda ptr: None)  # a llama.cpp that does not reach them
                assert check(model, threads=threads, row_limit=model.row_limit, free_cuts=FREE) == [], path.name
                if model.row_limit is not None:
                    assert check(model, threads=threads, row_limit=None, free_cuts=FREE) == ["rows"]
        finally:
            model.close()


def test_a_verdict_is_kept_by_machine_model_and_threads(tmp_path: Path, model_path: Path) -> None:
    runs: list[str] = []

    def run(verdict: list[str], keep: bool = True):
        return lambda: runs.append("ran") or (verdict, keep)

    file = tmp_path / "checks" / "kernel-checks.json"
    key = machine_key(model_path, 2, True)
    assert checked(file, key, run(["rows"])) == ["rows"]
    assert checked(file, key, run([])) == ["rows"] and runs == ["ran"]  # read back, not checked again
    assert checked(file, machine_key(model_path, 1, True), run([])) == [] and len(runs) == 2  # another thread count
    assert json.loads(file.read_text()) == {key: ["rows"], machine_key(model_path, 1, True): []}
    file.write_text("{half a fi")
    assert checked(file, key, run([])) == [] and len(runs) == 3  # a file that does not parse: checked again
    assert checked(None, key, run(["wide"])) == ["wide"] and len(runs) == 4  # nowhere to keep it
    other = machine_key(model_path, 3, True)
    assert checked(file, other, run([], keep=False)) == [] and len(runs) == 5  # checked on fewer threads: not kept
    assert checked(file, other, run(["rows"])) == ["rows"] and len(runs) == 6


def test_a_model_whose_kernels_fail_is_served_without_what_rests_on_them(
    tmp_path: Path, model_path: Path, make_server
) -> None:
    """A verdict that no property holds: the model runs on one thread, computes every prompt from its first token
    (nothing cached) a block a call, and a generated row a call, with no drafts. A conversation's turns, the last
    one beside another request, are a fresh server's answers, to the bit."""
    threads = share_of_cores()
    checks = tmp_path / "kernel-checks.json"
    checks.write_text(json.dumps({machine_key(model_path, threads, True): ["narrow", "wide", "rows", "threads"]}))
    env = {"EDGE_RUN_KERNEL_CHECKS": str(checks)}
    warm = make_server("--threads", str(threads), "--slots", "2", env=env)
    figures = warm.health()["models"][0]
    assert figures["kernels_failed"] == ["narrow", "wide", "rows", "threads"] and figures["threads_now"] == 1
    c = client(warm)
    messages = [{"role": "user", "content": "Tell me about the old mill by the river, and the miller's sacks."}]
    answers = []
    for question in ("Who lives there?", "And the bridge? Repeat: the stone bridge, the stone bridge."):
        got, cached, text = answer(c, turn(messages))
        answers.append(got)
        assert cached == 0
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": question}]
    other = turn([{"role": "user", "content": "Count from one to twenty, in words."}])
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        beside = pool.submit(answer, c, other)
        last, cached, _ = answer(c, turn(messages))
        beside.result()
    after = warm.health()["models"][0]
    assert cached == 0 and after["drafts_accepted"] + after["drafts_rejected"] == 0
    fresh = client(make_server("--threads", str(threads), "--slots", "2", env=env))
    assert answer(fresh, turn(messages))[0] == last
    assert answer(fresh, turn(messages[:3]))[0] == answers[1]


def test_an_f16_models_lone_rows_fail_here_and_each_takes_a_filler(tmp_path: Path, model_path: Path) -> None:
    """A tiny Qwen2-VL in F16 (``bench/synth.py qwen2vl``): on the suite's Xeon (AVX-512) a generated row alone in its
    call computes other logits than in any call of 2 rows or more, which agree. The check fails ``lone``, and the
    server gives every lone row a filler: an answer beside a stream is the answer alone, with drafts or without."""
    f16, _ = synth_pair("qwen2vl", tmp_path / "synth", model_path)
    model = Model(f16, gpu_layers=0)
    try:
        failed = check(model, threads=share_of_cores(), row_limit=model.row_limit, free_cuts=FREE)
    finally:
        model.close()
    if "lone" not in failed:
        pytest.skip(f"this CPU computes the F16 model's lone rows alike ({failed or 'every property holds'})")
    assert failed == ["lone"]
    ask = turn([{"role": "user", "content": "the stone bridge, the stone bridge, the stone bridge, the"}])
    answers = []
    for drafts in ("8", "0"):
        home = tmp_path / f"home-{drafts}"
        set_up(home, "models", "add", str(f16), "--id", "f16")
        server = start_server(home, "--model", "f16", "--slots", "2", "--draft-max", drafts)
        try:
            assert server.health()["models"][0]["kernels_failed"] == ["lone"]
            c = client(server)
            answers.append(comparable(c.chat.completions.create(model="f16", **ask))[0])
            long = {"max_tokens": 400, "logit_bias": {"0": -100, "2": -100}}  # SmolLM2's end tokens: it runs on
            hi = [{"role": "user", "content": "Hi."}]
            stream = c.chat.completions.create(model="f16", messages=hi, stream=True, **long)
            next(iter(stream))  # generating: the next request's rows are decoded beside its rows
            answers.append(comparable(c.chat.completions.create(model="f16", **ask))[0])
            assert sum(1 for _ in stream) > 10  # it was still generating when the other answer ended
            figures = server.health()["models"][0]
            assert figures["drafts_accepted"] + figures["drafts_rejected"] > 0  # the fillers
        finally:
            server.stop()
    assert answers == [answers[0]] * 4


def test_the_check_takes_its_share_of_the_cores_and_keeps_only_a_verdict_on_every_thread(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model loaded while another answers checks on its share of the cores (never more threads than cores), and
    such a verdict, on fewer threads than the model's, is used but not kept: the next load checks again."""
    seen: list[int] = []
    monkeypatch.setattr(kernels, "check", lambda model, *, threads, row_limit, free_cuts: seen.append(threads) or [])
    cores, file, model = CoreShare(2), tmp_path / "kernel-checks.json", SimpleNamespace(row_limit=None)
    options = EngineOptions(ctx=512, threads=2, gpu_layers=0, slots=1, max_queue=1, batch=64, cores=cores,
                            kernel_checks=file)  # fmt: skip
    answering = cores.join()
    cores.set_active(answering, True)

    def verdict() -> list[str]:
        return kernels.verdict(model, model_path, options, True, reference=True, row_limit=None)

    assert verdict() == [] and seen == [1] and not file.exists()
    cores.set_active(answering, False)
    assert verdict() == [] and seen == [1, 2] and file.exists()
    assert verdict() == [] and seen == [1, 2]
    assert cores.peak == 2
