"""Issue 24's scenarios of ``bench.py --scenario``: each compares edge-run with its peers in one run.

- ``long-prompts``: cold time to first token at ``--sizes`` prompt tokens (700, 3,000 and 8,000). Every prompt
  is new, so no cache holds it.
- ``conversation``: a ``--turns``-turn conversation (12). Each turn adds about ``--turn-tokens`` user tokens
  (150) and an answer of ``--answer-tokens`` (100). The figure is the sum of the turns' times to first token.
- ``repeats``: answers of ``--answer-tokens`` (400) that repeat the prompt's text: a 40-line function rewritten
  with one name changed (``edit``) and a prose passage repeated (``copy``: a 135M model drifts from code after a
  few lines but copies prose, so its drafts are accepted as a larger model's would be), beside an ordinary
  answer (``chat``). The figures are decode tokens/s and, where the server reports them, accepted and rejected
  draft tokens.

Every answer is greedy, with the end-of-generation tokens banned, so it has exactly the tokens asked for.

Requests go back to back, as a user sends them: between one server's requests nothing waits for edge-run's
background work (the idle refresh of the latest answer). The bench waits for it only before it switches
servers, so that it never runs under another server's measurement. Each round measures every server once, in
the opposite order from the round before. A ratio pairs two servers within a round; tables show medians.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from scenarios import Target
from sse_client import sse_events
from workload_texts import FUNCTION, PASSAGE, RENAMES, TOPICS, WORDS

__all__ = ["NAMES", "Reply", "context_needed", "run"]

NAMES = ("long-prompts", "conversation", "repeats")
NO_DRAFT = "edge-run, no drafts"  # the name of the edge-run started with --no-draft-flags


@dataclass
class Reply:
    """One streamed answer, as the client saw it, and what the server reported about it."""

    ttft: float  # seconds from sending to the first token
    duration: float  # first token to last
    tokens: int
    text: str
    prompt_tokens: int = 0
    cached: int | None = None  # prompt tokens taken from the server's cache
    accepted: int | None = None  # draft tokens kept
    rejected: int | None = None  # draft tokens thrown away

    @property
    def rate(self) -> float:
        """Decode tokens/s, first token to last."""
        return (self.tokens - 1) / self.duration if self.duration > 0 else math.nan


def _report(r: Reply, chunk: dict) -> None:
    """Copy what a chunk reports about the request into ``r``: OpenAI's usage, or llama-server's timings."""
    usage = chunk.get("usage") or {}
    r.prompt_tokens = usage.get("prompt_tokens", r.prompt_tokens)
    r.tokens = usage.get("completion_tokens", r.tokens)
    r.cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", r.cached)
    details = usage.get("completion_tokens_details") or {}
    r.accepted = details.get("accepted_prediction_tokens", r.accepted)
    r.rejected = details.get("rejected_prediction_tokens", r.rejected)
    timings = chunk.get("timings") or {}
    if "cache_n" in timings and r.cached is None:
        r.cached = timings["cache_n"]
    if "draft_n" in timings and r.accepted is None:
        r.accepted = timings["draft_n_accepted"]
        r.rejected = timings["draft_n"] - timings["draft_n_accepted"]


async def reply(target: Target, body: dict) -> Reply:
    """Stream one chat completion from ``target`` and time it."""
    _, url, key, _ = target
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r, parts, chunks = Reply(0.0, 0.0, 0, ""), [], 0
    start = time.monotonic()
    first = last = 0.0
    async for data in sse_events(url + "/chat/completions", headers, body):
        if data == b"[DONE]":
            continue
        chunk = msgspec.json.decode(data)
        for choice in chunk.get("choices", []):
            text = (choice.get("delta") or {}).get("content")
            now = time.monotonic()
            if text:
                parts.append(text)
                chunks += 1
                last = now
            # the first token, not a first event that only names the role (sent before the prompt is read)
            if text or choice.get("finish_reason"):
                first = first or now
        _report(r, chunk)
    r.ttft, r.duration, r.text = first - start, max(0.0, last - first), "".join(parts)
    r.tokens = r.tokens or chunks  # a server that ignores include_usage: its content chunks
    return r


def body(target: Target, messages: list[dict], max_tokens: int, eog: list[int]) -> dict:
    """A greedy streamed request whose answer has exactly ``max_tokens`` tokens."""
    return {
        "model": target[3],
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": {str(t): -100 for t in eog},
        "ignore_eos": True,  # llama-server's own switch; other servers ignore the field
    }


def sentences(rng: random.Random, words: int) -> str:
    """``words`` words of filler prose, in sentences of 12: new text for every ``rng``."""
    picked = [rng.choice(WORDS) for _ in range(words)]
    out = [" ".join(picked[i : i + 12]).capitalize() + "." for i in range(0, words, 12)]
    return " ".join(out)


def long_messages(salt: str, words: int) -> list[dict]:
    rng = random.Random(salt)
    return [
        {"role": "system", "content": f"Run {salt}. You read documents and answer questions about them."},
        {"role": "user", "content": f"{sentences(rng, words)}\n\nHow many sentences are there above?"},
    ]


def alternate(targets: list[Target], r: int) -> list[Target]:
    """Round ``r``'s order: every other round reversed, so that no server always goes first."""
    return targets if r % 2 == 0 else targets[::-1]


