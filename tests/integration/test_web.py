"""The web page and its one-time login: HTTP checks over a fake-free app, then headless Chromium.

The browser tests drive Debian's ``chromium`` through Playwright's Python API (never
``playwright install``). Without chromium they skip, except in CI (``$CI`` set), where they fail.
Screenshots go to the test's tmp dir and, if set, to ``$EDGE_RUN_ARTIFACTS``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient

from edge_run.api.app import create_app
from edge_run.keys import KeyStore
from edge_run.server import app_services
from tests.fakes import fake_registry
from tests.hf_fixture import HubFixture
from tests.payloads import WEATHER, png, synth_projector, wav
from tests.support import (
    LIB_FILE,
    LIB_ID,
    LIB_REPO,
    MODEL_ID,
    Server,
    browser_recorder,
    free_port,
    set_up,
    start_library_server,
    start_server,
    wait_healthy,
)

CHROMIUM = os.environ.get("EDGE_RUN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOGIN_RE = re.compile(r"http://\S+/#login=[A-Za-z0-9_-]+")


# ---- the login exchange and the page's routes, on the app alone (no model, no process) ------


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, KeyStore]]:
    keys = KeyStore(tmp_path / "keys.sqlite3")
    keys.create("default")
    with TestClient(
        create_app(app_services(fake_registry(), keys, login_code="one-time-code")), base_url="http://127.0.0.1"
    ) as client:
        yield client, keys


def test_login_code_trades_for_a_working_key_exactly_once(app_client):
    client, keys = app_client
    first = client.post("/auth/exchange", json={"code": "one-time-code"})
    assert first.status_code == 200
    body = first.json()
    assert keys.verify(body["api_key"])
    assert body["key_name"].startswith("web-")
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {body['api_key']}"}).status_code == 200

    again = client.post("/auth/exchange", json={"code": "one-time-code"})
    assert again.status_code == 401
    assert again.headers["www-authenticate"].startswith("Bearer")
    error = again.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "already used" in error["message"]


def test_wrong_login_code_is_401_and_creates_no_key(app_client):
    client, keys = app_client
    r = client.post("/auth/exchange", json={"code": "guess"})
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert [k.name for k in keys.list()] == ["default"]
    assert client.post("/auth/exchange", json={}).status_code == 400


def test_page_and_assets_need_no_key_but_the_api_still_does(app_client):
    client, _ = app_client
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        r = client.get(f"/static/{asset}")
        assert r.status_code == 200, asset
        assert kind in r.headers["content-type"]
    assert client.get("/static/../web.py").status_code == 404
    assert client.get("/v1/models").status_code == 401
    assert "/auth/exchange" not in client.get("/openapi/openapi.json").json()["paths"]


def test_no_auth_server_exchanges_for_no_key(tmp_path):
    with TestClient(
        create_app(app_services(fake_registry(), None, login_code="c")), base_url="http://127.0.0.1"
    ) as client:
        r = client.post("/auth/exchange", json={"code": "c"})
        assert r.status_code == 200
        assert r.json() == {"api_key": None, "key_name": None}


# ---- the double-click path of the CLI, from source -----------------------------------------


def _wait_for_lines(path: Path, n: int, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(lines := path.read_text().splitlines()) >= n:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{path} did not get {n} lines in {timeout}s")


@pytest.mark.integration
def test_no_arguments_serves_and_opens_a_login_link_that_works(tmp_path, model_path):
    home = tmp_path / "home"
    set_up(home, "models", "add", str(model_path), "--id", MODEL_ID)
    opener, record = browser_recorder(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        "EDGE_RUN_HOME": str(home),
        "EDGE_RUN_BROWSER": str(opener),
        "EDGE_RUN_PORT": str(port),
        "EDGE_RUN_PRELOAD": MODEL_ID,
    }
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_run"], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    server = Server(home=home, port=port, key="", proc=proc, log=log)
    try:
        wait_healthy(server)
        [url] = _wait_for_lines(record, 1)
        assert url.startswith(f"http://127.0.0.1:{port}/#login=")
        banner = log.read_text()
        for expected in ("OpenAI base_url: ", f"model:           {MODEL_ID}", "loads now on", "one-time login:", "er-"):
            assert expected in banner
        code = url.partition("#login=")[2]
        key = httpx.post(server.url + "/auth/exchange", json={"code": code}).json()["api_key"]
        r = httpx.get(server.base_url + "/models", headers={"Authorization": f"Bearer {key}"})
        assert r.json()["data"][0]["id"] == MODEL_ID

        # a second double-click finds this server, opens the page on it and exits 0
        second = subprocess.run(
            [sys.executable, "-m", "edge_run"], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60
        )
        assert second.returncode == 0, second.stderr
        assert _wait_for_lines(record, 2)[1] == f"http://127.0.0.1:{port}/"
        assert proc.poll() is None
    finally:
        server.stop()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: -SIGTERM means a clean stop, -SIGKILL would not
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()[-2000:]


# ---- one server for the login link: `serve`, with a browser it must not open ------------------


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    """``serve`` with the shared server's flags and ``$EDGE_RUN_BROWSER`` set to a recorder (``extra["opened"]``,
    the file it would write; ``extra["ready"]``, when the server answered). Its one-time login link is
    ``test_login_link_then_a_streamed_answer``'s: trading it creates a key, so the shared server keeps its own."""
    home = tmp_path_factory.mktemp("web-home")
    opener, record = browser_recorder(home)
    set_up(home, "models", "add", str(model_path), "--id", MODEL_ID)
    server = start_server(
        home, "--model", MODEL_ID, "--ctx", "2048", "--slots", "4", env={"EDGE_RUN_BROWSER": str(opener)}
    )
    server.extra |= {"opened": str(record), "ready": str(time.monotonic())}
    yield server
    server.stop()


