"""Ollama's API (``/api/*``) on the real server and model, driven by the official ``ollama`` client and by
``langchain-ollama``: the same keys, limits and answers as ``/v1``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import langchain_ollama
import ollama
import openai
import pytest
from pydantic import BaseModel

from tests.hf_fixture import HubFixture
from tests.integration.test_thinking import TEMPLATES, toml_string
from tests.payloads import ASK, WEATHER, validate
from tests.support import MODEL_ID, Server, set_up, start_server

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Say hello in French."}]
GREEDY = {"temperature": 0, "num_predict": 24}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "sunny": {"type": "boolean"}},
    "required": ["city", "sunny"],
}


def client_for(server: Server, key: str | None = None) -> ollama.Client:
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {key or server.key}"}, timeout=300)


@pytest.fixture(scope="module")
def client(server: Server) -> ollama.Client:
    return client_for(server)


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    """A server whose models this module changes (pull, copy, delete), with SmolLM2 also under Qwen3's and
    DeepSeek-R1's templates (their thinking switches), serving Ollama's API without a key (``--ollama-no-key``)."""
    home = tmp_path_factory.mktemp("ollama")
    set_up(home, "models", "add", str(model_path), "--id", MODEL_ID)
    families = {"fam/qwen3": "Qwen-Qwen3-0.6B.jinja", "fam/r1": "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"}
    tables = [
        f'[[model]]\nid = "{mid}"\npath = "{model_path}"\nchat_template = {toml_string(TEMPLATES / name)}\n'
        for mid, name in families.items()
    ]
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text("\n".join(tables))
    gguf = model_path.read_bytes()
    with HubFixture({"acme/tiny-GGUF": {"tiny-Q4_K_M.gguf": gguf, "README.md": b"# tiny"}}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(home / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
        server = start_server(home, "--slots", "2", "--ctx", "1024", "--max-loaded", "1", "--ollama-no-key", env=env)
        yield server
        server.stop()


def test_chat_streamed_and_whole_agree(client: ollama.Client):
    whole = client.chat(model=MODEL_ID, messages=HI, options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length")
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.prompt_eval_count > 0 and whole.eval_count > 0 and whole.total_duration > 0
    parts = list(client.chat(model=MODEL_ID, messages=HI, options=GREEDY, stream=True))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count


def test_generate_through_the_template_and_raw(client: ollama.Client):
    r = client.generate(model=MODEL_ID, prompt="Say hello in French.", options=GREEDY)
    chat = client.chat(model=MODEL_ID, messages=HI, options=GREEDY)
    assert r.response == chat.message.content  # the same prompt, rendered by the chat template
    raw = client.generate(model=MODEL_ID, prompt="The capital of France is", raw=True, options=GREEDY)
    assert raw.response and raw.prompt_eval_count < r.prompt_eval_count


def test_format_schema_gives_json_matching_it(client: ollama.Client):
    r = client.chat(model=MODEL_ID, messages=[{"role": "user", "content": "Weather in Paris?"}], format=SCHEMA,
                    options={"temperature": 0, "num_predict": 60})  # fmt: skip
    validate(json.loads(r.message.content), SCHEMA)


def test_a_forced_tool_call_comes_with_arguments_as_an_object(client: ollama.Client):
    options = {"temperature": 0, "num_predict": 80, "tool_choice": "required"}
    r = client.chat(model=MODEL_ID, messages=ASK, tools=[WEATHER], options=options)
    [call] = r.message.tool_calls
    assert call.function.name == "get_weather"
    validate(dict(call.function.arguments), WEATHER["function"]["parameters"])
    streamed = [c for p in client.chat(model=MODEL_ID, messages=ASK, tools=[WEATHER], options=options, stream=True)
                for c in p.message.tool_calls or ()]  # fmt: skip
    assert [(c.function.name, dict(c.function.arguments)) for c in streamed] == [
        ("get_weather", call.function.arguments)
    ]
    # the call and its result sent back: the model answers in text
    messages = [*ASK, r.message, {"role": "tool", "tool_name": "get_weather", "content": '{"temp": 21}'}]
    after = client.chat(
        model=MODEL_ID, messages=messages, tools=[WEATHER], options={"temperature": 0, "num_predict": 20}
    )
    assert after.message.content or after.message.tool_calls


def test_embed_equals_v1_embeddings(client: ollama.Client, server: Server):
    texts = ["The cat sat on the mat.", "Bonjour"]
    r = client.embed(model=MODEL_ID, input=texts)
    v1 = openai.OpenAI(base_url=server.base_url, api_key=server.key).embeddings.create(model=MODEL_ID, input=texts)
    assert len(r.embeddings) == 2 and r.prompt_eval_count > 0
    for ours, theirs in zip(r.embeddings, v1.data, strict=True):
        assert ours == pytest.approx(theirs.embedding, abs=1e-6)
    legacy = client.embeddings(model=MODEL_ID, prompt=texts[0])
    assert legacy.embedding == pytest.approx(r.embeddings[0], abs=1e-6)


def test_tags_show_ps_and_version(client: ollama.Client, server: Server, model_path: Path):
    [tag] = [m for m in client.list().models if m.model == MODEL_ID]
    assert tag.details.format == "gguf" and tag.details.family == "llama" and tag.details.quantization_level == "Q4_1"
    assert tag.size == model_path.stat().st_size
    assert len(tag.digest) == 64
    shown = client.show(MODEL_ID)
    assert {"completion", "tools"} <= set(shown.capabilities)
    assert shown.modelinfo["general.architecture"] == "llama" and shown.modelinfo["llama.context_length"] == 2048
    assert "im_start" in shown.template
    client.chat(model=MODEL_ID, messages=HI, options=GREEDY)
    assert MODEL_ID in [m.model for m in client.ps().models]
    assert httpx.get(server.url + "/api/version", headers={"Authorization": f"Bearer {server.key}"}).json()["version"]
    assert httpx.head(server.url + "/").status_code == 200  # Ollama's clients probe the server
    # Ollama's docs post with `curl -d` (a form content type): with a key, the body is read as JSON all the same
    form = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/x-www-form-urlencoded"}
    r = httpx.post(server.url + "/api/show", headers=form, content=json.dumps({"model": MODEL_ID}), timeout=30)
    assert r.status_code == 200 and r.json()["details"]["family"] == "llama"


def test_bad_input_in_ollamas_error_shape(client: ollama.Client, server: Server):
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="no/such-model", messages=HI)
    assert err.value.status_code == 404 and err.value.error == "model 'no/such-model' not found"
    for options in ({"temprature": 0}, {"temperature": "hot"}, {"mirostat": 2}):
        with pytest.raises(ollama.ResponseError) as err:
            client.chat(model=MODEL_ID, messages=HI, options=options)
        assert err.value.status_code == 400, options
    r = httpx.post(server.url + "/api/chat", json={"model": MODEL_ID, "messages": HI})
    assert r.status_code == 401 and set(r.json()) == {"error"}
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model=MODEL_ID, messages=[{"role": "user", "content": "hi", "images": ["aGk="]}])
    assert err.value.status_code == 400 and "is not a PNG" in err.value.error  # "hi" in base64


def test_langchain_tool_call_and_structured_output(server: Server):
    class Weather(BaseModel):
        city: str
        sunny: bool

    def get_weather(city: str, unit: str) -> str:
        """Get the current weather for a city (unit: c or f)."""
        return "sunny"

    llm = langchain_ollama.ChatOllama(
        model=MODEL_ID, base_url=server.url, client_kwargs={"headers": {"Authorization": f"Bearer {server.key}"}}
    )
    bound = llm.bind_tools([get_weather])
    reply = bound.invoke(ASK[0]["content"], options={"temperature": 0, "num_predict": 80, "tool_choice": "required"})
    [call] = reply.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"], dict) and "city" in call["args"]
    structured = llm.with_structured_output(Weather, method="json_schema")
    answer = structured.invoke("The weather in Paris: sunny. Give the city and whether it is sunny.")
    assert isinstance(answer, Weather)


def test_think_reaches_the_template_and_the_thought_comes_apart(own: Server):
    client = client_for(own)
    assert "thinking" in client.show("fam/qwen3").capabilities
    assert "thinking" not in client.show(MODEL_ID).capabilities
    on = client.chat(model="fam/qwen3", messages=HI, think=True, options={"temperature": 0, "num_predict": 4})
    off = client.chat(model="fam/qwen3", messages=HI, think=False, options={"temperature": 0, "num_predict": 4})
    assert off.prompt_eval_count > on.prompt_eval_count  # Qwen3's empty thought closes the prompt when off
    # DeepSeek-R1's prompt opens the thought: all that comes before the closing tag is thinking
    r1 = client.chat(model="fam/r1", messages=HI, think=True, options={"temperature": 0, "num_predict": 8})
    assert r1.message.thinking and not r1.message.content


def test_pull_copy_delete(own: Server):
    client = client_for(own)
    events = list(client.pull("hf:acme/tiny-GGUF", stream=True))
    assert events[0].status == "pulling manifest" and events[-1].status == "success"
    assert any(e.total and e.completed == e.total for e in events)
    assert "acme/tiny-GGUF:Q4_K_M" in [m.model for m in client.list().models]
    assert client.chat(model="acme/tiny-GGUF:Q4_K_M", messages=HI, options=GREEDY).message.content
    assert client.copy("acme/tiny-GGUF:Q4_K_M", "team/copy").status == "success"
    assert "team/copy" in [m.model for m in client.list().models]
    assert client.delete("acme/tiny-GGUF:Q4_K_M").status == "success"
    names = [m.model for m in client.list().models]
    assert "acme/tiny-GGUF:Q4_K_M" not in names
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("acme/tiny-GGUF:Q4_K_M")
    assert err.value.status_code == 404


def test_a_pull_that_resolves_to_nothing_is_a_4xx_and_leaves_nothing(own: Server):
    client = client_for(own)
    before = sorted(p for p in own.home.rglob("*") if p.is_file() and "logs" not in p.parts)
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as err:
            result = client.pull("hf:acme/tiny-GGUF:Q9_9", stream=stream)
            list(result) if stream else None
        assert 400 <= err.value.status_code < 500
    with pytest.raises(ollama.ResponseError):
        client.pull("hf:acme/no-such-repo")
    after = sorted(p for p in own.home.rglob("*") if p.is_file() and "logs" not in p.parts)
    assert [p for p in after if p not in before] == []


def test_ollama_no_key_opens_api_only_and_still_checks_a_key_that_is_sent(own: Server):
    tags = ollama.Client(host=own.url, timeout=60).list()  # no Authorization header at all
    assert MODEL_ID in [m.model for m in tags.models]
    assert httpx.get(own.url + "/v1/models", timeout=30).status_code == 401  # the OpenAI routes keep their keys
    wrong = httpx.get(own.url + "/api/tags", headers={"Authorization": "Bearer sk-wrong"}, timeout=30)
    assert wrong.status_code == 401 and "error" in wrong.json()
