"""Images in chat, through llama.cpp's mtmd, on the real test models with synthetic projectors.

SmolVLM-256M is SmolLM2-135M with a SigLIP encoder and the idefics3 projector; ``bench/synth.py vision`` writes
that projector with random weights, sized for SmolLM2's 576-wide embeddings, so the real test model serves
images. ``bench/synth.py vision-gemma3`` writes Gemma 3's (256 rows an image, which attend to each other), sized
for the real Gemma 3 270M. Answers mean nothing, but they are the model's, and they change with the image.
"""

from __future__ import annotations

import base64
import http.server
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.mtmd_oracle import first_token
from tests.payloads import png, synth_pair, synth_projector, wav
from tests.support import MODEL_ID, Server, free_port, set_up, start_server, wait_for

pytestmark = pytest.mark.integration

VISION, AUDIO, GEMMA, QWEN = "vis/smol", "aud/smol", "vis/gemma3", "vis/qwen2vl"


def data_url(image: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(image).decode()


def ask(text: str, *urls: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}] + [
        {"type": "image_url", "image_url": {"url": url, "detail": "auto"}} for url in urls
    ]}  # fmt: skip


def _home(
    root: Path,
    model_path: Path,
    mmproj: Path,
    audio: Path | None = None,
    gemma: Pair | None = None,
    qwen: Pair | None = None,
) -> Path:
    home = root / "home"
    home.mkdir()
    out = set_up(home, "models", "add", str(model_path), "--id", VISION, "--mmproj", str(mmproj))
    assert "inputs: text, image" in out
    if audio is not None:
        out = set_up(home, "models", "add", str(model_path), "--id", AUDIO, "--mmproj", str(audio))
        assert "inputs: text, audio" in out
    if gemma is not None:
        out = set_up(home, "models", "add", str(gemma.model), "--id", GEMMA, "--mmproj", str(gemma.mmproj))
        assert "inputs: text, image" in out
    if qwen is not None:
        out = set_up(home, "models", "add", str(qwen.model), "--id", QWEN, "--mmproj", str(qwen.mmproj))
        assert "inputs: text, image" in out
    set_up(home, "models", "add", str(model_path), "--id", MODEL_ID)
    return home


@pytest.fixture(scope="module")
def mmproj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_projector("vision", tmp_path_factory.mktemp("synth-vision"))


@dataclass(frozen=True)
class Pair:
    model: Path
    mmproj: Path


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory, second_model_path: Path) -> Pair:
    """The real Gemma 3 270M, with Gemma 3's projector (random weights) for its 640-wide embeddings."""
    mmproj = synth_projector("vision-gemma3", tmp_path_factory.mktemp("synth-gemma3"), "--n-embd-text", "640")
    return Pair(second_model_path, mmproj)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Pair:
    """A tiny Qwen2-VL (M-RoPE: an image's rows on a grid of positions) and its projector, random weights, with
    SmolLM2's tokenizer and template."""
    return Pair(*synth_pair("qwen2vl", tmp_path_factory.mktemp("synth-qwen2vl"), model_path))


@pytest.fixture(scope="module")
def vision(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path, mmproj: Path, gemma: Pair, qwen: Pair
) -> Iterator[Server]:
    """The vision model, an audio one (ultravox's projector), Gemma 3 and Qwen2-VL with images and the plain one (no
    projector) on one server."""
    audio = synth_projector("audio", tmp_path_factory.mktemp("synth-audio"))
    home = _home(tmp_path_factory.mktemp("vision"), model_path, mmproj, audio, gemma, qwen)
    server = start_server(home, "--model", VISION, "--ctx", "2048", "--slots", "2", "--max-loaded", "5")
    yield server
    server.stop()


def _client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=120)


def _answer(
    server: Server, messages: list[dict], model: str = VISION, **extra
) -> tuple[str, list[tuple[str, float]], int, int]:
    r = _client(server).chat.completions.create(
        model=model, messages=messages, max_tokens=12, temperature=0, logprobs=True, **extra
    )
    logprobs = [(t.token, t.logprob) for t in r.choices[0].logprobs.content]
    return r.choices[0].message.content, logprobs, r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens


def _model(server: Server, model_id: str) -> dict:
    return next(m for m in server.health()["models"] if m["id"] == model_id)


def test_models_say_which_inputs_they_take(vision: Server):
    cards = {m.id: m.model_extra for m in _client(vision).models.list().data}
    assert cards[VISION]["inputs"] == ["text", "image"]
    assert cards[AUDIO]["inputs"] == ["text", "audio"]
    assert cards[GEMMA]["inputs"] == cards[QWEN]["inputs"] == ["text", "image"]
    assert cards[MODEL_ID]["inputs"] == ["text"]