# ---- the page in headless Chromium ---------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; CI must run the browser tests (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install chromium` to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    artifacts = os.environ.get("EDGE_RUN_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)


@pytest.mark.integration
def test_login_link_then_a_streamed_answer(browser, web_server, tmp_path):
    server = web_server
    [login] = LOGIN_RE.findall(server.log.read_text())
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(login)
        page.wait_for_selector("#app:not([hidden])", timeout=15_000)
        # the code is out of the address bar at once (replaceState: no history entry keeps it either)
        assert "login" not in page.url
        stored = page.evaluate("localStorage.getItem('edge-run:key')")
        assert stored and stored.startswith("er-")
        assert page.locator("#model").input_value() == MODEL_ID
        page.wait_for_selector("#status-state:text-matches('^ready$')", state="attached")
        assert page.locator("#status-backend").text_content() == "CPU"

        # count the separate updates of the answer: a streamed answer arrives in several
        page.evaluate(
            """() => {
                window.updates = 0;
                const all = {subtree: true, childList: true, characterData: true};
                new MutationObserver(() => { window.updates += 1; }).observe(document.getElementById('messages'), all);
            }"""
        )
        page.fill("#max-tokens", "48")
        page.fill("#prompt", "Write two sentences about the sea.")
        with page.expect_response("**/v1/chat/completions") as answer:
            page.press("#prompt", "Enter")
        assert answer.value.headers["content-type"].startswith("text/event-stream")
        stats = page.wait_for_selector(".msg.assistant .stats", timeout=60_000)
        assert re.search(r"\d+ tokens · [\d.]+ tokens/s", stats.text_content() or "")
        text = page.locator(".msg.assistant .text").text_content() or ""
        assert text.strip()
        assert page.evaluate("window.updates") > 3
        assert page.locator("#chat-error").text_content() == ""
        page.wait_for_selector("#status-slots:text-matches('^0 busy')", state="attached")
        _screenshot(page, tmp_path / "web-chat.png")

        # service details: filled with this server's URL and model, the key hidden until revealed
        page.click("#details-open")
        snippet = page.locator("#snippet-code")
        assert page.locator("#d-base").text_content() == server.base_url
        assert f"{server.base_url}/chat/completions" in (snippet.text_content() or "")
        assert MODEL_ID in (snippet.text_content() or "")
        assert stored not in (page.locator("#details").text_content() or "")
        page.click("[data-tab=python]")
        assert 'base_url="' + server.base_url in (snippet.text_content() or "")
        page.click("#reveal")
        assert stored in (snippet.text_content() or "")
        page.click("[data-tab=node]")
        assert f'apiKey: "{stored}"' in (snippet.text_content() or "")
        page.click("#reveal")
        _screenshot(page, tmp_path / "web-service-details.png")
    finally:
        context.close()


