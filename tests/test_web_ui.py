"""The chat page's behaviour in real headless Chromium, with the API answered by the test.

The page's own files are served from warmlm/web; /health, /v1/models, chat and classify are
scripted per test (401s, 429s, a classify route, ...), so no model is needed here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.test_web_support import (
    WEB_DIR,
    fake_chat,
    json_error,
    last_reply_raw,
    launch_browser,
    new_page,
    send,
    skip_without_browser,
    sse_body,
    wait_models,
    wait_ready,
    wait_reply_done,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request, Route

pytestmark = skip_without_browser

ORIGIN = "http://127.0.0.1:9"  # nothing listens here: every request is answered by a route
READY = {"status": "ready", "model": {"name": "fake-model"}, "running": 0, "waiting": 0}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch_browser()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with new_page(browser) as page:
        page.route(ORIGIN + "/**", serve)
        yield page


def serve(route: Route, request: Request) -> None:
    """The base fake server: the page's files, a ready /health and one model."""
    path = request.url.split("?")[0].split("/", 3)[3] or "index.html"
    if path == "health":
        route.fulfill(json=READY)
    elif path == "v1/models":
        route.fulfill(json={"object": "list", "data": [{"id": "fake-model"}]})
    elif (WEB_DIR / path).is_file() and "/" not in path:
        route.fulfill(path=str(WEB_DIR / path))
    else:
        json_error(route, 404, "Not Found")


def open_chat(page: Page, **settings: Any) -> None:
    page.goto(ORIGIN + "/")
    if settings:
        wait_models(page)  # the page stores the model it picked: let that happen first
        page.evaluate("s => localStorage.setItem('warmlm.settings', s)", json.dumps(settings))
        page.reload()
    wait_ready(page)


def echo(body: dict[str, Any]) -> str:
    return "echo: " + body["messages"][-1]["content"]


def test_asks_for_the_api_key_once_on_a_401(page: Page) -> None:
    auth: list[str | None] = []

    def chat(route: Route, request: Request) -> None:
        auth.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != "Bearer sekrit":
            json_error(route, 401, "invalid api key")
        else:
            route.fulfill(headers={"content-type": "text/event-stream"}, body=sse_body("hello"))

    page.route(ORIGIN + "/v1/chat/completions", chat)
    open_chat(page)
    send(page, "hi")
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", "sekrit")
    page.press("#key-input", "Enter")
    wait_reply_done(page)
    assert last_reply_raw(page) == "hello"
    send(page, "again")
    wait_reply_done(page, count=2)
    assert auth == [None, "Bearer sekrit", "Bearer sekrit"]
    assert page.evaluate("sessionStorage.getItem('warmlm.apiKey')") == "sekrit"
    assert page.evaluate("localStorage.getItem('warmlm.apiKey')") is None


@pytest.mark.parametrize(
    ("status", "words"),
    [(429, "busy"), (503, "not available"), (504, "waited too long"), (0, "Cannot reach")],
)
def test_errors_are_explained_and_retry_works(page: Page, status: int, words: str) -> None:
    calls: list[int] = []

    def chat(route: Route) -> None:
        calls.append(1)
        if len(calls) > 1:
            route.fulfill(headers={"content-type": "text/event-stream"}, body=sse_body("ok now"))
        elif status == 0:
            route.abort("connectionrefused")
        else:
            json_error(route, status, "the model is loading", {"Retry-After": "2"})

    page.route(ORIGIN + "/v1/chat/completions", chat)
    open_chat(page)
    send(page, "hello")
    page.wait_for_selector(".msg.assistant .error:not([hidden])")
    assert words in (page.text_content(".msg.assistant .error") or "")
    page.click(".msg.assistant .error [data-action=retry]")
    wait_reply_done(page)
    page.wait_for_function("document.querySelector('.msg.assistant').dataset.raw === 'ok now'")
    assert page.locator(".msg.assistant .error:not([hidden])").count() == 0
    assert page.locator(".msg").count() == 2


def test_enter_while_composing_does_not_send(page: Page) -> None:
    seen: list[Request] = []
    fake_chat(page, echo, seen)
    open_chat(page)
    page.fill("#prompt", "你好")
    page.eval_on_selector(
        "#prompt",
        """e => {
          e.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', isComposing: true,
                                                          bubbles: true, cancelable: true}));
          const ime = new KeyboardEvent('keydown', {key: 'Enter', bubbles: true, cancelable: true});
          Object.defineProperty(ime, 'keyCode', {value: 229});
          e.dispatchEvent(ime);
        }""",
    )
    page.press("#prompt", "Shift+Enter")
    page.type("#prompt", "世界")
    assert page.input_value("#prompt") == "你好\n世界"
    assert page.locator(".msg").count() == 0 and seen == []
    page.press("#prompt", "Enter")
    wait_reply_done(page)
    assert last_reply_raw(page) == "echo: 你好\n世界"
    assert page.input_value("#prompt") == ""