def calibrate(target: Target, eog: list[int]) -> tuple[float, float]:
    """Tokens per filler word and the tokens around them, read from two prompts' ``usage``."""
    counts = [asyncio.run(reply(target, body(target, long_messages("calibrate", n), 1, eog))).prompt_tokens
              for n in (60, 300)]  # fmt: skip
    if not all(counts):
        return 1.2, 40.0  # a server that reports no usage: SmolLM2's tokenizer on this filler
    slope = (counts[1] - counts[0]) / 240
    return slope, counts[0] - 60 * slope


def words_for(tokens: int, scale: tuple[float, float]) -> int:
    slope, base = scale
    return max(1, round((tokens - base) / slope))


def context_needed(scenario: str, sizes: list[int], turns: int, turn_tokens: int, answer: int) -> int:
    """Tokens of context one slot needs for ``scenario``, with room to spare, rounded up to a multiple of 1024."""
    need = {
        "long-prompts": max(sizes) + 64,
        "conversation": 64 + turns * (turn_tokens + answer + 16),
        "repeats": 700 + answer,
    }[scenario]
    return math.ceil((need + 256) / 1024) * 1024


def median(values: Iterable[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return statistics.median(v) if v else math.nan


def fmt(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def print_goals(rows: list[tuple[str, list[float], float | None]]) -> None:
    """The paired ratios (above 1: edge-run is faster), each with the issue's target where it sets one."""
    print(f"\n{'paired by round (above 1: edge-run faster)':58} {'median':>7} {'target':>7} {'':8} rounds")
    for label, ratios, goal in rows:
        med = median(ratios)
        verdict = "-" if goal is None or math.isnan(med) else ("met" if med >= goal else "not met")
        target = f">= {goal:.2f}" if goal is not None else "-"
        ratio = f"{med:.2f}x" if not math.isnan(med) else "-"
        print(f"{label[:58]:58} {ratio:>7} {target:>7} {verdict:8} {' '.join(f'{x:.2f}' for x in ratios) or '-'}")


def peer_of(targets: list[Target], *, ngram: bool = False) -> str | None:
    """The server a target is measured against: llama-server (with or without n-gram drafts), else the first
    ``--compare`` server; None where there is none."""
    others = [t[0] for t in targets[1:] if not t[0].startswith("edge-run")]
    named = [n for n in others if n.startswith("llama-server") and ("ngram" in n) == ngram]
    if named:
        return named[0]
    return None if ngram else next((n for n in others if not n.startswith("llama-server")), None)


def ratios(runs: dict[Any, list[float]], num: Any, den: Any) -> list[float]:
    """Per round, ``runs[num]`` ÷ ``runs[den]``; [] if either is missing (a peer that was not started)."""
    if num not in runs or den not in runs:
        return []
    return [a / b for a, b in zip(runs[num], runs[den], strict=True)]


def versus(targets: list[Target], peer: str | None) -> list[tuple[str, str | None]]:
    """(label, name) of every server edge-run is paired with; the issue's peer gets a row even when absent."""
    rows: list[tuple[str, str | None]] = [(t[0], t[0]) for t in targets[1:]]
    return rows if peer is not None else [("llama-server (not started)", None), *rows]


Settle = Callable[[str], None]  # bench.settle: wait for a server's background work


def long_prompts(targets: list[Target], args: Any, eog: list[int], settle: Settle) -> None:
    scale = calibrate(targets[0], eog)
    runs: dict[tuple[str, int], list[Reply]] = {}
    for r in range(args.rounds):
        for t in alternate(targets, r):
            for size in args.sizes:  # the same new text for every server in a round
                messages = long_messages(f"{os.getpid()}-{r}-{size}", words_for(size, scale))
                runs.setdefault((t[0], size), []).append(asyncio.run(reply(t, body(t, messages, 1, eog))))
            settle(t[1])
    print(f"long-prompts: cold time to first token, every prompt new, one slot, median of {args.rounds} rounds\n")
    print(f"{'prompt':>7}  {'server':40} {'tokens':>6} {'cached':>6} {'TTFT ms':>8} {'prompt tok/s':>12}")
    for size in args.sizes:
        for name, *_ in targets:
            replies = runs[(name, size)]
            ttft, n = median(x.ttft for x in replies), median(x.prompt_tokens for x in replies)
            cached = fmt(median(x.cached or 0 for x in replies))  # the start of the template, at most
            print(f"{f'~{size}':>7}  {name[:40]:40} {fmt(n):>6} {cached:>6} {ttft * 1000:>8.0f} {fmt(n / ttft):>12}")
    peer = peer_of(targets)
    ttfts = {k: [x.ttft for x in v] for k, v in runs.items()}
    print_goals([
        (f"~{size} tokens: TTFT {label} ÷ edge-run", ratios(ttfts, (name, size), ("edge-run", size)),
         1.0 if name == peer else None)
        for size in args.sizes for label, name in versus(targets, peer)
    ])  # fmt: skip


async def chat(target: Target, salt: str, args: Any, words: int, eog: list[int]) -> list[Reply]:
    """One conversation of ``args.turns`` turns, each asked ``args.pause`` seconds after the previous answer ended."""
    rng = random.Random(salt)
    history = [{"role": "system", "content": f"Session {salt}. You continue the user's story, one part a turn."}]
    replies, answer = [], args.answer_tokens
    for turn in range(args.turns):
        if turn and args.pause:
            await asyncio.sleep(args.pause)  # a person reads the answer and types
        history.append({"role": "user", "content": f"Part {turn + 1}. {sentences(rng, words)} Go on."})
        replies.append(await reply(target, body(target, history, answer, eog)))
        history.append({"role": "assistant", "content": replies[-1].text})
    return replies


def conversation(targets: list[Target], args: Any, eog: list[int], settle: Settle) -> None:
    slope, _ = calibrate(targets[0], eog)
    words = words_for(args.turn_tokens, (slope, 10.0))  # about 10 tokens of template and "Part N." a turn
    runs: dict[str, list[list[Reply]]] = {}
    for r in range(args.rounds):
        for t in alternate(targets, r):
            runs.setdefault(t[0], []).append(asyncio.run(chat(t, f"{os.getpid()}-{r}", args, words, eog)))
            settle(t[1])
    print(
        f"conversation: {args.turns} turns, ~{args.turn_tokens} user tokens and a {args.answer_tokens}-token answer "
        f"each, asked {f'{args.pause:g} s after each answer' if args.pause else 'back to back'}; time to first token "
        f"(cached prompt tokens), median of {args.rounds} rounds\n"
    )
    names = [t[0] for t in targets]
    print(f"{'turn':>4} {'prompt':>6}  " + "  ".join(f"{n[:24]:>24}" for n in names))
    for turn in range(args.turns):
        cells = []
        for n in names:
            at = [c[turn] for c in runs[n]]
            cells.append(f"{median(x.ttft for x in at) * 1000:.0f} ms ({fmt(median(x.cached or 0 for x in at))})")
        print(f"{turn + 1:>4} {fmt(median(c[turn].prompt_tokens for c in runs[names[0]])):>6}  "
              + "  ".join(f"{c:>24}" for c in cells))  # fmt: skip
    sums = {n: [sum(x.ttft for x in c) for c in runs[n]] for n in names}
    print(f"{'sum':>4} {'':>6}  " + "  ".join(f"{f'{median(sums[n]) * 1000:.0f} ms':>24}" for n in names))
    complete = {n: all(x.tokens == args.answer_tokens for c in runs[n] for x in c) for n in names}
    print(f"{'complete':>11}  " + "  ".join(f"{complete[n]!s:>24}" for n in names))
    peer = peer_of(targets)
    goal = None if args.pause else 1.0  # the target is back to back
    print_goals([
        (f"sum of TTFT: {label} ÷ edge-run", ratios(sums, name, "edge-run"), goal if name == peer else None)
        for label, name in versus(targets, peer)
    ])  # fmt: skip


KINDS = ("edit", "copy", "chat")
TARGETS = {("edit", "ngram"): 1.0, ("copy", "ngram"): 1.0, ("edit", "no-draft"): 1.5, ("copy", "no-draft"): 1.5,
           ("chat", "no-draft"): 0.97}  # fmt: skip


def repeat_requests(salt: str, r: int) -> dict[str, list[dict]]:
    """Round ``r``'s requests, new each round: no cache holds the prompt, no n-gram table an earlier answer."""
    session = {"role": "system", "content": f"Session {salt}."}
    old, new = RENAMES[r % len(RENAMES)]
    edit = f"Rewrite this function with the name `{old}` renamed to `{new}`, changing nothing else. "
    copy = "Repeat the following text exactly, with nothing before or after it.\n\n"
    story = f"Tell me a long story about {TOPICS[r % len(TOPICS)]}, with many details."
    return {
        "edit": [session, {"role": "user", "content": f"{edit}Reply with the code only.\n\n```python\n{FUNCTION}```"}],
        "copy": [session, {"role": "user", "content": copy + PASSAGE}],
        "chat": [session, {"role": "user", "content": story}],
    }


def repeats(targets: list[Target], args: Any, eog: list[int], settle: Settle) -> None:
    runs: dict[tuple[str, str], list[Reply]] = {}
    for r in range(args.rounds):
        requests = repeat_requests(f"{os.getpid()}-{r}", r)
        for t in alternate(targets, r):
            for kind, messages in requests.items():
                reply_ = asyncio.run(reply(t, body(t, messages, args.answer_tokens, eog)))
                runs.setdefault((kind, t[0]), []).append(reply_)
            settle(t[1])
    print(
        f"repeats: answers of {args.answer_tokens} tokens, greedy, one stream, median of {args.rounds} rounds:\n"
        "decode tokens/s (first token to last), draft tokens accepted and rejected where the server reports them\n"
    )
    print(f"{'request':8} {'server':40} {'tokens':>6} {'tok/s':>7} {'accepted':>8} {'rejected':>8}")
    for kind, name in ((kind, t[0]) for kind in KINDS for t in targets):
        replies = runs[(kind, name)]
        acc = [x.accepted for x in replies if x.accepted is not None]
        rej = [x.rejected for x in replies if x.rejected is not None]
        print(
            f"{kind:8} {name[:40]:40} {median(x.tokens for x in replies):>6.0f} {median(x.rate for x in replies):>7.1f}"
            f" {fmt(median(acc) if acc else None):>8} {fmt(median(rej) if rej else None):>8}"
        )
    rates = {k: [x.rate for x in v] for k, v in runs.items()}
    print_goals(repeat_goals(targets, rates))


def repeat_goals(targets: list[Target], rates: dict[Any, list[float]]) -> list[tuple[str, list[float], float | None]]:
    """edge-run ÷ every other server, for every request; the issue's targets name their server even when absent."""
    ngram, others = peer_of(targets, ngram=True), [t[0] for t in targets[1:]]
    roles = {name: "ngram" if name == ngram else "no-draft" if name == NO_DRAFT else "" for name in others}
    if ngram is None:
        roles["llama-server ngram-mod (not started)"] = "ngram"
    if NO_DRAFT not in roles:
        roles["edge-run, no drafts (not started)"] = "no-draft"
    rows = [
        (f"{kind}: edge-run ÷ {name}", ratios(rates, (kind, "edge-run"), (kind, name)), TARGETS.get((kind, role)))
        for kind in KINDS for name, role in roles.items()
    ]  # fmt: skip
    return [row for row in rows if row[1] or row[2] is not None]  # an absent server: only its targets' rows


def run(scenario: str, targets: list[Target], args: Any, eog: list[int], settle: Settle) -> None:
    """Run ``scenario`` on ``targets`` (edge-run first) and print its tables."""
    {"long-prompts": long_prompts, "conversation": conversation, "repeats": repeats}[scenario](
        targets, args, eog, settle
    )