@pytest.mark.integration
def test_without_login_the_page_asks_for_a_key(browser, server):
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(server.url + "/#login=not-a-real-code")
        page.wait_for_selector("#login:not([hidden])")
        assert "login" not in page.url
        assert "invalid or was already used" in (page.locator("#login-error").text_content() or "")
        page.fill("#login-key", "er-wrong")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#login-error:text-matches('not accepted')", state="attached")
        page.fill("#login-key", server.key)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#app:not([hidden])")
        page.click("#logout")
        page.wait_for_selector("#login:not([hidden])")
        assert page.evaluate("localStorage.getItem('edge-run:key')") is None
    finally:
        context.close()


@pytest.mark.integration
def test_serve_opens_no_browser_unless_asked(web_server):
    """After the browser tests here: a browser would have been opened once the server listened."""
    assert LOGIN_RE.search(web_server.log.read_text())
    time.sleep(max(0.0, float(web_server.extra["ready"]) + 0.5 - time.monotonic()))  # alone: half a second
    assert not Path(web_server.extra["opened"]).exists()


# ---- many models: the picker's states, and a model that loads on its first message ----------


@pytest.fixture
def home_with(tmp_path: Path, model_path: Path) -> Iterator:
    """Factory: a home holding the given ids (each the test GGUF unless a path is given), served with
    the first one preloaded and kept loaded; the servers stop at the end of the test."""
    started: list[Server] = []

    def make(*models: str | tuple[str, Path]) -> Server:
        home = tmp_path / f"home-{len(started)}"
        home.mkdir()
        ids = []
        for model in models:
            model_id, path = model if isinstance(model, tuple) else (model, model_path)
            set_up(home, "models", "add", str(path), "--id", model_id)
            ids.append(model_id)
        server = start_server(home, "--model", ids[0], "--keep-alive", "-1")
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def _open_logged_in(browser, server: Server):
    [login] = LOGIN_RE.findall(server.log.read_text())
    context = browser.new_context()
    page = context.new_page()
    page.goto(login)
    page.wait_for_selector("#app:not([hidden])", timeout=15_000)
    return context, page


def _watch_for_text(page, text: str) -> None:
    """Sets ``window.seen`` once ``text`` shows in the messages, however briefly."""
    page.evaluate(
        """(text) => {
            window.seen = false;
            const messages = document.getElementById('messages');
            const all = {subtree: true, childList: true, characterData: true};
            new MutationObserver(() => { window.seen ||= messages.textContent.includes(text); }).observe(messages, all);
        }""",
        text,
    )


@pytest.mark.integration
def test_picker_shows_each_models_state_and_a_message_loads_an_unloaded_one(
    browser, home_with, tmp_path, retrieval_models
):
    server = home_with("acme/one", "acme/two", ("acme/reranker", retrieval_models["rerank"]))
    context, page = _open_logged_in(browser, server)
    try:
        options = page.locator("#model option")  # the reranker does not chat: only the details list it
        assert options.all_text_contents() == ["acme/one — loaded", "acme/two — not loaded"]
        details = page.locator("#details-model option")
        assert [o.get_attribute("value") for o in details.all()] == ["acme/one", "acme/reranker", "acme/two"]
        assert [o.get_attribute("value") for o in options.all()] == ["acme/one", "acme/two"]
        assert page.locator("#model").input_value() == "acme/one"
        page.wait_for_selector("#status-model:text-matches('^acme/one$')", state="attached")

        page.select_option("#model", "acme/two")
        _watch_for_text(page, "Loading acme/two…")
        page.fill("#max-tokens", "24")
        page.fill("#prompt", "Say hello.")
        with page.expect_response("**/v1/chat/completions") as answer:
            page.press("#prompt", "Enter")
            _screenshot(page, tmp_path / "web-model-loading.png")  # most likely still loading: a second or two
        # the bubble says what it waits for until the first token
        assert page.evaluate("window.seen")
        assert answer.value.status == 200
        assert answer.value.headers["content-type"].startswith("text/event-stream")
        page.wait_for_selector(".msg.assistant .stats", timeout=60_000)
        bubble = page.locator(".msg.assistant")
        assert bubble.get_attribute("data-loaded-model") == "acme/two"
        assert "loading" not in (bubble.get_attribute("class") or "")
        text = page.locator(".msg.assistant .text").text_content() or ""
        assert text.strip() and "Loading" not in text
        assert page.locator("#chat-error").text_content() == ""

        # the next /health poll relabels the picker without touching the choice
        page.wait_for_selector("#model option[value='acme/two']:text-is('acme/two — loaded')", state="attached")
        assert options.all_text_contents() == ["acme/one — loaded", "acme/two — loaded"]
        assert page.locator("#model").input_value() == "acme/two"
        assert page.locator("#status-model").text_content() == "acme/one, acme/two"
        _screenshot(page, tmp_path / "web-two-models.png")

        # a loaded model answers with no loading state
        page.fill("#prompt", "And goodbye.")
        page.press("#prompt", "Enter")
        page.wait_for_selector(".msg.assistant:nth-of-type(4) .stats", timeout=60_000)
        assert page.locator(".msg.assistant").nth(1).get_attribute("data-loaded-model") is None
    finally:
        context.close()