def test_regenerate_and_edit_and_resend(page: Page) -> None:
    seen: list[Request] = []
    fake_chat(page, lambda body: f"reply {len(seen)} to {body['messages'][-1]['content']}", seen)
    open_chat(page, system="Be brief.", temperature=0.5, maxTokens=64)
    send(page, "first")
    wait_reply_done(page)
    assert last_reply_raw(page) == "reply 1 to first"
    page.click("[data-action=regenerate]")
    page.wait_for_function(
        "document.querySelector('.msg.assistant').dataset.raw.startsWith('reply 2')"
    )
    assert page.locator(".msg").count() == 2

    page.click(".msg.user [data-action=edit]")
    page.fill(".msg.user .edit-box", "second")
    page.click("[data-action=edit-save]")
    page.wait_for_function(
        "document.querySelector('.msg.assistant').dataset.raw === 'reply 3 to second'"
    )
    assert page.locator(".msg").count() == 2
    assert page.text_content(".msg.user .body") == "second"
    body = json.loads(seen[-1].post_data or "{}")
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "second"},
    ]
    assert body["temperature"] == 0.5 and body["max_tokens"] == 64 and body["model"] == "fake-model"


def test_code_blocks_have_a_copy_button(page: Page) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ORIGIN)
    fake_chat(page, lambda _: "Here:\n\n```python\nprint('<b>hi</b>')\n```\n")
    open_chat(page)
    send(page, "code please")
    wait_reply_done(page)
    assert page.text_content(".code .lang") == "python"
    page.click(".code .copy")
    page.wait_for_selector(".code .copy:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == "print('<b>hi</b>')"


def test_sentiment_badge_from_classify(page: Page) -> None:
    asked: list[dict[str, Any]] = []

    def classify(route: Route, request: Request) -> None:
        asked.append(json.loads(request.post_data or "{}"))
        probabilities = {"positive": 0.93, "negative": 0.07}
        route.fulfill(json={"data": [{"label": "positive", "probabilities": probabilities}]})

    page.route(ORIGIN + "/v1/classify", classify)
    fake_chat(page, echo)
    open_chat(page, allInOne=True)
    send(page, "I love this!")
    page.wait_for_selector(".msg.user .badge:not([hidden])")
    assert page.text_content(".msg.user .badge") == "😊 positive 93%"
    assert asked == [
        {"input": "I love this!", "labels": ["positive", "negative"], "task": "sentiment"}
    ]
    wait_reply_done(page)
    page.reload()
    wait_ready(page)
    assert page.get_attribute(".msg.user .badge", "data-label") == "positive"


def test_no_badge_and_no_error_without_a_classify_route(page: Page) -> None:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/v1/classify") else None)
    fake_chat(page, echo)
    open_chat(page, allInOne=True)
    for n in (1, 2):
        send(page, f"message {n}")
        wait_reply_done(page, count=n)
    assert page.locator(".badge:not([hidden])").count() == 0
    assert page.locator(".error:not([hidden])").count() == 0
    assert len(asked) == 1  # a 404 once, then the page stops asking


def test_status_line_shows_the_queue_and_failures(page: Page) -> None:
    busy = {**READY, "running": 2, "waiting": 3}
    page.route(ORIGIN + "/health", lambda route: route.fulfill(json=busy))
    open_chat(page)
    page.wait_for_selector("#status-text:has-text('2 generating, 3 waiting')")
    failed = {"status": "failed", "model": {"name": "m"}, "error": "out of memory"}
    page.route(ORIGIN + "/health", lambda route: route.fulfill(json=failed))
    page.wait_for_selector("#status[data-state=failed]", timeout=5_000)
    assert "out of memory" in (page.text_content("#status-text") or "")


def test_phone_layout_and_accessible_controls(browser: Browser) -> None:
    with new_page(browser, width=390, height=844) as page:
        page.route(ORIGIN + "/**", serve)
        open_chat(page)
        assert not page.is_visible("#new-chat") or page.evaluate(
            "document.getElementById('sidebar').getBoundingClientRect().right <= 0"
        )
        page.click("#toggle-sidebar")
        page.wait_for_function(
            "document.getElementById('sidebar').getBoundingClientRect().left >= 0"
        )
        assert page.get_attribute("#toggle-sidebar", "aria-expanded") == "true"
        page.click("#scrim", position={"x": 370, "y": 400})
        assert page.get_attribute("#toggle-sidebar", "aria-expanded") == "false"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, "the page scrolls sideways on a phone"
        unnamed = page.evaluate(
            """() => [...document.querySelectorAll('button, input, select, textarea')]
                 .filter(e => !(e.labels?.length || e.getAttribute('aria-label')
                                || e.textContent.trim()))
                 .map(e => e.outerHTML)"""
        )
        assert unnamed == []
        assert page.get_attribute("#status", "aria-live") == "polite"


MARKDOWN_CASES = [
    ("**b** *i* `<b>`", "<p><strong>b</strong> <em>i</em> <code>&lt;b&gt;</code></p>"),
    ("# T\n- a\n- b", "<h1>T</h1><ul><li>a</li><li>b</li></ul>"),
    ("[ok](https://x.org/a?b=1&c=2)", '<p><a href="https://x.org/a?b=1&amp;c=2"'),
    ("[no](javascript:alert(1))", "<p>[no](javascript:alert(1))</p>"),
    ('<a href="x" onclick="y">z</a>', "<p>&lt;a href=&quot;x&quot; onclick=&quot;y&quot;&gt;"),
    ("```js\nlet a = '<i>';", "<pre><code>let a = &#39;&lt;i&gt;&#39;;</code></pre>"),
    ("snake_case_name and 2*3*4", "<p>snake_case_name and 2*3*4</p>"),
]


def test_markdown_renderer_escapes_first(page: Page) -> None:
    open_chat(page)
    for markdown, html in MARKDOWN_CASES:
        assert html in page.evaluate("s => window.warmlm.renderMarkdown(s)", markdown), markdown
