"""API keys in the browser, against a gateway with ``gateway.require_keys`` on and a fake worker
(no models): the admin creates a key on the admin page (its secret shown once) and revokes it; the
chat page asks for a key, keeps it in memory only, trades it for a fresh ephemeral token for each
WebSocket (``?token=``) and chats; without ``require_keys`` the pages ask for nothing."""
from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.gateway_procs import start_fake_worker, start_gateway

from .conftest import ARTIFACTS, _wait_ready_on_goto, shot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser_keys")
    w = start_fake_worker(tmp)
    g = start_gateway(tmp, [w.url], 1, {"OMNISERVE_GATEWAY__REQUIRE_KEYS": "true"})
    yield g
    g.stop()
    w.stop()


def _page(browser, url: str):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=url,
                              permissions=["microphone", "camera"])
    pg = ctx.new_page()
    _wait_ready_on_goto(pg)
    errors: list = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    return ctx, pg


@pytest.fixture
def kpage(browser, keyed):
    ctx, pg = _page(browser, keyed.url)
    yield pg
    ctx.close()


def _mint(g, key: str) -> int:
    return httpx.post(g.url + "/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {key}"},
                      trust_env=False).status_code


def test_admin_creates_and_revokes_a_key(kpage, keyed):
    page, g = kpage, keyed
    page.goto("/admin")
    page.fill("[data-testid=admin-token]", g.token)
    page.click("[data-testid=admin-login]")
    page.wait_for_selector("[data-testid=keys] tbody tr td")
    # its own fetch; a locator wait, as the pages' CSP forbids the eval a string-expression wait uses
    expect(page.locator("#keys-mode")).to_contain_text("require_keys is on")
    page.fill("[data-testid=key-name]", "Kiosk <b>1</b>")
    page.click("[data-testid=key-create]")
    page.wait_for_selector("[data-testid=key-secret]", state="visible")
    secret = page.input_value("[data-testid=key-secret-value]")
    assert secret.startswith("osk_")
    row = page.wait_for_selector("[data-testid=keys] tbody tr:has-text('Kiosk <b>1</b>')")   # shown as text
    assert page.locator("[data-testid=keys] b").count() == 0
    key_id = next(k["id"] for k in httpx.get(g.url + "/api/admin/keys", headers=g.admin, trust_env=False).json()
                  if k["name"] == "Kiosk <b>1</b>")
    assert key_id in row.inner_text() and "never" in row.inner_text()
    assert _mint(g, secret) == 200                                   # the shown secret is the key
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#keys-card").screenshot(path=str(ARTIFACTS / "admin_keys_card.png"))
    shot(page, "admin_keys")
    page.click("#key-secret-done")
    assert page.locator("[data-testid=key-secret]").is_hidden()
    assert page.input_value("[data-testid=key-secret-value]") == ""  # the secret is gone from the page
    page.once("dialog", lambda d: d.accept())
    page.click(f"[data-testid=keys] tr[data-key-id='{key_id}'] [data-testid=key-revoke]")
    page.wait_for_selector(f"[data-testid=keys] tr[data-key-id='{key_id}']", state="detached")
    page.wait_for_selector(".notice.ok:has-text('revoked')")
    assert _mint(g, secret) == 401
    assert not page.errors, page.errors


