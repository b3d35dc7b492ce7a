"""Register, log in, refresh, log out and ask who I am, over real HTTP."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from papo.server.config import Settings
from tests.conftest import Session, register_and_login, unique_email


async def test_register_creates_a_customer_with_a_normalised_email(
    http: httpx.AsyncClient,
) -> None:
    email = unique_email("Mixed").replace("mixed", "MiXeD")
    response = await http.post(
        "/api/auth/register",
        json={"email": email, "password": "a long passphrase", "display_name": "  Ana   Lima "},
    )
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["email"] == email.lower()
    assert user["display_name"] == "Ana Lima"
    assert user["role"] == "customer"
    assert user["disabled"] is False
    assert "password" not in response.text


async def test_an_email_is_taken_whatever_its_case(http: httpx.AsyncClient) -> None:
    email = unique_email()
    body = {"email": email, "password": "a long passphrase", "display_name": "One"}
    assert (await http.post("/api/auth/register", json=body)).status_code == 201
    again = await http.post("/api/auth/register", json={**body, "email": email.upper()})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "email_taken"
    assert again.json()["error"]["field"] == "email"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (
            {"email": "not-an-email", "password": "a long passphrase", "display_name": "X"},
            422,
            "validation_failed",
            "email",
        ),
        (
            {"email": "{email}", "password": "short", "display_name": "X"},
            422,
            "validation_failed",
            "password",
        ),
        (
            {"email": "{email}", "password": "x" * 129, "display_name": "X"},
            422,
            "validation_failed",
            "password",
        ),
        (
            {"email": "{email}", "password": "{email}", "display_name": "X"},
            422,
            "validation_failed",
            "password",
        ),
        (
            {"email": "{email}", "password": "a long passphrase", "display_name": "   "},
            422,
            "validation_failed",
            "display_name",
        ),
        (
            {"email": "{email}", "password": "a long passphrase", "display_name": "a\\u0000b"},
            422,
            "validation_failed",
            "display_name",
        ),
        (
            {"email": "{email}", "password": "a long passphrase"},
            422,
            "validation_failed",
            "display_name",
        ),
        (
            {"email": "{email}", "password": 12345678901, "display_name": "X"},
            422,
            "validation_failed",
            "password",
        ),
        (
            {
                "email": "{email}",
                "password": "a long passphrase",
                "display_name": "X",
                "role": "admin",
            },
            422,
            "validation_failed",
            "role",
        ),
    ],
)
async def test_bad_registrations_name_the_field_and_store_nothing(
    http: httpx.AsyncClient, body: dict[str, object], status: int, code: str, field: str
) -> None:
    email = unique_email()
    filled = {
        key: value.replace("{email}", email).encode().decode("unicode_escape")
        if isinstance(value, str)
        else value
        for key, value in body.items()
    }
    response = await http.post("/api/auth/register", json=filled)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["field"] == field
    assert error["message"]
    login = await http.post(
        "/api/auth/login", json={"email": email, "password": "a long passphrase"}
    )
    assert login.status_code == 401


async def test_malformed_json_is_a_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/auth/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


async def test_an_oversized_body_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/auth/login", content=b'{"email": "' + b"a" * 70_000 + b'"}')
    assert response.status_code == 422
    assert "at most" in response.json()["error"]["message"]


async def test_login_returns_tokens_that_identify_the_caller(http: httpx.AsyncClient) -> None:
    session = await register_and_login(http)
    me = await http.get("/api/auth/me", headers=session.headers)
    assert me.status_code == 200
    assert me.json()["id"] == session.user_id
    assert me.json()["email"] == session.email


async def test_login_login_answers_the_same_for_unknown_email_and_wrong_password(
    http: httpx.AsyncClient, customer: Session
) -> None:
    wrong_password = await http.post(
        "/api/auth/login", json={"email": customer.email, "password": "not the password"}
    )
    unknown_email = await http.post(
        "/api/auth/login", json={"email": unique_email(), "password": "not the password"}
    )
    malformed_email = await http.post(
        "/api/auth/login", json={"email": "nobody", "password": "not the password"}
    )
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.json() == unknown_email.json() == malformed_email.json()
    assert wrong_password.json()["error"]["code"] == "invalid_credentials"


async def test_refresh_rotates_and_reuse_revokes_the_family(
    http: httpx.AsyncClient, customer: Session
) -> None:
    first = await http.post("/api/auth/refresh", json={"refresh_token": customer.refresh_token})
    assert first.status_code == 200, first.text
    rotated = first.json()["refresh_token"]
    assert rotated != customer.refresh_token
    me = await http.get(
        "/api/auth/me", headers={"authorization": f"Bearer {first.json()['access_token']}"}
    )
    assert me.status_code == 200

    replay = await http.post("/api/auth/refresh", json={"refresh_token": customer.refresh_token})
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "refresh_token_reused"

    # The thief's replay ended the whole login, including the legitimate newest token.
    after = await http.post("/api/auth/refresh", json={"refresh_token": rotated})
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "refresh_token_invalid"


async def test_other_logins_survive_a_revoked_family(http: httpx.AsyncClient) -> None:
    session = await register_and_login(http)
    second_login = await http.post(
        "/api/auth/login", json={"email": session.email, "password": session.password}
    )
    other_refresh = second_login.json()["refresh_token"]
    await http.post("/api/auth/refresh", json={"refresh_token": session.refresh_token})
    await http.post("/api/auth/refresh", json={"refresh_token": session.refresh_token})
    still = await http.post("/api/auth/refresh", json={"refresh_token": other_refresh})
    assert still.status_code == 200


async def test_logout_revokes_the_refresh_token(http: httpx.AsyncClient, customer: Session) -> None:
    out = await http.post("/api/auth/logout", json={"refresh_token": customer.refresh_token})
    assert out.status_code == 204
    again = await http.post("/api/auth/refresh", json={"refresh_token": customer.refresh_token})
    assert again.status_code == 401
    unknown = await http.post("/api/auth/logout", json={"refresh_token": "nope"})
    assert unknown.status_code == 401
    assert unknown.json()["error"]["code"] == "refresh_token_invalid"


async def test_an_unknown_refresh_token_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/auth/refresh", json={"refresh_token": "made-up"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "refresh_token_invalid"


async def test_refresh_tokens_are_stored_only_as_digests(
    http: httpx.AsyncClient, customer: Session, settings: Settings
) -> None:
    assert settings.urls.database
    connection = await asyncpg.connect(settings.urls.database)
    try:
        stored = await connection.fetch(
            "SELECT token_hash FROM refresh_tokens WHERE user_id = $1::uuid", customer.user_id
        )
    finally:
        await connection.close()
    assert stored
    assert all(customer.refresh_token.encode() not in bytes(row["token_hash"]) for row in stored)
    assert all(len(row["token_hash"]) == 32 for row in stored)


async def test_requests_without_a_token_are_told_how_to_authenticate(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/api/auth/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_missing"
    assert response.headers["www-authenticate"].startswith("Bearer")
    basic = await http.get("/api/auth/me", headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert basic.json()["error"]["code"] == "token_missing"