@pytest.mark.integration
def test_a_model_that_fails_to_load_shows_the_servers_error(browser, home_with, tmp_path, model_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(model_path.read_bytes())  # whole when added...
    server = home_with("acme/one", ("acme/broken", broken))
    broken.write_bytes(model_path.read_bytes()[: 1 << 20])  # ... then cut short: it never loads
    context, page = _open_logged_in(browser, server)
    try:
        page.select_option("#model", "acme/broken")
        page.fill("#prompt", "Hello?")
        with page.expect_response("**/v1/chat/completions") as answer:
            page.press("#prompt", "Enter")
        assert answer.value.status == 503
        message = answer.value.json()["error"]["message"]
        page.wait_for_selector(".msg.assistant .stats", timeout=60_000)
        assert page.locator("#chat-error").text_content() == message
        assert "Loading" not in (page.locator(".msg.assistant .text").text_content() or "")
        page.wait_for_selector("#model option[value='acme/broken']:text-is('acme/broken — failed')", state="attached")
        assert page.locator("#model").input_value() == "acme/broken"
        assert page.locator("#status-model").text_content() == "acme/one"
    finally:
        context.close()


# ---- the Usage view: tokens per day and key, as an admin key and as a user key sees them -----


def _chat(server: Server, key: str, prompt: str) -> int:
    """One chat request with ``key``; its total tokens."""
    r = httpx.post(
        server.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL_ID, "messages": [{"role": "user", "content": prompt}], "max_tokens": 16},
        timeout=120,
    )
    r.raise_for_status()
    return int(r.json()["usage"]["total_tokens"])


