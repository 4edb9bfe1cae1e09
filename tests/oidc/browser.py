"""A scripted browser for the test provider's pages: aiohttp with a cookie jar, filling in the HTML forms it
finds.

It does what a person does at the provider: open the login link, sign in, press Continue on the consent page,
press pyheadscale's confirmation button, and land on whatever page pyheadscale shows at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import aiohttp


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(values.get("action", ""), values.get("method", "get").lower()))
        elif tag == "input" and self.forms and values.get("name"):
            self.forms[-1].fields[values["name"]] = values.get("value", "")


def forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


@dataclass
class Page:
    status: int
    url: str
    text: str
    # Every URL the browser was sent through on the way to this page (redirects included).
    trail: list[str]
    headers: dict[str, str] = field(default_factory=dict)


class Browser:
    """One browser profile: its own cookies, for the provider and pyheadscale alike."""

    def __init__(self) -> None:
        # unsafe: keep cookies for IP-address hosts (everything here is on 127.0.0.1).
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.session.close()

    async def _load(
        self,
        method: str,
        url: str,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Page:
        async with self.session.request(
            method, url, data=data, headers=headers, allow_redirects=True
        ) as response:
            text = await response.text()
            trail = [str(r.url) for r in response.history] + [str(response.url)]
            return Page(response.status, str(response.url), text, trail, dict(response.headers))

    async def get(self, url: str) -> Page:
        return await self._load("GET", url)

    async def first_redirect(self, url: str) -> str:
        """Where `url` redirects to, without following (sets the cookies it sends)."""
        async with self.session.get(url, allow_redirects=False) as response:
            assert response.status in (302, 303), (response.status, await response.text())
            return response.headers["Location"]

    async def log_in(
        self, url: str, username: str, password: str | None = None, *, confirm: bool = True
    ) -> Page:
        """Open `url` and get through the provider's sign-in and consent pages and, with `confirm`,
        pyheadscale's confirmation page; the page it ends on."""
        page = await self.get(url)
        trail = list(page.trail)
        for _ in range(4):
            found = forms(page.text)
            if "/interaction/" not in page.url or not found:
                break
            form = found[0]
            data = dict(form.fields)
            if "login" in data or "password" in data:
                data |= {"login": username, "password": password or f"{username}-password"}
            page = await self._load("POST", urljoin(page.url, form.action), data)
            trail += page.trail
        if confirm and confirmation_form(page) is not None:
            page = await self.confirm(page)
            trail += page.trail
        page.trail = trail
        return page

    async def confirm(self, page: Page, *, headers: dict[str, str] | None = None, **changes: str) -> Page:
        """Press the button of pyheadscale's confirmation page (its form fields changed by `changes`)."""
        form = confirmation_form(page)
        assert form is not None, page.text
        return await self._load("POST", urljoin(page.url, form.action), form.fields | changes, headers)


def confirmation_form(page: Page) -> Form | None:
    """The form of pyheadscale's "Confirm the machine" page, if that is the page."""
    if "Confirm the machine" not in page.text:
        return None
    return next((f for f in forms(page.text) if f.action.endswith("/oidc/confirm")), None)