def test_an_image_reaches_the_model_and_the_same_image_again_is_not_encoded_again(vision: Server):
    first = _answer(vision, [ask("What is in this picture?", data_url(png(64, 64, seed=1)))])
    encoded = _model(vision, VISION)["media_encoded"]
    assert encoded > 0
    again = _answer(vision, [ask("What is in this picture?", data_url(png(64, 64, seed=1)))])
    assert again[:2] == first[:2]  # text and logprobs, byte for byte
    assert again[3] == again[2]  # the whole prompt, image rows included, came from the cache
    assert _model(vision, VISION)["media_encoded"] == encoded
    other = _answer(vision, [ask("What is in this picture?", data_url(png(64, 64, seed=2)))])
    assert other[1] != first[1]  # another image, other logits: the pixels reach the model
    assert other[3] < other[2]  # and its rows are not taken for the first image's


def test_a_conversation_about_an_image_answers_as_a_fresh_server_does(vision: Server, tmp_path, model_path, mmproj,
                                                                    gemma: Pair, qwen: Pair):  # fmt: skip
    """The second turn reuses the first turn's image from the cache, and answers byte for byte as a server that
    computes everything cold does: the block rule holds with media rows among the tokens. Gemma 3's images (256
    rows that attend to each other, decoded whole with causal attention off) straddle block boundaries: a block
    that would end inside one ends after it, cold and cached alike; so does Qwen2-VL's, whose rows share positions
    (M-RoPE), and the text after it takes the positions after the image's, not after its rows."""
    conversations = {}
    for model, size in ((VISION, (96, 64)), (GEMMA, (64, 64)), (QWEN, (160, 96))):
        turns = [ask("Describe it.", data_url(png(*size, seed=3)))]
        reply = _answer(vision, turns, model)
        turns += [{"role": "assistant", "content": reply[0]}, ask("And the colours? Compare with this one.",
                                                                  data_url(png(64, 64, seed=4)))]  # fmt: skip
        encoded = _model(vision, model)["media_encoded"]
        # a person's next turn comes seconds later: by then the idle refresh has computed the first turn, image
        # rows and all, as whole blocks (they are reused only so: see the README's same-answer section)
        wait_for(lambda m=model: _model(vision, m)["tokens_stale"] == 0, 30, "the first turn refreshed")
        warm = _answer(vision, turns, model)
        assert warm[3] > 0  # the first turn's image came from the cache...
        conversations[model] = turns, warm, _model(vision, model)["media_encoded"] - encoded
    cold_server = start_server(_home(tmp_path, model_path, mmproj, gemma=gemma, qwen=qwen), "--model", VISION,
                               "--ctx", "2048", "--slots", "2", "--max-loaded", "3")  # fmt: skip
    try:
        for model, (turns, warm, encoded_warm) in conversations.items():
            cold = _answer(cold_server, turns, model)
            assert cold[3] == 0
            assert warm[:3] == cold[:3], model
            assert 0 < encoded_warm < _model(cold_server, model)["media_encoded"]  # ...and was not encoded again
    finally:
        cold_server.stop()


SMOLLM_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


@pytest.fixture(scope="module")
def row_by_row(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path, mmproj: Path, gemma: Pair, qwen: Pair
) -> Iterator[Server]:
    """Gemma 3 and Qwen2-VL on K-quant kernels whose arithmetic does not depend on a call's rows, as the mtmd oracle
    runs (``tests/mtmd_oracle.py``): it cuts a prompt otherwise than edge-run's blocks."""
    home = _home(tmp_path_factory.mktemp("row-by-row"), model_path, mmproj, gemma=gemma, qwen=qwen)
    server = start_server(home, "--model", VISION, "--ctx", "2048", env={"GGML_CPU_TILED_MM": "0"})
    yield server
    server.stop()


