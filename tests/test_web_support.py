"""Helpers shared by the browser tests (no tests here): headless Chromium via Playwright."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page, Request, Route

CHROMIUM = Path("/usr/bin/chromium")
WEB_DIR = Path(__file__).resolve().parent.parent / "warmlm" / "web"
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
SETTINGS_KEY = "warmlm.settings"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (run scripts/install-browser.sh)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (run scripts/install-browser.sh)"
    return None


skip_without_browser = pytest.mark.skipif(
    browser_missing() is not None, reason=browser_missing() or ""
)


def launch_browser() -> Iterator[Browser]:
    """One headless Chromium (Debian's build); Playwright gives it a fresh temporary profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(
    browser: Browser, width: int = 1280, height: int = 800, dark: bool = False
) -> Iterator[Page]:
    """A page in a fresh context (empty localStorage); fails the test on any page error."""
    context = browser.new_context(
        viewport={"width": width, "height": height},
        color_scheme="dark" if dark else "light",
        reduced_motion="reduce",
        # Playwright's string predicates need eval; and without the page's CSP safety net the
        # XSS test shows that the renderer alone keeps model HTML out of the DOM.
        bypass_csp=True,
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"errors in the page: {errors}"


def record_dialogs(page: Page) -> list[str]:
    """Every alert/confirm/prompt the page opens from now on (each dismissed)."""
    seen: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        seen.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return seen


def configure(page: Page, url: str, **settings: Any) -> None:
    """Open the chat page with these settings stored (as the settings panel stores them)."""
    page.goto(url + "/")
    wait_models(page)  # the page stores the model it picked: let that happen first
    page.evaluate(
        "([key, value]) => localStorage.setItem(key, value)", [SETTINGS_KEY, json.dumps(settings)]
    )
    page.reload()
    wait_ready(page)


def wait_models(page: Page) -> None:
    page.wait_for_function("document.getElementById('set-model').options.length > 0")


def wait_ready(page: Page) -> None:
    page.wait_for_function("document.getElementById('status').dataset.state === 'ready'")


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def wait_reply_done(page: Page, count: int = 1, timeout: float = 30_000) -> None:
    """Wait until `count` assistant replies exist and none is streaming."""
    page.wait_for_function(
        """n => document.querySelectorAll('.msg.assistant').length >= n
              && !document.querySelector('.msg.streaming')""",
        arg=count,
        timeout=timeout,
    )


def last_reply_raw(page: Page) -> str:
    return str(page.eval_on_selector(".msg.assistant:last-of-type", "e => e.dataset.raw"))


def sse_body(text: str, pieces: int = 3, cached: int = 0) -> str:
    """An OpenAI chat stream that says `text` in `pieces` chunks, with a usage chunk."""
    size = max(1, -(-len(text) // pieces))
    parts = [text[i : i + size] for i in range(0, len(text), size)]

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
        return "data: " + json.dumps(
            {"object": "chat.completion.chunk", "choices": choices, **extra}
        )

    usage = {
        "prompt_tokens": 10,
        "completion_tokens": len(parts),
        "total_tokens": 10 + len(parts),
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in parts]
    events += [chunk({}, "stop"), chunk({}, usage=usage), "data: [DONE]"]
    return "\n\n".join(events) + "\n\n"


Reply = Callable[[dict[str, Any]], str]


def fake_chat(page: Page, reply: Reply, seen: list[Request] | None = None) -> None:
    """Answer the page's chat requests with `reply(body)` streamed (no model involved)."""

    def handle(route: Route) -> None:
        if seen is not None:
            seen.append(route.request)
        body = json.loads(route.request.post_data or "{}")
        route.fulfill(
            status=200, headers={"content-type": "text/event-stream"}, body=sse_body(reply(body))
        )

    page.route("**/v1/chat/completions", handle)


def json_error(
    route: Route, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    body = {"error": {"message": message, "type": "x", "param": None, "code": None}}
    route.fulfill(status=status, json=body, headers=headers or {})