def _usage_counting(server: Server, key: str, tokens: int, timeout: float = 10) -> dict:
    """The 7-day usage report once it counts ``tokens`` (the server writes usage about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(server.base_url + "/usage", params={"since": "7d"}, headers={"Authorization": f"Bearer {key}"})
        report = r.raise_for_status().json()
        if sum(row["total_tokens"] for row in report["data"]) >= tokens or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


def _usage_view(page) -> dict:
    """Opens the Usage view and reads its scope, legend, bars, days and grand total."""
    page.click("#usage-open")
    page.wait_for_selector("#usage-chart rect[data-key]")
    return {
        "scope": page.locator("#usage-scope").text_content(),
        "legend": page.locator("#usage-legend li").all_text_contents(),
        "bars": {bar.get_attribute("data-key") for bar in page.locator("#usage-chart rect").all()},
        "days": [g.get_attribute("data-day") for g in page.locator("#usage-chart g[data-day]").all()],
        "total": int(re.sub(r"\D", "", page.locator("#usage-table tfoot th:last-child").text_content() or "")),
    }


def _log_in_with_key(page, server: Server, key: str) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#login-key", key)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")


@pytest.mark.integration
def test_usage_view_charts_each_keys_tokens_and_a_user_key_sees_only_its_own(browser, make_server, tmp_path):
    server = make_server()
    bob = set_up(server.home, "keys", "create", "--name", "bob").strip()
    context, page = _open_logged_in(browser, server)  # the login link's key is an admin key
    try:
        admin = page.evaluate("localStorage.getItem('edge-run:key')")
        spent = {
            name: sum(_chat(server, key, prompt) for prompt in ("Say hello.", "Name a colour."))
            for name, key in (("admin", admin), ("bob", bob))
        }
        report = _usage_counting(server, admin, sum(spent.values()))
        [web_key] = {row["key"] for row in report["data"]} - {"bob"}
        assert web_key.startswith("web-")

        view = _usage_view(page)
        assert view["scope"] == "Showing all keys"
        assert view["legend"] == sorted([web_key, "bob"])
        assert view["bars"] == {web_key, "bob"}
        assert view["total"] == sum(spent.values())
        # every day from the period's start to today is on the axis, with usage or not
        today, first = date.today(), date.fromtimestamp(report["since"])
        assert view["days"] == [(first + timedelta(days=i)).isoformat() for i in range((today - first).days + 1)]
        title = page.locator("#usage-chart rect[data-key=bob] title").text_content() or ""
        assert title.startswith(f"bob · {today.isoformat()} · ") and title.endswith(" tokens")
        _screenshot(page, tmp_path / "web-usage.png")

        page.select_option("#usage-since", "30d")
        deadline = time.monotonic() + 30  # polled here: the page's CSP forbids wait_for_function's eval
        while page.locator("#usage-chart g[data-day]").count() <= 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert page.locator("#usage-chart g[data-day]").last.get_attribute("data-day") == today.isoformat()
        total = page.locator("#usage-table tfoot th:last-child").text_content() or ""
        assert int(re.sub(r"\D", "", total)) == sum(spent.values())
    finally:
        context.close()

    context = browser.new_context()
    page = context.new_page()
    try:
        _log_in_with_key(page, server, bob)
        view = _usage_view(page)
        assert view["scope"] == "Showing only this key"
        assert view["legend"] == ["bob"]
        assert view["bars"] == {"bob"}
        assert view["total"] == spent["bob"]
        page.click("#usage form[method=dialog] button")

        # a key that has made no request yet
        page.click("#logout")
        _log_in_with_key(page, server, server.key)
        page.click("#usage-open")
        page.wait_for_selector("#usage-empty:not([hidden])")
        assert page.locator("#usage-empty").text_content() == "No usage yet in this period."
        assert page.locator("#usage-report").is_hidden()
        assert page.locator("#usage-scope").text_content() == "Showing only this key"
    finally:
        context.close()


# ---- a thinking model's thought and its tool calls: the real server and stream, a forced answer ----

QWEN3_TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "templates" / "Qwen-Qwen3-0.6B.jinja"


@pytest.fixture(scope="module")
def qwen3_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    """The test model served as ``fam/qwen3`` under Qwen3's chat template, so its output is read as Qwen3's."""
    home = tmp_path_factory.mktemp("web-qwen3")
    set_up(home, "keys", "list")  # makes the home's folders
    template = json.dumps(QWEN3_TEMPLATE.read_text(), ensure_ascii=False)  # JSON's escapes are TOML's
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text(
        f'[[model]]\nid = "fam/qwen3"\npath = "{model_path}"\nchat_template = {template}\n'
    )
    server = start_server(home, "--model", "fam/qwen3", "--slots", "1", "--ctx", "2048")
    yield server
    server.stop()


def _force(page, raw: str, **extra: object) -> None:
    """Rewrites the page's chat requests in flight to carry a grammar whose only sentence is ``raw`` (and
    ``extra``): the server, the model and the stream stay real; only the request's body changes."""

    def handle(route) -> None:
        body = json.loads(route.request.post_data or "{}")
        body |= {"grammar": "root ::= " + json.dumps(raw), "temperature": 0, **extra}
        route.fulfill(response=route.fetch(post_data=json.dumps(body)))

    page.route("**/v1/chat/completions", handle)


def _open_with_key(browser, server: Server):
    context = browser.new_context()
    page = context.new_page()
    _log_in_with_key(page, server, server.key)
    return context, page


def _ask(page, prompt: str) -> None:
    page.fill("#prompt", prompt)
    with page.expect_response("**/v1/chat/completions") as answer:
        page.press("#prompt", "Enter")
    assert answer.value.status == 200
    assert answer.value.headers["content-type"].startswith("text/event-stream")
    page.wait_for_selector(".msg.assistant .stats", timeout=60_000)
    assert page.locator("#chat-error").text_content() == ""