def test_chat_page_trades_the_key_for_a_token_per_connection(kpage, keyed):
    page, g = kpage, keyed
    key = httpx.post(g.url + "/api/admin/keys", json={"name": "page"}, headers=g.admin, trust_env=False).json()["key"]
    urls: list[str] = []
    page.on("websocket", lambda ws: urls.append(ws.url))
    page.goto("/turnbased")
    page.wait_for_selector("[data-testid=api-key]")
    # no key yet: nothing is sent, the typed message stays
    page.fill("[data-testid=chat-input]", "hi")
    page.click("[data-testid=send]")
    page.wait_for_selector(".notice.warn:has-text('API key')")
    assert page.input_value("[data-testid=chat-input]") == "hi" and not urls
    # a wrong key: refused with a clear message, no socket opened
    page.fill("[data-testid=api-key]", "osk_wrong")
    page.click("[data-testid=send]")
    page.wait_for_selector(".notice.error:has-text('not accepted')")
    assert not urls
    page.fill("[data-testid=api-key]", key)
    shot(page, "turnbased_api_key")
    for i, text in enumerate(("hello", "again")):
        page.fill("[data-testid=chat-input]", text)
        page.click("[data-testid=send]")
        page.wait_for_function(
            "n => document.querySelectorAll('[data-testid=assistant-text]:not(.typing)').length >= n", arg=i + 2)           # the failed reply above is one of them
        assert page.locator("[data-testid=assistant-text]").last.inner_text() == f"echo: {text}"
    assert len(urls) == 2 and all("/ws/chat?token=ek_" in u for u in urls)
    assert urls[0] != urls[1]                           # a fresh token for each connection
    assert key not in "".join(urls) and key not in page.url
    stored = page.evaluate("() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage),"
                           " document.cookie])")
    assert key not in stored                            # in memory only
    for path in ("/half_duplex", "/omni"):              # the voice pages ask for it too
        page.goto(path)
        page.wait_for_selector("[data-testid=api-key]")
        assert page.input_value("[data-testid=api-key]") == ""   # a new page has forgotten it
    assert not page.errors, page.errors


def test_voice_page_uses_a_token_and_refuses_without_a_key(kpage, keyed):
    page, g = kpage, keyed
    key = httpx.post(g.url + "/api/admin/keys", json={"name": "voice"}, headers=g.admin, trust_env=False).json()["key"]
    urls: list[str] = []
    page.on("websocket", lambda ws: urls.append(ws.url))
    page.goto("/half_duplex")
    page.click("[data-testid=start]")                   # no key: stops before the microphone opens
    page.wait_for_selector(".notice.warn:has-text('API key')")
    assert page.is_enabled("[data-testid=start]") and page.get_attribute("[data-testid=state]", "data-state") == "idle"
    page.fill("[data-testid=api-key]", "osk_wrong")
    page.click("[data-testid=start]")
    page.wait_for_selector(".notice.error:has-text('not accepted')")
    page.wait_for_selector("[data-testid=start]:not([hidden]):not([disabled])")
    assert not urls
    page.fill("[data-testid=api-key]", key)
    page.click("[data-testid=start]")
    page.wait_for_selector("[data-testid=state][data-state=listening]")
    assert len(urls) == 1 and "/ws/half_duplex/hd_" in urls[0] and "?token=ek_" in urls[0]
    page.click("[data-testid=stop]")
    page.wait_for_selector("[data-testid=start]:not([hidden])")
    assert not page.errors, page.errors


def test_pages_ask_for_nothing_without_require_keys(browser, tmp_path):
    w = start_fake_worker(tmp_path)
    g = start_gateway(tmp_path, [w.url], 1)
    ctx, page = _page(browser, g.url)
    try:
        urls: list[str] = []
        page.on("websocket", lambda ws: urls.append(ws.url))
        page.goto("/turnbased")
        assert page.locator("[data-testid=api-key]").count() == 0
        page.fill("[data-testid=chat-input]", "hi")
        page.click("[data-testid=send]")
        page.wait_for_selector("[data-testid=assistant-text]:not(.typing):has-text('echo: hi')")
        assert len(urls) == 1 and urls[0].endswith("/ws/chat")
        page.goto("/admin")
        page.fill("[data-testid=admin-token]", g.token)
        page.click("[data-testid=admin-login]")
        page.wait_for_selector("[data-testid=keys] tbody tr td.empty")
        assert "require_keys is off" in page.inner_text("#keys-mode")
        assert not page.errors, page.errors
    finally:
        ctx.close()
        g.stop()
        w.stop()
