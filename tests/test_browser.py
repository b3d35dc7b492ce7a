"""The chat page and the dashboard in a real browser: Debian's Chromium through Playwright.

Each person is a separate browser context (their own storage), talking to a real papo
on a random port. Screenshots go to ``PAPO_TEST_SCREENSHOTS`` (default
``test-artifacts/screenshots``); the run's summary lists their paths.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from papo.client import PapoClient
from papo.server.config import Settings
from papo.server.runner import RunningServer
from tests.conftest import make_role, register_and_login, serving

CHROMIUM = os.environ.get("PAPO_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("PAPO_TEST_SCREENSHOTS", "test-artifacts/screenshots"))
# (listed at the end of the run by conftest's terminal summary)
PASSWORD = "correct horse battery"
TOKEN_SECONDS = 10  # short-lived tokens: the pages must refresh them during the tests

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once per session
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (see SERVICES.md)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        await launched.close()


@pytest.fixture
async def web(base_settings: Settings) -> AsyncIterator[RunningServer]:
    settings = dataclasses.replace(
        base_settings,
        auth=dataclasses.replace(base_settings.auth, access_token_seconds=TOKEN_SECONDS),
    )
    async with serving(settings) as running:
        yield running


@pytest.fixture
async def contexts(browser: Browser) -> AsyncIterator[list[BrowserContext]]:
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        await context.close()


async def _page(browser: Browser, contexts: list[BrowserContext], **options: object) -> Page:
    context = await browser.new_context(**options)  # type: ignore[arg-type]
    contexts.append(context)
    page = await context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    return page


async def _screenshot(page: Page, name: str) -> None:
    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=path, full_page=True)


async def _sign_up(page: Page, server: RunningServer, name: str) -> str:
    email = f"{name.lower()}-{secrets.token_hex(4)}@example.com"
    await page.goto(server.url + "/")
    await page.click("#tab-register")
    await page.fill("input[name=display_name]", name)
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("#auth-submit")
    await expect(page.locator("#me-name")).to_have_text(name)
    await expect(page.locator("body")).to_have_attribute("data-status", "online")
    return email


async def _message_texts(page: Page) -> list[str]:
    return await page.locator("#message-list li.message:not(.pending) .text").all_inner_texts()


async def _send(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")
    await expect(page.locator("#message-list li.message.pending")).to_have_count(0)


async def test_two_people_chat_go_offline_and_message_directly(
    web: RunningServer, browser: Browser, contexts: list[BrowserContext]
) -> None:
    ana = await _page(browser, contexts)
    bruno_context_index = 1
    bruno = await _page(browser, contexts)
    await _sign_up(ana, web, "Ana")
    await _sign_up(bruno, web, "Bruno")
    first_token_expires = time.monotonic() + TOKEN_SECONDS
    bruno_refresh_token = await bruno.evaluate("sessionStorage.getItem('papo.refresh')")

    # Ana creates a public room; Bruno finds it among the public rooms and joins.
    await ana.fill("#create-room input[name=name]", "lobby")
    await ana.click("#create-room button[type=submit]")
    await expect(ana.locator("#room-title")).to_have_text("lobby")
    await bruno.click("#browse summary")
    await bruno.click("#public-rooms button:has-text('lobby')")
    await expect(bruno.locator("#room-title")).to_have_text("lobby")

    # Each sees the other online.
    await expect(ana.locator("#online")).to_contain_text("Bruno")
    await expect(bruno.locator("#online")).to_contain_text("Ana")

    # Bruno types: Ana sees it; he sends: she gets the message and the indicator goes.
    await bruno.locator("#text").press_sequentially("hello An", delay=30)
    await expect(ana.locator("#typing")).to_have_text("Bruno is typing…")
    await bruno.locator("#text").press_sequentially("a")
    await bruno.press("#text", "Enter")
    await expect(ana.locator("#message-list")).to_contain_text("hello Ana")
    await expect(ana.locator("#typing")).to_have_text("")
    await _send(ana, "hi Bruno")
    await expect(bruno.locator("#message-list")).to_contain_text("hi Bruno")

    # Text from users is text: markup shows as typed and never becomes elements.
    markup = '<img src=x onerror="document.title=1"><b>bold</b>'
    await _send(bruno, markup)
    await expect(ana.locator("#message-list .text", has_text="<b>bold</b>")).to_have_count(1)
    assert await ana.locator("#message-list img, #message-list b").count() == 0

    # Bruno goes offline; Ana keeps talking; he comes back and sees exactly what he missed.
    await contexts[bruno_context_index].set_offline(True)
    await expect(bruno.locator("#status")).to_be_visible()
    await expect(bruno.locator("body")).to_have_attribute("data-status", "offline")
    missed = [f"while you were away {i}" for i in range(3)]
    for text in missed:
        await _send(ana, text)
    await contexts[bruno_context_index].set_offline(False)
    await expect(bruno.locator("body")).to_have_attribute("data-status", "online")
    await expect(bruno.locator("#status")).to_be_hidden()
    await expect(bruno.locator("#message-list")).to_contain_text(missed[-1])
    expected = ["hello Ana", "hi Bruno", markup, *missed]
    assert await _message_texts(bruno) == expected
    assert await _message_texts(ana) == expected
    assert await bruno.locator("body").get_attribute("data-reconnects") == "1"

    # Ana edits and deletes her own messages; Bruno sees both changes.
    ana_first = ana.locator("#message-list li.message.mine", has_text="hi Bruno")
    await ana_first.get_by_role("button", name="Edit message").click()
    await ana.locator("#message-list textarea.edit-text").fill("hi Bruno!")
    await ana.locator("#message-list textarea.edit-text").press("Enter")
    await expect(bruno.locator("#message-list")).to_contain_text("hi Bruno!")
    await expect(bruno.locator("#message-list li", has_text="hi Bruno!")).to_contain_text(
        "(edited)"
    )
    doomed = ana.locator("#message-list li.message.mine", has_text=missed[0])
    await doomed.get_by_role("button", name="Delete message").click()
    await expect(bruno.locator("#message-list")).not_to_contain_text(missed[0])
    await expect(bruno.locator("#message-list .deleted")).to_have_count(1)

    # A direct message: Ana picks Bruno from the people online; he sees it arrive unread.
    await ana.click("#online button:has-text('Bruno')")
    await expect(ana.locator("#room-title")).to_have_text("Bruno")
    await _send(ana, "psst, just you")
    dm_entry = bruno.locator("#dms button", has_text="Ana")
    await expect(dm_entry.locator(".unread")).to_have_text("1")
    await dm_entry.click()
    await expect(bruno.locator("#room-title")).to_have_text("Ana")
    assert await _message_texts(bruno) == ["psst, just you"]
    await expect(dm_entry.locator(".unread")).to_have_count(0)

    # The pages outlive their first access token without a reconnect: each refreshed it
    # (getting a new refresh token) and handed it to its open socket.
    await asyncio.sleep(max(0.0, first_token_expires + 2 - time.monotonic()))
    await _send(bruno, "still here")
    await expect(ana.locator("#message-list")).to_contain_text("still here")
    assert await bruno.evaluate("sessionStorage.getItem('papo.refresh')") != bruno_refresh_token
    assert await bruno.locator("body").get_attribute("data-reconnects") == "1"
    assert await ana.locator("body").get_attribute("data-reconnects") in (None, "0")

    await _screenshot(ana, "chat")


async def test_chat_page_fits_a_phone_and_reports_errors(
    web: RunningServer, browser: Browser, contexts: list[BrowserContext]
) -> None:
    phone = await _page(browser, contexts, viewport={"width": 390, "height": 844})
    await phone.goto(web.url + "/")
    # A wrong password gets the server's error, in words.
    await phone.fill("input[name=email]", "nobody@example.com")
    await phone.fill("input[name=password]", "not the password")
    await phone.click("#auth-submit")
    await expect(phone.locator("#auth-error")).to_have_text("Wrong email or password.")

    await _sign_up(phone, web, "Pia")
    # The room list slides over the conversation on a narrow screen.
    await expect(phone.locator("#sidebar")).to_be_hidden()
    await phone.click("#show-rooms")
    await expect(phone.locator("#sidebar")).to_be_visible()
    await phone.fill("#create-room input[name=name]", "pocket")
    await phone.press("#create-room input[name=name]", "Enter")
    await expect(phone.locator("#room-title")).to_have_text("pocket")
    await expect(phone.locator("#sidebar")).to_be_hidden()
    await _send(phone, "typed on a phone")
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "nothing overflows the phone's width"
    await _screenshot(phone, "chat-phone")

    # A message over the server's limit is refused with a clear error, and kept to retry.
    await phone.fill("#text", "x" * 4001)
    await phone.press("#text", "Enter")
    await expect(phone.locator("#toast")).to_have_text("That message is too long.")
    assert len(await phone.input_value("#text")) == 4001
    assert await _message_texts(phone) == ["typed on a phone"]


async def test_dashboard_counts_connections_live(
    web: RunningServer, browser: Browser, contexts: list[BrowserContext], base_settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as http:
        admin = await register_and_login(http, prefix="boss")
        customer = await register_and_login(http, prefix="shopper")
    await make_role(base_settings, admin.user_id, "admin")

    board = await _page(browser, contexts)
    await board.goto(web.url + "/dashboard")
    # A customer is turned away with the reason.
    await board.fill("input[name=email]", customer.email)
    await board.fill("input[name=password]", customer.password)
    await board.click("#auth-submit")
    await expect(board.locator("#auth-error")).to_contain_text("admin or agent role")

    await board.fill("input[name=email]", admin.email)
    await board.fill("input[name=password]", admin.password)
    await board.click("#auth-submit")
    connections = board.locator("#value-connections")
    await expect(connections).to_have_text("1")  # the dashboard's own connection
    await expect(board.locator("#value-nodes")).to_have_text("1")
    await expect(board.locator("#node-rows tr")).to_have_count(1)

    visitor = await _page(browser, contexts)
    await _sign_up(visitor, web, "Vera")
    await expect(connections).to_have_text("2")
    await _send_in_new_room(visitor)
    await expect(board.locator("#value-rooms")).to_have_text("1")
    await _screenshot(board, "dashboard")

    await visitor.context.close()
    await expect(connections).to_have_text("1")


async def _send_in_new_room(page: Page) -> None:
    await page.fill("#create-room input[name=name]", "busy")
    await page.click("#create-room button[type=submit]")
    await expect(page.locator("#room-title")).to_have_text("busy")
    await _send(page, "counted")


async def test_scrolling_back_through_history_and_leaving_a_room(
    web: RunningServer, browser: Browser, contexts: list[BrowserContext]
) -> None:
    # A bot has already filled a public room with 60 messages.
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as http:
        bot = await register_and_login(http, prefix="filler")
    client = await PapoClient.connect(web.url.replace("http", "ws") + "/ws", bot.access_token)
    try:
        room = (await client.request("room.create", name="archive"))["id"]
        await client.request("room.join", room=room)
        for index in range(60):
            await client.send_message(room, f"line {index:02d}")
    finally:
        await client.close()

    reader = await _page(browser, contexts)
    await _sign_up(reader, web, "Rita")
    await reader.click("#browse summary")
    await reader.click("#public-rooms button:has-text('archive')")
    await expect(reader.locator("#room-title")).to_have_text("archive")

    # Opening it shows the newest 50; scrolling back loads the rest, in order.
    await expect(reader.locator("#message-list li.message")).to_have_count(50)
    assert (await _message_texts(reader))[0] == "line 10"
    await reader.click("#older")
    await expect(reader.locator("#message-list li.message")).to_have_count(60)
    assert await _message_texts(reader) == [f"line {index:02d}" for index in range(60)]
    await expect(reader.locator("#older")).to_be_hidden()

    # Leaving takes the room off the list.
    await reader.click("#leave-room")
    await expect(reader.locator("#rooms button", has_text="archive")).to_have_count(0)
    await expect(reader.locator("#room-title")).to_have_text("Pick a room")