@pytest.mark.integration
def test_a_thought_streams_into_a_thinking_block_that_folds_when_the_answer_starts(browser, qwen3_server, tmp_path):
    context, page = _open_with_key(browser, qwen3_server)
    try:
        _force(page, "<think>\nI should greet.\n</think>\n\nHello there!")
        page.evaluate(  # records whether the block was ever open with the thought in it
            """() => {
                window.thoughtShownOpen = false;
                const messages = document.getElementById('messages');
                const all = {subtree: true, childList: true, characterData: true, attributes: true};
                new MutationObserver(() => {
                    const box = messages.querySelector('.msg.assistant details.thinking');
                    const shown = box && box.open && !box.hidden;
                    window.thoughtShownOpen ||= Boolean(shown && box.textContent.includes('greet'));
                }).observe(messages, all);
            }"""
        )
        _ask(page, "Hi!")
        box = page.locator(".msg.assistant details.thinking")
        assert box.is_visible()
        assert page.evaluate("window.thoughtShownOpen")
        assert box.get_attribute("open") is None  # folded once the answer came
        assert page.locator(".msg.assistant .thought").text_content() == "I should greet."
        assert not page.locator(".msg.assistant .thought").is_visible()
        summary = box.locator("summary").text_content() or ""
        match = re.fullmatch(r"Thinking · (\d+) tokens", summary)
        assert match and int(match[1]) > 0, summary
        assert page.locator(".msg.assistant .text").text_content() == "Hello there!"
        assert page.locator(".msg.assistant .tool-call").count() == 0
        _screenshot(page, tmp_path / "web-thinking-folded.png")
        box.locator("summary").click()
        assert page.locator(".msg.assistant .thought").is_visible()
        _screenshot(page, tmp_path / "web-thinking-open.png")
    finally:
        context.close()


@pytest.mark.integration
def test_a_streamed_tool_call_shows_as_a_card_with_its_name_and_arguments(browser, qwen3_server, tmp_path):
    context, page = _open_with_key(browser, qwen3_server)
    try:
        # the page sends no tools of its own: the request gets one in flight, as a client's would carry it
        call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        _force(page, call, tools=[WEATHER])
        _ask(page, "Weather in Paris?")
        card = page.locator(".msg.assistant .tools .tool-call")
        assert card.count() == 1
        assert card.locator(".tool-name").text_content() == "get_weather"
        args = card.locator(".tool-args").text_content() or ""
        assert '"city": "Paris"' in args and json.loads(args) == {"city": "Paris"}
        assert page.locator(".msg.assistant details.thinking").is_hidden()  # no thought came
        assert page.locator(".msg.assistant .text").text_content() == ""
        assert "tool_calls" in (page.locator(".msg.assistant .stats").text_content() or "")
        _screenshot(page, tmp_path / "web-tool-call.png")
    finally:
        context.close()