@pytest.mark.parametrize("model", [GEMMA, QWEN])
def test_images_are_decoded_as_llama_cpps_own_mtmd_decodes_them(row_by_row: Server, tmp_path: Path, model: str,
                                                                  request):  # fmt: skip
    """The oracle is llama.cpp's mtmd helper (``mtmd_helper_eval_chunks``) on the same files and prompt: Gemma 3's
    image rows attend to each other, Qwen2-VL's lie on M-RoPE's grid, 24 rows on 8 positions. The first token's
    five best log-probabilities agree to 1e-5 (causal image rows, or rows on consecutive positions, move them by
    0.3 and 0.01)."""
    pair: Pair = request.getfixturevalue("gemma" if model == GEMMA else "qwen")
    image = tmp_path / "image.png"
    image.write_bytes(png(96, 64, seed=1))
    system = SMOLLM_SYSTEM if model == QWEN else ""  # Gemma 3 270M has no template: edge-run's ChatML fallback
    # llama-server's join: a newline between text parts, none beside a media marker
    prompt = system + "<|im_start|>user\nDescribe it.<__media__><|im_end|>\n<|im_start|>assistant\n"
    n_oracle, oracle = first_token(pair.model, pair.mmproj, prompt, image)
    r = _client(row_by_row).chat.completions.create(
        model=model, messages=[ask("Describe it.", data_url(image.read_bytes()))], max_tokens=1, temperature=0,
        logprobs=True, top_logprobs=5
    )  # fmt: skip
    assert r.usage.prompt_tokens == n_oracle  # the same prompt, image rows included
    ours = [(t.token, t.logprob) for t in r.choices[0].logprobs.content[0].top_logprobs]
    assert [t for t, _ in ours] == [t for t, _ in oracle]
    assert max(abs(a - b) for (_, a), (_, b) in zip(ours, oracle, strict=True)) < 1e-5, (ours, oracle)


def test_an_image_encodes_beside_a_generating_stream_and_neither_answer_changes(vision: Server, tmp_path, model_path,
                                                                                mmproj):  # fmt: skip
    """While a slot generates, another request's image encodes on a thread of its own, on one of the 2 cores, and the
    stream goes on meanwhile (``bench/media_stall.py`` measures its stall). Both answers are byte for byte a fresh
    server's, where each runs alone and the image encodes on the engine thread with both cores: mtmd's embeddings do
    not depend on the thread count, nor the decode on where the embeddings were computed."""
    story = [{"role": "user", "content": "Write a long story about a dragon who learns to sail."}]
    look = [ask("Describe it.", data_url(png(96, 64, seed=21)))]
    beside = _model(vision, VISION)["media_encoded_beside"]
    stream = _client(vision).chat.completions.create(model=VISION, messages=story, max_tokens=96, temperature=0,
                                                     logprobs=True, stream=True)  # fmt: skip
    pieces: list[tuple[str, float]] = []
    finish, image = None, {}
    looking = threading.Thread(target=lambda: image.update(answer=_answer(vision, look)))
    for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs:
            pieces += [(t.token, t.logprob) for t in chunk.choices[0].logprobs.content]
        finish = chunk.choices[0].finish_reason if chunk.choices else finish
        if len(pieces) == 4:  # the stream is generating: the image's encode goes beside it
            looking.start()
    looking.join()
    assert finish == "length"  # it generated all along
    assert _model(vision, VISION)["media_encoded_beside"] > beside
    fresh = start_server(_home(tmp_path, model_path, mmproj), "--model", VISION, "--ctx", "2048", "--slots", "2")
    try:
        assert _answer(fresh, look)[:3] == image["answer"][:3]
        assert _model(fresh, VISION)["media_encoded_beside"] == 0  # there, alone, it encoded on the engine thread
        r = _client(fresh).chat.completions.create(model=VISION, messages=story, max_tokens=96, temperature=0,
                                                   logprobs=True)  # fmt: skip
        assert [(t.token, t.logprob) for t in r.choices[0].logprobs.content] == pieces
    finally:
        fresh.stop()


