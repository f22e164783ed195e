"""``hf:`` references, file choice, and pulls through the real huggingface_hub against a local Hub on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from huggingface_hub import constants, try_to_load_from_cache

from edge_run.models.pull import HfRef, PullError, parse_hf, pick_files, pick_projector, pull, quant_of
from tests.hf_fixture import HubFixture

if TYPE_CHECKING:
    from collections.abc import Iterator

MiB = 1 << 20
TINY = "acme/tiny-GGUF"
SPLIT = "acme/split-GGUF"
BIG = "acme/big-GGUF"
GATED = "acme/gated-GGUF"
SECRET = "hf_fixture_secret"
DEAD_ENDPOINT = "http://127.0.0.1:9"  # nothing listens there: a test that forgets the fixture fails fast, offline

Q4 = b"GGUF" + os.urandom(2 * MiB + 7)
Q8 = b"GGUF" + os.urandom(MiB // 2)
PARTS = [b"GGUF" + os.urandom(MiB + i) for i in range(3)]
# huggingface_hub writes what it streams in 10 MiB chunks; resuming from a byte > 0 needs more than that
BIG_FILE = b"GGUF" + os.urandom(12 * MiB + 3)

REPOS = {
    TINY: {
        "tiny-Q4_K_M.gguf": Q4,
        "tiny-Q8_0.gguf": Q8,
        "mmproj-tiny-F16.gguf": b"GGUF-proj",
        "README.md": b"# tiny\n",
    },
    SPLIT: {f"Q4_K_M/split-Q4_K_M-{i:05d}-of-00003.gguf": part for i, part in enumerate(PARTS, 1)},
    BIG: {"big-Q4_0.gguf": BIG_FILE},
    GATED: {"gated-BF16.gguf": Q8},
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def no_real_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user token, no telemetry, and an endpoint where nothing answers unless a test points it at the fixture."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_ENDPOINT", DEAD_ENDPOINT)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub read HF_HOME at import time: point its token files into the temp dir too
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubFixture]:
    with HubFixture(REPOS, gated={GATED: SECRET}) as fixture:
        monkeypatch.setenv("HF_ENDPOINT", fixture.url)
        yield fixture


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hub-cache"


# -- parse_hf ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ref"),
    [
        ("hf:acme/tiny-GGUF", HfRef("acme/tiny-GGUF", None, None)),
        ("hf:acme/tiny-GGUF:Q4_K_M", HfRef("acme/tiny-GGUF", "Q4_K_M", None)),
        ("hf:acme/tiny-GGUF:q8_0", HfRef("acme/tiny-GGUF", "q8_0", None)),
        ("hf:unsloth/Qwen3-0.6B-GGUF:UD-Q4_K_XL", HfRef("unsloth/Qwen3-0.6B-GGUF", "UD-Q4_K_XL", None)),
        ("hf:acme/tiny-GGUF/tiny-Q8_0.gguf", HfRef("acme/tiny-GGUF", None, "tiny-Q8_0.gguf")),
        ("hf:acme/x/Q4_K_M/m-00001-of-00002.gguf", HfRef("acme/x", None, "Q4_K_M/m-00001-of-00002.gguf")),
    ],
)
def test_parse_hf_forms(spec: str, ref: HfRef) -> None:
    assert parse_hf(spec) == ref
    assert parse_hf(spec).revision == "main"


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("acme/tiny-GGUF", "does not start with 'hf:'"),
        ("huggingface:acme/tiny-GGUF", "does not start with 'hf:'"),
        ("hf:", "needs OWNER/REPO"),
        ("hf:tiny-GGUF", "needs OWNER/REPO"),
        ("hf:/tiny-GGUF", "needs OWNER/REPO"),
        ("hf:acme/", "needs OWNER/REPO"),
        ("hf:acme/tiny GGUF", "needs OWNER/REPO"),
        ("hf:acme/tiny-GGUF:", "quant after ':' is empty"),
        ("hf:acme/tiny-GGUF:Q4 K", "not a quant name"),
        ("hf:acme/tiny-GGUF/README.md", "not a .gguf file"),
        ("hf:acme/tiny-GGUF/", "not a file path"),
        ("hf:acme/tiny-GGUF/../x.gguf", "not a file path"),
        ("hf:acme/tiny-GGUF/a.gguf:Q4_0", "not both"),
    ],
)
def test_parse_hf_rejects(spec: str, why: str) -> None:
    with pytest.raises(ValueError, match=r"expected hf:OWNER/REPO") as err:
        parse_hf(spec)
    assert why in str(err.value)


# -- pick_files and quant_of ------------------------------------------------------------------

ZOO = [
    "README.md",
    "m-F16.gguf",
    "m-IQ4_XS.gguf",
    "m-Q4_0.gguf",
    "m-Q4_0_4_4.gguf",
    "m-Q4_K_M.gguf",
    "m-Q4_K_M_L.gguf",
    "m-Q8_0.gguf",
    "mmproj-m-Q4_K_M.gguf",
]


def ref(quant: str | None = None, filename: str | None = None) -> HfRef:
    return HfRef("acme/m", quant, filename)


def test_default_pick_is_q4_k_m_then_q4_0_then_first() -> None:
    assert pick_files(ref(), ZOO) == ["m-Q4_K_M.gguf"]
    assert pick_files(ref(), [f for f in ZOO if "Q4_K_M" not in f]) == ["m-Q4_0.gguf"]
    assert pick_files(ref(), ["z-Q8_0.gguf", "a-IQ4_XS.gguf", "mmproj-a.gguf"]) == ["a-IQ4_XS.gguf"]


def test_quant_matches_a_whole_token_any_case() -> None:
    assert pick_files(ref("q4_k_m"), ZOO) == ["m-Q4_K_M.gguf"]
    assert pick_files(ref("Q4_K_M_L"), ZOO) == ["m-Q4_K_M_L.gguf"]
    assert pick_files(ref("Q4_0_4_4"), ZOO) == ["m-Q4_0_4_4.gguf"]
    assert pick_files(ref("Q4_0"), ["m-Q4_0_4_4.gguf", "n.Q4_0.gguf"]) == ["n.Q4_0.gguf"]
    assert pick_files(ref("Q4_K_M"), ["sub/Q4_K_M/m-00001-of-00001.gguf"]) == ["sub/Q4_K_M/m-00001-of-00001.gguf"]
    with pytest.raises(PullError, match=r"no GGUF file for quant Q4_K") as err:
        pick_files(ref("Q4_K"), ZOO)
    assert "m-Q4_K_M.gguf" in str(err.value)
    assert "mmproj" not in str(err.value)


def test_explicit_file() -> None:
    assert pick_files(ref(filename="m-Q8_0.gguf"), ZOO) == ["m-Q8_0.gguf"]
    assert pick_files(ref(filename="mmproj-m-Q4_K_M.gguf"), ZOO) == ["mmproj-m-Q4_K_M.gguf"]
    with pytest.raises(PullError, match=r"no file 'm-Q2_K.gguf'; its GGUF files: m-F16.gguf, m-IQ4_XS.gguf"):
        pick_files(ref(filename="m-Q2_K.gguf"), ZOO)


def test_split_gguf_is_fetched_whole() -> None:
    parts = [f"d/m-Q4_K_M-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    files = ["m-Q8_0.gguf", *reversed(parts)]
    assert pick_files(ref(), files) == parts
    assert pick_files(ref("Q4_K_M"), files) == parts
    assert pick_files(ref(filename=parts[1]), files) == parts
    with pytest.raises(PullError, match=r"lacks part\(s\) of split model d/m-Q4_K_M-00001-of-00003.gguf: .*00002"):
        pick_files(ref(), [parts[0], parts[2]])
    with pytest.raises(PullError, match=r"00001-of-00003"):
        pick_files(ref(filename=parts[2]), parts[1:])


def test_projectors_and_non_gguf_are_never_models() -> None:
    with pytest.raises(PullError, match=r"no GGUF model files; its GGUF files: mmproj-F16.gguf"):
        pick_files(ref(), ["mmproj-F16.gguf", "README.md"])
    with pytest.raises(PullError, match=r"no GGUF model files; its GGUF files: none"):
        pick_files(ref(), ["model.safetensors", "README.md"])


@pytest.mark.parametrize(
    ("filename", "quant"),
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-0.5b-instruct-q8_0.gguf", "Q8_0"),
        ("model.Q5_K_S.gguf", "Q5_K_S"),
        ("gemma-3-4b-it-IQ4_XS.gguf", "IQ4_XS"),
        ("phi-4-BF16.gguf", "BF16"),
        ("tiny_f16.gguf", "F16"),
        ("Qwen3-0.6B-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("Q4_K_M/m-Q4_K_M-00001-of-00003.gguf", "Q4_K_M"),
        ("bitnet-TQ1_0.gguf", "TQ1_0"),
        ("Qwen2.5-7B.gguf", None),
        ("model.gguf", None),
    ],
)
def test_quant_of(filename: str, quant: str | None) -> None:
    assert quant_of(filename) == quant


# -- pull -------------------------------------------------------------------------------------


def test_pull_puts_a_verified_file_in_the_hf_cache(
    hub: HubFixture, cache: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pulled = pull(parse_hf(f"hf:{TINY}"), cache, progress=False)

    commit = hub.commit(TINY)
    assert (pulled.repo, pulled.revision, pulled.quant) == (TINY, commit, "Q4_K_M")
    [file] = pulled.files
    assert (file.filename, file.sha256, file.size) == ("tiny-Q4_K_M.gguf", sha256(Q4), len(Q4))
    repo_dir = cache / "models--acme--tiny-GGUF"
    assert pulled.path == file.path == repo_dir / "snapshots" / commit / "tiny-Q4_K_M.gguf"
    assert file.path.is_symlink() and file.path.resolve() == repo_dir / "blobs" / sha256(Q4)
    assert file.path.read_bytes() == Q4
    assert (repo_dir / "refs" / "main").read_text() == commit
    assert try_to_load_from_cache(TINY, "tiny-Q4_K_M.gguf", cache_dir=cache) == str(file.path)
    assert len(hub.gets_of(TINY, "tiny-Q4_K_M.gguf")) == 1
    assert hub.gets_of(TINY, "tiny-Q8_0.gguf") == []
    assert capfd.readouterr() == ("", "")

    again = pull(parse_hf(f"hf:{TINY}:Q4_K_M"), cache, progress=False)
    assert again == pulled
    assert len(hub.gets_of(TINY, "tiny-Q4_K_M.gguf")) == 1  # not downloaded twice
    assert capfd.readouterr() == ("", "")


def test_pull_by_file_name_and_with_a_progress_bar(
    hub: HubFixture, cache: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pulled = pull(parse_hf(f"hf:{TINY}/tiny-Q8_0.gguf"), cache)
    assert pulled.quant == "Q8_0"
    assert pulled.path.read_bytes() == Q8
    assert "tiny-Q8_0.gguf" in capfd.readouterr().err


def test_pull_split_model_gets_every_part_in_order(hub: HubFixture, cache: Path) -> None:
    pulled = pull(parse_hf(f"hf:{SPLIT}:Q4_K_M"), cache, progress=False)
    assert pulled.quant == "Q4_K_M"
    assert [f.filename for f in pulled.files] == [f"Q4_K_M/split-Q4_K_M-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    assert [f.path.read_bytes() for f in pulled.files] == PARTS
    assert [f.sha256 for f in pulled.files] == [sha256(p) for p in PARTS]
    assert pulled.path == pulled.files[0].path


def test_pull_resumes_a_cut_download(hub: HubFixture, cache: Path) -> None:
    cut_at = 10 * MiB + 12_345
    hub.cut_once(BIG, "big-Q4_0.gguf", cut_at)

    pulled = pull(parse_hf(f"hf:{BIG}"), cache, progress=False)

    assert pulled.files[0].sha256 == sha256(BIG_FILE)
    assert pulled.path.read_bytes() == BIG_FILE
    gets = hub.gets_of(BIG, "big-Q4_0.gguf")
    assert "range" not in gets[0]
    resumed = [int(g["range"].removeprefix("bytes=").rstrip("-")) for g in gets[1:] if "range" in g]
    assert resumed and 0 < resumed[-1] <= cut_at, gets


def test_pull_refuses_a_file_whose_hash_is_not_the_hubs(hub: HubFixture, cache: Path) -> None:
    hub.lie_about_sha(TINY, "tiny-Q8_0.gguf")
    advertised = hub.sha256(TINY, "tiny-Q8_0.gguf")

    with pytest.raises(PullError, match=r"tiny-Q8_0.gguf has sha256 (\w+), but the Hub says (\w+); refusing it") as err:
        pull(parse_hf(f"hf:{TINY}:Q8_0"), cache, progress=False)

    assert sha256(Q8) in str(err.value) and advertised in str(err.value)
    snapshot = cache / "models--acme--tiny-GGUF" / "snapshots" / hub.commit(TINY) / "tiny-Q8_0.gguf"
    assert not os.path.lexists(snapshot)
    left = [p for p in cache.rglob("*") if p.is_file() and not p.is_symlink()]
    assert not any(p.stat().st_size == len(Q8) for p in left), left
    assert try_to_load_from_cache(TINY, "tiny-Q8_0.gguf", cache_dir=cache, revision=hub.commit(TINY)) is None


def test_pull_unknown_repo_revision_quant(hub: HubFixture, cache: Path) -> None:
    with pytest.raises(
        PullError, match=rf"^no model repo acme/nope on {hub.url} \(if it is private or gated, set HF_TOKEN\)$"
    ):
        pull(parse_hf("hf:acme/nope"), cache, progress=False)
    with pytest.raises(PullError, match=r"^acme/tiny-GGUF has no revision 'v9' on "):
        pull(HfRef(TINY, None, None, revision="v9"), cache, progress=False)
    with pytest.raises(
        PullError, match=r"^acme/tiny-GGUF has no GGUF file for quant Q2_K; its GGUF files: tiny-Q4_K_M"
    ):
        pull(parse_hf(f"hf:{TINY}:Q2_K"), cache, progress=False)
    assert not any(cache.rglob("*.gguf"))


def test_pull_needs_an_lfs_sha256(hub: HubFixture, cache: Path) -> None:
    with pytest.raises(PullError, match=r"README.md is not an LFS file on the Hub, so there is no sha256"):
        pull(HfRef(TINY, None, "README.md"), cache, progress=False)


def test_gated_repo_wants_hf_token(hub: HubFixture, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PullError, match=r"^acme/gated-GGUF is gated: .*set HF_TOKEN"):
        pull(parse_hf(f"hf:{GATED}"), cache, progress=False)
    assert pull(parse_hf(f"hf:{GATED}"), cache, token=SECRET, progress=False).path.read_bytes() == Q8

    monkeypatch.setenv("HF_TOKEN", SECRET)  # token=None: huggingface_hub's own lookup, done at call time
    pulled = pull(parse_hf(f"hf:{GATED}"), tmp_cache := cache.with_name("other-cache"), progress=False)
    assert pulled.path.is_relative_to(tmp_cache) and pulled.quant == "BF16"
    assert hub.requests[-1][2]["authorization"] == f"Bearer {SECRET}"


def test_endpoint_argument_beats_the_environment(hub: HubFixture, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", DEAD_ENDPOINT)
    assert pull(parse_hf(f"hf:{TINY}"), cache, endpoint=hub.url, progress=False).path.read_bytes() == Q4


def test_unreachable_hub_is_a_pull_error(cache: Path) -> None:
    with pytest.raises(PullError, match=rf"^fetching acme/tiny-GGUF@main from {DEAD_ENDPOINT} failed: "):
        pull(parse_hf(f"hf:{TINY}"), cache, progress=False)


def test_a_pull_cancelled_from_its_progress_leaves_no_partial_file(tmp_path: Path) -> None:
    from edge_run.errors import PullCancelled

    data = os.urandom(24 << 20)  # several of huggingface_hub's 10 MB chunks

    class CancelAfterFirstChunk:
        def add_task(self, description: str, *, total: float | None = None, completed: int = 0) -> int:
            return 0

        def advance(self, task_id: object, advance: float = 1) -> None:
            raise PullCancelled("cancelled")

    with HubFixture({"acme/big-GGUF": {"big-Q4_K_M.gguf": data}}) as hub:
        with pytest.raises(PullCancelled):
            pull(parse_hf("hf:acme/big-GGUF"), tmp_path, progress=CancelAfterFirstChunk(), endpoint=hub.url)

    left = [p for p in tmp_path.rglob("*") if not p.is_dir() and ".locks" not in p.parts and p.name != "CACHEDIR.TAG"]
    assert left == []
    assert not (tmp_path / "models--acme--big-GGUF").exists()  # the folders it made are gone too


def test_a_projector_is_picked_f16_first_and_only_a_projector() -> None:
    assert pick_projector(["m-Q4_K_M.gguf", "mmproj-m-Q8_0.gguf", "mmproj-m-F16.gguf", "README.md"]) == (
        "mmproj-m-F16.gguf"
    )
    assert pick_projector(["m-Q4_K_M.gguf", "mmproj-m-Q8_0.gguf", "mmproj-m-BF16.gguf"]) == "mmproj-m-BF16.gguf"
    assert pick_projector(["vision/MMPROJ-x.gguf"]) == "vision/MMPROJ-x.gguf"
    assert pick_projector(["m-Q4_K_M.gguf", "mmproj.md"]) is None


def test_a_pull_takes_the_repos_projector_along_checked_like_the_model(hub: HubFixture, cache: Path) -> None:
    pulled = pull(parse_hf(f"hf:{TINY}"), cache, progress=False, with_projector=True)
    assert [f.filename for f in pulled.files] == ["tiny-Q4_K_M.gguf"] and pulled.quant == "Q4_K_M"
    assert pulled.projector is not None and pulled.projector.filename == "mmproj-tiny-F16.gguf"
    assert pulled.projector.path.read_bytes() == b"GGUF-proj" and pulled.projector.sha256 == sha256(b"GGUF-proj")
    named = pull(parse_hf(f"hf:{TINY}/tiny-Q8_0.gguf"), cache, progress=False, with_projector=True)
    assert named.projector is None  # one file named: that file only
    assert pull(parse_hf(f"hf:{TINY}"), cache, progress=False).projector is None