@pytest.mark.integration
def test_library_search_download_with_progress_then_chat_with_the_model(
    browser, tmp_path_factory: pytest.TempPathFactory, model_path: Path, tmp_path
):
    with HubFixture({LIB_REPO: {LIB_FILE: model_path.read_bytes()}}) as hub:
        server = start_library_server(tmp_path_factory.mktemp("web-library"), model_path, hub.url)
        resume = hub.pause_once(LIB_REPO, LIB_FILE, model_path.stat().st_size // 2)  # the download halfway
        context, page = _open_logged_in(browser, server)
        try:
            page.click("#view-library")
            page.wait_for_selector("#library-table tbody tr")
            assert not page.locator("#app").is_visible()  # one view at a time
            assert page.locator("#library-table tbody tr").count() > 1
            page.fill("#library-search", "tiny library")
            rows = page.locator("#library-table tbody tr")
            assert rows.count() == 1 and rows.first.get_attribute("data-id") == LIB_ID
            page.select_option("#library-capability", "embedding")
            assert rows.count() == 0 and page.locator("#library-empty").is_visible()
            page.select_option("#library-capability", "chat")
            page.get_by_role("button", name="Download Tiny library model").click()
            page.wait_for_function("() => document.querySelector('#library-table progress')?.value > 0")
            assert page.get_by_role("button", name="Cancel the download of Tiny library model").is_visible()
            _screenshot(page, tmp_path / "web-library.png")
            resume.set()
            page.get_by_role("button", name="Load Tiny library model", exact=True).wait_for(timeout=120_000)
            assert page.locator("#library-error").text_content() == ""

            page.click("#view-chat")
            page.select_option("#model", LIB_ID)  # the picker offers it now
            page.fill("#max-tokens", "24")
            page.fill("#prompt", "Say hello.")
            with page.expect_response("**/v1/chat/completions") as answer:
                page.press("#prompt", "Enter")
            assert answer.value.headers["content-type"].startswith("text/event-stream")
            page.wait_for_selector(".msg.assistant .stats", timeout=120_000)
            assert (page.locator(".msg.assistant .text").text_content() or "").strip()
            assert page.locator("#chat-error").text_content() == ""
        finally:
            context.close()
            server.stop()


# ---- images and audio in the chat: attached, pasted or dropped, on the test model with synthetic projectors ----

VISION, AUDIO = "vis/smol", "aud/smol"








@pytest.fixture(scope="module")
def media_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    """The test model three times: with a vision projector (``vis/smol``), an audio one (``aud/smol``) and none."""
    home = tmp_path_factory.mktemp("web-media")
    for model_id, kind in ((VISION, "vision"), (AUDIO, "audio")):
        mmproj = synth_projector(kind, tmp_path_factory.mktemp(f"synth-{kind}"))
        set_up(home, "models", "add", str(model_path), "--id", model_id, "--mmproj", str(mmproj))
    set_up(home, "models", "add", str(model_path), "--id", MODEL_ID)
    server = start_server(home, "--model", VISION, "--ctx", "2048", "--slots", "2", "--max-loaded", "3")
    yield server
    server.stop()


def _file(name: str, mime: str, data: bytes) -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def _send_and_answer(page, prompt: str, answers: int) -> dict:
    """Sends ``prompt`` from the message box; the chat request's body, once answer number ``answers`` is done."""
    page.fill("#prompt", prompt)
    with page.expect_request("**/v1/chat/completions") as sent:
        page.press("#prompt", "Enter")
    page.locator(".msg.assistant .stats").nth(answers - 1).wait_for(timeout=120_000)
    return sent.value.post_data_json


@pytest.mark.integration
def test_an_attached_image_shows_as_a_thumbnail_goes_with_the_message_and_stays_in_the_history(
    browser, media_server, tmp_path
):
    image = png(64, 64, seed=1)
    context, page = _open_with_key(browser, media_server)
    try:
        attach = page.locator("#attach")
        page.select_option("#model", MODEL_ID)  # no projector: text only
        assert attach.is_disabled()
        assert attach.get_attribute("title") == "this model takes text only"
        page.select_option("#model", VISION)
        assert attach.is_enabled()
        assert "image" in (attach.get_attribute("title") or "")
        assert "audio" not in (page.locator("#attach-file").get_attribute("accept") or "")

        page.set_input_files("#attach-file", files=[_file("noise.png", "image/png", image)])
        thumb = page.locator("#attachments .attachment.image img.thumb")
        thumb.wait_for()
        assert (thumb.get_attribute("src") or "").startswith("data:image/png;base64,")
        # a second one, removed again with its remove button
        page.set_input_files("#attach-file", files=[_file("other.png", "image/png", png(32, 32, seed=2))])
        page.locator("#attachments .attachment").nth(1).wait_for()
        page.get_by_role("button", name="Remove other.png").click()
        assert page.locator("#attachments .attachment").count() == 1
        # files the server or this model would refuse are named where errors show; the image stays
        page.set_input_files("#attach-file", files=[_file("notes.txt", "text/plain", b"hello")])
        page.wait_for_selector("#chat-error:text-matches('notes.txt is not a PNG')", state="attached")
        page.set_input_files("#attach-file", files=[_file("tone.wav", "audio/wav", wav(0.1, 440))])
        page.wait_for_selector(f"#chat-error:text-is('model `{VISION}` takes no audio input')", state="attached")
        assert page.locator("#attachments .attachment").count() == 1
        _screenshot(page, tmp_path / "web-image-attached.png")

        page.fill("#max-tokens", "12")
        body = _send_and_answer(page, "What is in this picture?", answers=1)
        assert body["model"] == VISION
        [question] = body["messages"]
        text, part = question["content"]
        assert text == {"type": "text", "text": "What is in this picture?"}
        assert part["type"] == "image_url"
        url = part["image_url"]["url"]
        assert url.startswith("data:image/png;base64,") and base64.b64decode(url.partition(",")[2]) == image
        assert (page.locator(".msg.assistant .text").first.text_content() or "").strip()  # an answer came
        assert page.locator("#chat-error").text_content() == ""
        sent = page.locator(".msg.user .media img.thumb")
        assert sent.count() == 1 and sent.get_attribute("src") == url  # the message shows its image...
        assert page.locator("#attachments").is_hidden()  # ...and the box has none waiting
        _screenshot(page, tmp_path / "web-image-chat.png")

        # the next turn sends the image again, in the history
        body = _send_and_answer(page, "And its colours?", answers=2)
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert body["messages"][0]["content"][1]["image_url"]["url"] == url
        assert body["messages"][2]["content"] == "And its colours?"

        # the text-only model refuses the history's image: the server's message shows
        page.select_option("#model", MODEL_ID)
        page.fill("#prompt", "Hello?")
        with page.expect_response("**/v1/chat/completions") as answer:
            page.press("#prompt", "Enter")
        assert answer.value.status == 400
        page.locator(".msg.assistant .stats").nth(2).wait_for(timeout=60_000)
        assert page.locator("#chat-error").text_content() == f"model `{MODEL_ID}` takes no image input"
    finally:
        context.close()


@pytest.mark.integration
def test_pasted_and_dropped_images_attach_and_audio_goes_as_input_audio(browser, media_server, tmp_path):
    context, page = _open_with_key(browser, media_server)
    try:
        page.select_option("#model", VISION)
        pasted, dropped = png(48, 48, seed=3), png(40, 40, seed=4)
        page.evaluate(  # a screenshot pasted from the clipboard: a file, no text
            """(b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const data = new DataTransfer();
                data.items.add(new File([bytes], 'image.png', {type: 'image/png'}));
                const paste = new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true});
                document.getElementById('prompt').dispatchEvent(paste);
            }""",
            base64.b64encode(pasted).decode(),
        )
        page.locator("#attachments img.thumb").wait_for()
        assert page.locator("#prompt").input_value() == ""
        files = page.evaluate_handle(
            """(b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const data = new DataTransfer();
                data.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
                return data;
            }""",
            base64.b64encode(dropped).decode(),
        )
        page.dispatch_event("#prompt", "dragover", {"dataTransfer": files})
        assert "dropping" in (page.locator("#composer").get_attribute("class") or "")
        page.dispatch_event("#prompt", "drop", {"dataTransfer": files})
        page.locator("#attachments img.thumb").nth(1).wait_for()
        assert "dropping" not in (page.locator("#composer").get_attribute("class") or "")
        urls = [t.get_attribute("src") for t in page.locator("#attachments img.thumb").all()]
        assert [base64.b64decode((u or "").partition(",")[2]) for u in urls] == [pasted, dropped]  # in order
        page.click("#new-chat")  # a new chat starts with nothing attached
        assert page.locator("#attachments").is_hidden()

        page.select_option("#model", AUDIO)
        assert "audio" in (page.locator("#attach").get_attribute("title") or "")
        tone = wav(1.0, 440)
        page.set_input_files("#attach-file", files=[_file("tone.wav", "audio/wav", tone)])
        chip = page.locator("#attachments .attachment.audio .chip")
        chip.wait_for()
        assert chip.text_content() == "♪ tone.wav"
        page.fill("#max-tokens", "12")
        page.fill("#prompt", "")  # the file alone is a message
        with page.expect_request("**/v1/chat/completions") as sent:
            page.click("#send")
        page.locator(".msg.assistant .stats").wait_for(timeout=120_000)
        [question] = sent.value.post_data_json["messages"]
        sound = {"data": base64.b64encode(tone).decode(), "format": "wav"}
        assert question["content"] == [{"type": "input_audio", "input_audio": sound}]
        assert page.locator("#chat-error").text_content() == ""
        assert (page.locator(".msg.assistant .text").text_content() or "").strip()
        assert page.locator(".msg.user .media .chip").text_content() == "♪ tone.wav"
        _screenshot(page, tmp_path / "web-audio-chat.png")
    finally:
        context.close()
