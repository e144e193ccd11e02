"""The chat page in real headless Chromium against a real warmlm server on SmolLM2-135M."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import QWEN, SMOLLM, installed, start_server, stop_server
from tests.test_web_support import (
    WEB_DIR,
    configure,
    fake_chat,
    last_reply_raw,
    launch_browser,
    new_page,
    record_dialogs,
    send,
    skip_without_browser,
    wait_models,
    wait_ready,
    wait_reply_done,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request, Route

pytestmark = [pytest.mark.e2e, skip_without_browser]

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
KEY = "web-test-key"
XSS = '<img src=x onerror="alert(1)"> and <script>alert(2)</script> **bold**'
RECORD_RENDERS = """() => {
  window.__renders = [];
  new MutationObserver(() => {
    const el = document.querySelector('.msg.assistant.streaming');
    if (!el) return;
    window.__renders.push({raw: el.dataset.raw, text: el.querySelector('.body').textContent});
  }).observe(document.getElementById('messages'), {childList: true, subtree: true});
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch_browser()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with new_page(browser) as page:
        yield page


def health(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(url + "/health", timeout=5).json()
    return body


def open_settings(page: Page, system: str, temperature: float, max_tokens: int) -> None:
    """Change settings the way a person does: through the settings panel."""
    page.click("#open-settings")
    page.fill("#set-system", system)
    page.eval_on_selector(
        "#set-temperature",
        "(e, v) => { e.value = v; e.dispatchEvent(new Event('input', {bubbles: true})); }",
        str(temperature),
    )
    page.fill("#set-max-tokens", str(max_tokens))
    page.click("#settings button[value=save]")


def test_reply_streams_and_equals_the_greedy_api_answer(page: Page, smol_url: str) -> None:
    page.goto(smol_url + "/")
    wait_ready(page)
    open_settings(page, "You are a concise assistant.", 0, 24)
    page.reload()
    wait_ready(page)
    page.click("#open-settings")
    assert page.input_value("#set-system") == "You are a concise assistant."
    assert page.input_value("#set-max-tokens") == "24"
    assert page.input_value("#set-model") == SMOLLM  # listed from /v1/models
    page.keyboard.press("Escape")

    page.evaluate(RECORD_RENDERS)
    with page.expect_request("**/v1/chat/completions") as sent:
        send(page, "Name three colors.")
    wait_reply_done(page)
    streamed = last_reply_raw(page)
    renders: list[dict[str, str]] = page.evaluate("window.__renders")

    body = json.loads(sent.value.post_data or "{}")
    assert body["temperature"] == 0 and body["max_tokens"] == 24 and body["model"] == SMOLLM
    assert body["messages"] == [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Name three colors."},
    ]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    answer = httpx.post(smol_url + "/v1/chat/completions", json=plain, timeout=60).json()
    text = answer["choices"][0]["message"]["content"]
    # The API request reuses the page's KV, and llama.cpp's kernels round differently across
    # batch shapes: greedy replies agree up to a near-tie, so compare their common start.
    assert streamed == text or os.path.commonprefix([streamed, text]).strip(), (streamed, text)

    partial = {r["text"] for r in renders if r["text"] and r["raw"] != streamed}
    assert len(partial) >= 2, f"expected ≥2 partial renders, saw {renders}"
    assert all(streamed.startswith(r["raw"]) for r in renders)
    stats = page.text_content(".msg.assistant .stats") or ""
    assert "first token" in stats and "tok/s" in stats and " tokens" in stats, stats
    assert re.search(r"\d+ cached prompt tokens", stats), stats


def test_stop_aborts_the_generation_on_the_server(page: Page, smol_url: str) -> None:
    configure(page, smol_url, temperature=0, maxTokens=400, system="")
    send(page, "Write a very long story about a dragon who learns to bake bread.")
    page.wait_for_function(
        "(document.querySelector('.msg.assistant')?.dataset.raw || '').length > 12"
    )
    assert health(smol_url)["running"] == 1
    page.click("#stop")
    stopped = time.monotonic()
    while health(smol_url)["running"] != 0:
        assert time.monotonic() - stopped < 2.0, "the server kept generating after Stop"
        time.sleep(0.05)
    elapsed = time.monotonic() - stopped

    wait_reply_done(page)
    assert page.is_visible("#send") and not page.is_visible("#stop")
    assert "stopped" in (page.text_content(".msg.assistant .stats") or "")
    frozen = last_reply_raw(page)
    page.wait_for_timeout(300)
    assert last_reply_raw(page) == frozen
    print(f"running dropped to 0 in {elapsed:.2f}s after Stop")


def test_html_from_the_model_renders_as_text(page: Page, smol_url: str) -> None:
    configure(page, smol_url, temperature=0, maxTokens=40, system="")
    dialogs = record_dialogs(page)
    html = page.evaluate("s => window.warmlm.renderMarkdown(s)", XSS)
    assert "<img" not in html and "<script" not in html and "&lt;img" in html
    assert "<strong>bold</strong>" in html

    # Through the page's whole streaming path: a reply that is exactly the payload.
    fake_chat(page, lambda _: XSS)
    send(page, "Show me some HTML.")
    wait_reply_done(page)
    assert last_reply_raw(page) == XSS
    assert XSS.replace("**", "")[:40] in (page.text_content(".msg.assistant .body") or "")
    page.unroute("**/v1/chat/completions")

    # And a real reply from the model to a message full of HTML.
    send(page, f"Repeat exactly: {XSS}")
    wait_reply_done(page, count=2)
    assert page.locator("#messages img, #messages script").count() == 0
    assert page.locator("#messages [onerror]").count() == 0
    assert dialogs == []


def test_reload_keeps_conversations(page: Page, smol_url: str) -> None:
    configure(page, smol_url, temperature=0, maxTokens=8, system="")
    send(page, "Say hi.")
    wait_reply_done(page)
    reply = last_reply_raw(page)
    page.click("#new-chat")
    send(page, "Another topic")
    wait_reply_done(page)
    assert page.locator(".conversation").count() == 2

    page.click(".conversation:has([aria-current]) [data-action=rename]")
    page.fill("input.rename", "Renamed chat")
    page.press("input.rename", "Enter")
    page.reload()
    wait_ready(page)

    titles = page.locator(".conversation .open").all_text_contents()
    assert titles == ["Renamed chat", "Say hi."]
    page.click(".conversation:has-text('Say hi.') .open")
    assert page.text_content(".msg.user .body") == "Say hi."
    assert last_reply_raw(page) == reply
    page.click(".conversation:has-text('Renamed chat') [data-action=delete]")
    page.reload()
    wait_ready(page)
    assert page.locator(".conversation .open").all_text_contents() == ["Say hi."]


def test_sentiment_badge_while_the_reply_streams(page: Page, smol_url: str) -> None:
    probe = {"input": "I love it", "labels": ["positive", "negative"], "task": "sentiment"}
    r = httpx.post(smol_url + "/v1/classify", json=probe, timeout=30)
    if r.status_code in (404, 405):
        pytest.skip("classify endpoint not yet available")
    text = "I love this, it is wonderful!"
    expected = httpx.post(smol_url + "/v1/classify", json={**probe, "input": text}, timeout=30)
    label = expected.json()["data"][0]["label"]
    configure(page, smol_url, temperature=0, maxTokens=16, system="", allInOne=True)
    send(page, text)
    page.wait_for_selector(".msg.user .badge:not([hidden])")
    assert page.get_attribute(".msg.user .badge", "data-label") == label
    wait_reply_done(page)


@pytest.mark.qwen
def test_the_page_chats_in_chinese_with_the_default_model(page: Page, qwen_url: str) -> None:
    """The same page on the packaged Qwen: a Chinese reply streams in, the Chinese message gets
    the badge the API gives it, and the second turn reuses the first one's KV."""
    configure(page, qwen_url, temperature=0, maxTokens=40, system="", allInOne=True)
    page.click("#open-settings")
    assert page.input_value("#set-model") == QWEN
    page.keyboard.press("Escape")
    text = "这家餐厅的菜太好吃了，服务也很棒，我非常喜欢！"
    probe = {"input": text, "task": "sentiment"}
    label = httpx.post(qwen_url + "/v1/classify", json=probe, timeout=60).json()["data"][0]
    page.evaluate(RECORD_RENDERS)
    send(page, text)
    page.wait_for_selector(".msg.user .badge:not([hidden])", timeout=60_000)
    assert page.get_attribute(".msg.user .badge", "data-label") == label["label"] == "positive"
    wait_reply_done(page, timeout=120_000)
    reply = last_reply_raw(page)
    renders: list[dict[str, str]] = page.evaluate("window.__renders")
    assert re.search(r"[\u4e00-\u9fff]", reply), reply  # answers in Chinese
    assert "\ufffd" not in page.text_content(".msg.assistant .body")  # no split UTF-8
    assert len({r["text"] for r in renders if r["raw"] != reply}) >= 2, renders
    send(page, "请用一句话总结你的回答。")
    wait_reply_done(page, count=2, timeout=120_000)
    stats = page.locator(".msg.assistant .stats").all_text_contents()[-1]
    cached = re.search(r"(\d+) cached prompt tokens", stats)
    assert cached and int(cached[1]) > 20, stats  # turn 2 reused turn 1's history
    assert page.locator(".msg .error:not([hidden])").count() == 0


def serve_web_files(route: Route, request: Request) -> None:
    """The page's files from the package directory; everything else goes to the network."""
    path = request.url.split("?")[0].split("/", 3)[3] or "index.html"
    file = WEB_DIR / path
    if request.method == "GET" and "/" not in path and file.is_file():
        route.fulfill(path=str(file))
    else:
        route.continue_()


def test_status_line_follows_a_server_start_and_the_api_key_is_asked_once(
    page: Page, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page is open (its files intercepted) before the new server even binds its port.

    The server starts as on a user's first run: its cache dir is empty, so it assembles the
    packaged Qwen model first, and the page sees `loading` for that long (~1.5 s here). A start
    from an assembled model can be ready before the HTTP stack has imported (0.7 s on an
    AVX-512 machine), leaving nothing between offline and ready to show.

    That server needs an API key: the page asks for it on the first 401 (listing the models
    once ready) and then sends it with everything, the streamed chat included."""
    if not installed(QWEN):
        pytest.skip("the default model's wheels are not installed")
    monkeypatch.setenv("WARMLM_CACHE_DIR", str(tmp_path / "cache"))
    server = start_server(QWEN, tmp_path, "--threads", "2", "--api-key", KEY, wait=False)
    authorization: list[str | None] = []
    page.on(
        "request",
        lambda r: authorization.append(r.headers.get("authorization")) if "/v1/" in r.url else None,
    )
    try:
        page.route(server.url + "/**", serve_web_files)
        page.goto(server.url + "/")
        page.wait_for_function(
            "document.getElementById('status').dataset.state === 'ready'", timeout=60_000
        )
        log: list[str] = page.evaluate("window.__statusLog")
        startup = health(server.url)["startup_s"]
        assert (page.text_content("#status") or "").strip() == f"Ready · {QWEN}"

        page.wait_for_selector("#key-dialog[open]")
        page.fill("#key-input", KEY)
        page.click("#key-dialog button[value=ok]")
        wait_models(page)
        open_settings(page, "", 0, 8)
        send(page, "Say hi.")
        wait_reply_done(page)
        assert last_reply_raw(page) and page.locator(".msg .error:not([hidden])").count() == 0
    finally:
        stop_server(server)
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # 491 MB pytest would keep
    print(f"statuses displayed: {log}; server startup steps: {startup}")
    assert log[0] == "offline" and log[-1] == "ready"
    order = ["offline", "loading", "warming", "ready"]
    assert [order.index(s) for s in log] == sorted(order.index(s) for s in log), log
    assert "loading" in log, (log, startup)
    if startup["warm up"] >= 1.0:  # long enough for a 250 ms poll to land inside it
        assert "warming" in log, (log, startup)
    bearer = f"Bearer {KEY}"
    assert authorization[0] is None and set(authorization[1:]) == {bearer}, authorization
    assert page.evaluate("sessionStorage.getItem('warmlm.apiKey')") == KEY


def test_screenshots_of_a_finished_conversation(
    browser: Browser, smol_url: str, tmp_path: Path
) -> None:
    """Desktop (light, dark) and phone; into docs/screenshots with WARMLM_SCREENSHOTS=1."""
    folder = SCREENSHOTS if os.environ.get("WARMLM_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    with new_page(browser) as page:
        configure(page, smol_url, temperature=0, maxTokens=200, system="")
        send(page, "What is a CPU? Answer in one sentence.")
        wait_reply_done(page, timeout=60_000)
        page.click("#new-chat")
        send(page, "Write a Python function that reverses a string. Keep it short.")
        wait_reply_done(page, timeout=60_000)
        page.click("#prompt")
        state = page.evaluate("JSON.stringify(localStorage)")
        page.screenshot(path=str(folder / "chat-desktop.png"))
        page.emulate_media(color_scheme="dark")
        page.screenshot(path=str(folder / "chat-desktop-dark.png"))
    with new_page(browser, width=390, height=844) as page:
        page.goto(smol_url + "/")
        page.evaluate(
            "s => Object.entries(JSON.parse(s)).forEach(([k, v]) => localStorage.setItem(k, v))",
            state,
        )
        page.reload()
        wait_ready(page)
        page.screenshot(path=str(folder / "chat-phone.png"))
    for name in ("chat-desktop.png", "chat-desktop-dark.png", "chat-phone.png"):
        assert (folder / name).stat().st_size > 10_000