def test_an_image_streams(vision: Server):
    messages = [ask("What is in this picture?", data_url(png(64, 64, seed=1)))]
    whole = _answer(vision, messages)[0]
    stream = _client(vision).chat.completions.create(
        model=VISION, messages=messages, max_tokens=12, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == whole


def _status(server: Server, model: str, content: list[dict], role: str = "user") -> tuple[int, dict]:
    r = httpx.post(
        server.base_url + "/chat/completions",
        json={"model": model, "messages": [{"role": role, "content": content}], "max_tokens": 4},
        headers={"Authorization": f"Bearer {server.key}"},
        timeout=60,
    )
    return r.status_code, r.json()["error"] if r.status_code >= 400 else {}


def _image(url: str) -> list[dict]:
    return [{"type": "text", "text": "Look:"}, {"type": "image_url", "image_url": {"url": url}}]


BAD = {
    "undecodable": (data_url(png(64, 64, seed=1, data=b"not zlib at all")), "could not be decoded"),
    "100 megapixels": (data_url(png(10_000, 10_000, seed=0, data=b"")[:33]), "10000x10000"),
    "truncated base64": (data_url(png(64, 64, seed=1))[:-3], "not valid base64"),
    "webp": (data_url(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"), "image/webp"),
    "not an image": (data_url(b"hello, world"), "is not a PNG"),
    "http URL": ("https://example.com/cat.png", "data: URL"),
    "no base64": ("data:image/png,rawbytes", "data: URL"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_image_is_a_400_naming_it_and_nothing_is_held(vision: Server, case: str):
    url, words = BAD[case]
    status, error = _status(vision, VISION, _image(url))
    assert status == 400, error
    assert words in error["message"] and error["param"] == "messages[0].content[1]", error
    assert _model(vision, VISION)["slots_busy"] == 0


def test_a_model_without_a_projector_refuses_an_image_naming_itself(vision: Server):
    status, error = _status(vision, MODEL_ID, _image(data_url(png(64, 64, seed=1))))
    assert status == 400
    assert error["message"] == f"model `{MODEL_ID}` takes no image input" and error["param"] == "messages[0].content[1]"
    wav = base64.b64encode(b"RIFF....WAVE").decode()
    audio = [{"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}]
    status, error = _status(vision, VISION, audio)
    assert status == 400 and error["message"] == f"model `{VISION}` takes no audio input", error
    status, error = _status(vision, VISION, _image(data_url(png(64, 64, seed=1))), role="system")
    assert status == 400 and "only user messages" in error["message"]


def test_responses_and_messages_take_the_image_as_chat_does(vision: Server):
    """The same question about the same image, as each route's SDK sends it: one internal request, one answer."""
    image = png(64, 64, seed=5)
    url = data_url(image)
    chat = _answer(vision, [ask("What is in this picture?", url)])[0]
    content = [{"type": "input_text", "text": "What is in this picture?"}, {"type": "input_image", "image_url": url}]
    r = _client(vision).responses.create(
        model=VISION, input=[{"role": "user", "content": content}], max_output_tokens=12, temperature=0
    )
    assert r.output_text == chat
    file = {"type": "input_file", "filename": "photo.png", "file_data": url}  # an image file, as input_image is
    r = _client(vision).responses.create(
        model=VISION, input=[{"role": "user", "content": [content[0], file]}], max_output_tokens=12, temperature=0
    )
    assert r.output_text == chat
    pdf = {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjQK"}
    with pytest.raises(openai.BadRequestError) as err:
        _client(vision).responses.create(model=VISION, input=[{"role": "user", "content": [content[0], pdf]}])
    assert "`application/pdf` are not supported" in err.value.body["message"], err.value.body
    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(image).decode()}
    blocks = [{"type": "text", "text": "What is in this picture?"}, {"type": "image", "source": source}]
    message = anthropic.Anthropic(base_url=vision.url, api_key=vision.key).messages.create(
        model=VISION, max_tokens=12, extra_body={"temperature": 0}, messages=[{"role": "user", "content": blocks}]
    )
    assert message.content[0].text == chat


def test_a_10_mb_photo_fits_the_body_cap(vision: Server):
    photo = png(1900, 1800, seed=6)  # random pixels do not compress: about 10 MB
    assert len(photo) > 10_000_000
    status, error = _status(vision, VISION, _image(data_url(photo)))
    assert status == 200, error


def test_ollamas_images_reach_the_model(vision: Server):
    """Ollama's ``images`` (base64, before the message's text), through the ollama client."""
    client = ollama.Client(host=vision.url, headers={"Authorization": f"Bearer {vision.key}"})
    image = base64.b64encode(png(64, 64, seed=7)).decode()
    ask = [{"role": "user", "content": "What is in this picture?", "images": [image]}]
    greedy = {"temperature": 0, "num_predict": 8}
    first = client.chat(model=VISION, messages=ask, options=greedy)
    plain = client.chat(model=VISION, messages=[{"role": "user", "content": ask[0]["content"]}], options=greedy)
    assert first.prompt_eval_count >= plain.prompt_eval_count + 20  # the image's 20 rows, and their markers
    assert client.chat(model=VISION, messages=ask, options=greedy).message == first.message
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model=MODEL_ID, messages=ask)
    assert err.value.status_code == 400 and err.value.error == f"model `{MODEL_ID}` takes no image input"


def test_audio_reaches_the_model_and_the_same_audio_again_comes_from_the_cache(vision: Server):
    def hear(hertz: float) -> tuple[str, list[tuple[str, float]], int, int]:
        sound = {"data": base64.b64encode(wav(1.0, hertz)).decode(), "format": "wav"}
        content = [{"type": "text", "text": "What do you hear?"}, {"type": "input_audio", "input_audio": sound}]
        return _answer(vision, [{"role": "user", "content": content}], model=AUDIO)

    first = hear(440)
    assert first[2] > 100  # a second of audio is a 30 s window: 100 rows
    again = hear(440)
    assert again[:2] == first[:2] and again[3] == again[2]
    assert hear(880)[1] != first[1]
    status, error = _status(vision, AUDIO, _image(data_url(png(64, 64, seed=1))))
    assert status == 400 and error["message"] == f"model `{AUDIO}` takes no image input"


def test_transcriptions_take_openais_form_and_answer_json_or_text(vision: Server):
    """``client.audio.transcriptions.create`` as an app calls it: the model's greedy answer to the audio."""
    client = _client(vision)
    sound = ("tone.wav", wav(1.0, 440), "audio/wav")
    whole = client.audio.transcriptions.create(model=AUDIO, file=sound, response_format="json")
    assert whole.text and whole.usage.input_tokens > 100 and 0 < whole.usage.output_tokens <= 64  # 1 s: the least cap
    assert client.audio.transcriptions.create(model=AUDIO, file=sound, response_format="text").strip() == whole.text
    for model, file, words in (
        (MODEL_ID, sound, f"model `{MODEL_ID}` takes no audio input"),
        (AUDIO, ("notes.txt", b"hello"), "is not WAV, MP3 or FLAC audio"),
    ):
        with pytest.raises(openai.BadRequestError) as err:
            client.audio.transcriptions.create(model=model, file=file)
        assert words in err.value.body["message"], err.value.body
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model=AUDIO, file=sound, response_format="srt")
    assert err.value.body["param"] == "response_format"


class _Files(http.server.BaseHTTPRequestHandler):
    """A loopback web server for image URLs: ``/cat.png`` an image, ``/notes.txt`` text, anything else 404."""

    files: ClassVar[dict[str, tuple[str, bytes]]] = {}

    def do_GET(self) -> None:
        kind, body = self.files.get(self.path, ("text/plain", b"no such file"))
        self.send_response(200 if self.path in self.files else 404)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_image_urls_are_fetched_only_with_allow_image_urls(vision: Server, tmp_path, model_path, mmproj, gemma: Pair):
    """Also: a batch too small for an image whose rows must be decoded together is a 400 that says what to set."""
    image = png(64, 64, seed=8)
    _Files.files = {"/cat.png": ("image/png", image), "/notes.txt": ("text/plain", b"hello")}
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=web.serve_forever, args=(0.05,), daemon=True).start()
    base = f"http://127.0.0.1:{web.server_address[1]}"
    inline = _answer(vision, [ask("What is in this picture?", data_url(image))])
    status, error = _status(vision, VISION, _image(base + "/cat.png"))
    assert status == 400 and "--allow-image-urls" in error["message"], error  # off by default
    home = _home(tmp_path, model_path, mmproj, gemma=gemma)
    fetching = start_server(home, "--model", VISION, "--allow-image-urls", env={"EDGE_RUN_BATCH": "128"})
    try:
        assert _answer(fetching, [ask("What is in this picture?", base + "/cat.png")])[:3] == inline[:3]
        blocks = [{"type": "text", "text": "What is in this picture?"},
                  {"type": "image", "source": {"type": "url", "url": base + "/cat.png"}}]  # fmt: skip
        message = anthropic.Anthropic(base_url=fetching.url, api_key=fetching.key).messages.create(
            model=VISION, max_tokens=12, extra_body={"temperature": 0}, messages=[{"role": "user", "content": blocks}]
        )
        assert message.content[0].text == inline[0]  # Anthropic's url source, fetched as OpenAI's image URL
        for url, words in (
            (base + "/missing.png", "answered 404"),
            (base + "/notes.txt", "`text/plain`, not an image"),
            (f"http://127.0.0.1:{free_port()}/cat.png", "could not be fetched"),
        ):
            status, error = _status(fetching, VISION, _image(url))
            assert status == 400 and words in error["message"], (url, error)
        status, error = _status(fetching, GEMMA, _image(data_url(image)))
        assert status == 400 and "an image of 256 rows needs `batch = 256` or more (it is 128)" in error["message"]
    finally:
        fetching.stop()
        web.shutdown()


def test_audio_over_ten_minutes_is_a_400_and_nothing_is_held(vision: Server):
    rate, seconds = 8_000, 601
    data = bytes(2 * rate * seconds)  # silence, 16-bit mono: the projector resamples it to its rate
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    head = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + fmt
    long = head + b"data" + struct.pack("<I", len(data)) + data
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(long).decode(), "format": "wav"}}
    status, error = _status(vision, AUDIO, [{"type": "text", "text": "Hear this."}, part])
    assert status == 400 and "lasts 601 s: 600 s at most" in error["message"], error
    assert _model(vision, AUDIO)["slots_busy"] == 0
