"""Admins list and manage accounts; bots get named, revocable, long-lived tokens."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import Session, register_and_login


async def test_admins_page_through_users_with_a_cursor(
    http: httpx.AsyncClient, admin: Session
) -> None:
    for _ in range(3):
        await register_and_login(http, prefix="paged")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await http.get("/api/users", params=params, headers=admin.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen += [user["id"] for user in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "no user appears twice across pages"
    assert admin.user_id in seen
    assert pages >= 2


async def test_users_can_be_filtered_by_role(http: httpx.AsyncClient, admin: Session) -> None:
    response = await http.get("/api/users", params={"role": "admin"}, headers=admin.headers)
    assert response.status_code == 200
    assert {user["role"] for user in response.json()["items"]} == {"admin"}


async def test_bad_list_parameters_name_the_field(http: httpx.AsyncClient, admin: Session) -> None:
    for params, field in (
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"role": "king"}, "role"),
        ({"cursor": "!!!"}, "cursor"),
    ):
        response = await http.get("/api/users", params=params, headers=admin.headers)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["field"] == field


async def test_admins_change_roles_but_not_their_own(
    http: httpx.AsyncClient, admin: Session, customer: Session
) -> None:
    promoted = await http.patch(
        f"/api/users/{customer.user_id}", json={"role": "agent"}, headers=admin.headers
    )
    assert promoted.status_code == 200
    assert promoted.json()["role"] == "agent"
    me = await http.get("/api/auth/me", headers=customer.headers)
    assert me.json()["role"] == "agent"  # role is read per request, not from the token

    for change in ({"role": "customer"}, {"disabled": True}):
        response = await http.patch(
            f"/api/users/{admin.user_id}", json=change, headers=admin.headers
        )
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "cannot_modify_self"


async def test_patching_unknown_or_malformed_ids(http: httpx.AsyncClient, admin: Session) -> None:
    missing = await http.patch(
        f"/api/users/{uuid.uuid4()}", json={"disabled": True}, headers=admin.headers
    )
    assert missing.status_code == 404
    malformed = await http.patch(
        "/api/users/not-a-uuid", json={"disabled": True}, headers=admin.headers
    )
    assert malformed.status_code == 422
    assert malformed.json()["error"]["field"] == "id"
    bad_role = await http.patch(
        f"/api/users/{admin.user_id}", json={"role": "emperor"}, headers=admin.headers
    )
    assert bad_role.status_code == 422
    assert bad_role.json()["error"]["field"] == "role"


async def test_bots_authenticate_with_their_token_until_it_is_revoked(
    http: httpx.AsyncClient, admin: Session
) -> None:
    created = await http.post(
        "/api/bots",
        json={"display_name": "Order Bot", "token_name": "prod"},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    bot = created.json()
    token = bot["token"]
    assert token.startswith("papo_bot_")
    assert bot["bot"]["role"] == "bot"
    bot_headers = {"authorization": f"Bearer {token}"}

    me = await http.get("/api/auth/me", headers=bot_headers)
    assert me.status_code == 200
    assert me.json()["id"] == bot["bot"]["id"]

    second = await http.post(
        f"/api/bots/{bot['bot']['id']}/tokens", json={"name": "staging"}, headers=admin.headers
    )
    assert second.status_code == 201
    listing = await http.get(f"/api/bots/{bot['bot']['id']}/tokens", headers=admin.headers)
    names = {item["name"]: item for item in listing.json()["items"]}
    assert set(names) == {"prod", "staging"}
    assert names["prod"]["last_used_at"] is not None
    assert token not in listing.text

    revoked = await http.delete(f"/api/bot-tokens/{bot['details']['id']}", headers=admin.headers)
    assert revoked.status_code == 204
    after = await http.get("/api/auth/me", headers=bot_headers)
    assert after.status_code == 401
    staging = {"authorization": f"Bearer {second.json()['token']}"}
    assert (await http.get("/api/auth/me", headers=staging)).status_code == 200
    again = await http.delete(f"/api/bot-tokens/{bot['details']['id']}", headers=admin.headers)
    assert again.status_code == 404


async def test_bot_tokens_only_for_bots(
    http: httpx.AsyncClient, admin: Session, customer: Session
) -> None:
    response = await http.post(
        f"/api/bots/{customer.user_id}/tokens", json={"name": "sneaky"}, headers=admin.headers
    )
    assert response.status_code == 404
    listing = await http.get(f"/api/bots/{customer.user_id}/tokens", headers=admin.headers)
    assert listing.status_code == 404


async def test_bots_cannot_administer(http: httpx.AsyncClient, admin: Session) -> None:
    created = await http.post("/api/bots", json={"display_name": "B"}, headers=admin.headers)
    bot_headers = {"authorization": f"Bearer {created.json()['token']}"}
    assert (await http.get("/api/users", headers=bot_headers)).status_code == 403
