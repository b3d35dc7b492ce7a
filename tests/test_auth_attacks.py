"""Forged, expired, tampered and misused credentials are all refused."""

from __future__ import annotations

import base64
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import jwt
import orjson
import pytest

from papo.domains.accounts.tokens import peek
from papo.protocol.errors import ErrorCode, PapoError
from papo.server.config import Settings
from tests.conftest import TEST_JWT_SECRET, Session, http_to, register_and_login


def _claims(session: Session, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "papo",
        "sub": session.user_id,
        "role": "customer",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    claims.update(changes)
    return claims


async def _me(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get("/api/auth/me", headers={"authorization": f"Bearer {token}"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


async def test_alg_none_is_refused(http: httpx.AsyncClient, customer: Session) -> None:
    header = _b64(orjson.dumps({"alg": "none", "typ": "JWT", "kid": "k1"}))
    payload = _b64(orjson.dumps(_claims(customer, role="admin")))
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        response = await _me(http, token)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "token_invalid"


async def test_a_token_signed_with_the_wrong_key_is_refused(
    http: httpx.AsyncClient, customer: Session
) -> None:
    forged = jwt.encode(_claims(customer), "x" * 48, algorithm="HS256", headers={"kid": "k1"})
    response = await _me(http, forged)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_invalid"


async def test_an_unknown_key_id_is_refused(http: httpx.AsyncClient, customer: Session) -> None:
    token = jwt.encode(
        _claims(customer), TEST_JWT_SECRET, algorithm="HS256", headers={"kid": "retired"}
    )
    response = await _me(http, token)
    assert response.status_code == 401
    assert "unknown key" in response.json()["error"]["message"]


async def test_an_expired_token_is_refused(http: httpx.AsyncClient, customer: Session) -> None:
    past = int(time.time()) - 3600
    token = jwt.encode(
        _claims(customer, iat=past - 900, exp=past),
        TEST_JWT_SECRET,
        algorithm="HS256",
        headers={"kid": "k1"},
    )
    response = await _me(http, token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"


async def test_a_tampered_payload_is_refused(http: httpx.AsyncClient, customer: Session) -> None:
    header, _, signature = customer.access_token.split(".")
    evil = _b64(orjson.dumps(_claims(customer, role="admin")))
    response = await _me(http, f"{header}.{evil}.{signature}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_invalid"


async def test_a_token_missing_required_claims_is_refused(
    http: httpx.AsyncClient, customer: Session
) -> None:
    claims = _claims(customer)
    del claims["jti"]
    token = jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256", headers={"kid": "k1"})
    assert (await _me(http, token)).status_code == 401


async def test_garbage_is_not_a_token(http: httpx.AsyncClient) -> None:
    header = _b64(orjson.dumps({"alg": "HS256", "kid": "k1"}))
    claims = _b64(orjson.dumps({"iss": "papo", "sub": str(uuid.uuid4())}))
    shapes = [
        "garbage",
        "a.b.c",
        "papo_bot_made-up",
        f"{header}.{claims}",  # no signature part
        f"{header}.{claims}.sig.extra",
        f"{header}.{_b64(b'[1, 2]')}.sig",  # claims that are not an object
        f"{_b64(b'null')}.{claims}.sig",  # a header that is not an object
        f"{header}.{_b64(b'{not json')}.sig",
        f"{header}.%%%.sig",  # not base64url
    ]
    for token in shapes:
        response = await _me(http, token)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "token_invalid"


def test_a_token_that_is_not_ascii_is_not_a_jwt() -> None:
    """Headers reach papo as Latin-1 and first frames as any Unicode (HTTP clients
    refuse to send these, so the parse is asked directly)."""
    with pytest.raises(PapoError) as refused:
        peek("e30.\u00e9\u00e9.sig")
    assert refused.value.code is ErrorCode.TOKEN_INVALID


async def test_a_token_from_an_untrusted_issuer_is_refused(
    http: httpx.AsyncClient, customer: Session
) -> None:
    token = jwt.encode(_claims(customer, iss="https://evil.example"), "y" * 40, algorithm="HS256")
    response = await _me(http, token)
    assert response.status_code == 401
    assert "not trusted" in response.json()["error"]["message"]


async def test_a_disabled_users_valid_access_token_stops_working_at_once(
    http: httpx.AsyncClient, admin: Session
) -> None:
    victim = await register_and_login(http, prefix="victim")
    assert (await _me(http, victim.access_token)).status_code == 200
    patched = await http.patch(
        f"/api/users/{victim.user_id}", json={"disabled": True}, headers=admin.headers
    )
    assert patched.status_code == 200
    assert patched.json()["disabled"] is True
    response = await _me(http, victim.access_token)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "account_disabled"
    refresh = await http.post("/api/auth/refresh", json={"refresh_token": victim.refresh_token})
    assert refresh.status_code == 401
    login = await http.post(
        "/api/auth/login", json={"email": victim.email, "password": victim.password}
    )
    assert login.status_code == 403
    assert login.json()["error"]["code"] == "account_disabled"


async def test_a_customer_cannot_call_admin_endpoints(
    http: httpx.AsyncClient, customer: Session
) -> None:
    listing = await http.get("/api/users", headers=customer.headers)
    assert listing.status_code == 403
    assert listing.json()["error"]["code"] == "forbidden"
    promote = await http.patch(
        f"/api/users/{customer.user_id}", json={"role": "admin"}, headers=customer.headers
    )
    assert promote.status_code == 403
    bot = await http.post("/api/bots", json={"display_name": "Mine"}, headers=customer.headers)
    assert bot.status_code == 403
    me = await _me(http, customer.access_token)
    assert me.json()["role"] == "customer"


@pytest.fixture
async def rotated_http(base_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A node that signs with a new key but still accepts the old one."""
    auth = dataclasses.replace(
        base_settings.auth,
        jwt_secret="n" * 48,
        jwt_key_id="k2",
        previous_jwt_secrets={"k1": TEST_JWT_SECRET},
    )
    settings = dataclasses.replace(base_settings, auth=auth)
    async with http_to(settings) as client:
        yield client


async def test_secrets_rotate_without_logging_anybody_out(
    http: httpx.AsyncClient, rotated_http: httpx.AsyncClient, customer: Session
) -> None:
    old_token_on_new_node = await _me(rotated_http, customer.access_token)
    assert old_token_on_new_node.status_code == 200
    login = await rotated_http.post(
        "/api/auth/login", json={"email": customer.email, "password": customer.password}
    )
    new_token = login.json()["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == "k2"
    assert (await _me(rotated_http, new_token)).status_code == 200
    assert (await _me(http, new_token)).status_code == 401  # the old node lacks k2
