"""Application backends sign their own JWTs; papo verifies them with pinned keys."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from papo.domains.accounts.issuers import IssuerConfigError, load_trusted_issuers
from papo.server.app import create_app
from papo.server.config import ConfigError, Settings
from tests.conftest import http_to

SHOP_SECRET = "s" * 40
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def issuers_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SHOP_JWT_SECRET", SHOP_SECRET)
    pem = tmp_path / "crm.pem"
    pem.write_bytes(_public_pem(rsa_key))
    jwk = orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [{**jwk, "kid": "ec-1", "alg": "ES256"}]}))
    return orjson.dumps(
        [
            {
                "issuer": "https://shop.example",
                "algorithm": "HS256",
                "secret_env": "SHOP_JWT_SECRET",
                "audience": "papo",
            },
            {
                "issuer": "https://crm.example",
                "algorithm": "RS256",
                "public_key_file": str(pem),
                "role": "agent",
            },
            {"issuer": "https://sso.example", "jwks_file": str(jwks)},
        ]
    ).decode()


@pytest.fixture
async def issuer_http(
    base_settings: Settings, issuers_config: str
) -> AsyncIterator[httpx.AsyncClient]:
    auth = dataclasses.replace(base_settings.auth, trusted_issuers=issuers_config)
    settings = dataclasses.replace(base_settings, auth=auth)
    async with http_to(settings) as client:
        yield client


def _claims(issuer: str, subject: str, **extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"iss": issuer, "sub": subject, "iat": now, "exp": now + 300, **extra}


async def _me(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get("/api/auth/me", headers={"authorization": f"Bearer {token}"})


async def test_each_key_kind_maps_subjects_to_papo_users(issuer_http: httpx.AsyncClient) -> None:
    stamp = str(time.time_ns())
    shop = jwt.encode(
        _claims("https://shop.example", f"cust-{stamp}", aud="papo", name="Shop Customer"),
        SHOP_SECRET,
        algorithm="HS256",
    )
    crm = jwt.encode(_claims("https://crm.example", f"agent-{stamp}"), rsa_key, algorithm="RS256")
    sso = jwt.encode(
        _claims("https://sso.example", f"sso-{stamp}"),
        ec_key,
        algorithm="ES256",
        headers={"kid": "ec-1"},
    )
    first = await _me(issuer_http, shop)
    assert first.status_code == 200, first.text
    assert first.json()["display_name"] == "Shop Customer"
    assert first.json()["role"] == "customer"
    again = await _me(issuer_http, shop)
    assert again.json()["id"] == first.json()["id"], "first sight creates, later sights map"

    agent = await _me(issuer_http, crm)
    assert agent.status_code == 200, agent.text
    assert agent.json()["role"] == "agent"
    assert (await _me(issuer_http, sso)).status_code == 200


async def test_algorithm_confusion_is_refused(issuer_http: httpx.AsyncClient) -> None:
    # The classic attack: sign HS256 with the issuer's *public* key as the HMAC secret.
    public_pem = _public_pem(rsa_key)
    header = {"alg": "HS256", "typ": "JWT"}
    signing = (
        jwt.utils.base64url_encode(orjson.dumps(header))
        + b"."
        + jwt.utils.base64url_encode(orjson.dumps(_claims("https://crm.example", "x")))
    )
    import hashlib
    import hmac

    signature = jwt.utils.base64url_encode(hmac.new(public_pem, signing, hashlib.sha256).digest())
    forged = (signing + b"." + signature).decode()
    response = await _me(issuer_http, forged)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_invalid"


async def test_alg_none_from_a_trusted_issuer_is_refused(issuer_http: httpx.AsyncClient) -> None:
    unsigned = jwt.encode(_claims("https://shop.example", "u", aud="papo"), "", algorithm="none")
    assert (await _me(issuer_http, unsigned)).status_code == 401


async def test_wrong_audience_or_expiry_is_refused(issuer_http: httpx.AsyncClient) -> None:
    wrong_audience = jwt.encode(
        _claims("https://shop.example", "u", aud="someone-else"), SHOP_SECRET, algorithm="HS256"
    )
    assert (await _me(issuer_http, wrong_audience)).status_code == 401
    expired = jwt.encode(
        {**_claims("https://shop.example", "u", aud="papo"), "exp": int(time.time()) - 600},
        SHOP_SECRET,
        algorithm="HS256",
    )
    response = await _me(issuer_http, expired)
    assert response.json()["error"]["code"] == "token_expired"
    wrong_key = jwt.encode(
        _claims("https://sso.example", "u"),
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": "ec-1"},
    )
    assert (await _me(issuer_http, wrong_key)).status_code == 401


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ('[{"issuer": "a", "algorithm": "HS512", "secret_env": "X"}]', "algorithm must be"),
        ('[{"issuer": "a", "algorithm": "HS256", "secret_env": "UNSET_VAR"}]', "UNSET_VAR"),
        ('[{"issuer": "a", "algorithm": "RS256", "public_key_file": "/nope.pem"}]', "/nope.pem"),
        ('[{"algorithm": "RS256"}]', "'issuer' is required"),
        ('[{"issuer": "a", "algorithm": "HS256", "secret_env": "S", "role": "admin"}]', "admin"),
        ("{}", "a JSON list"),
        ("[not json", "not valid JSON"),
    ],
)
def test_bad_issuer_configs_say_what_is_wrong(config: str, problem: str) -> None:
    with pytest.raises(IssuerConfigError, match=problem):
        load_trusted_issuers(config, {"S": "s" * 40})


def test_a_bad_issuer_config_stops_start_up(base_settings: Settings) -> None:
    auth = dataclasses.replace(base_settings.auth, trusted_issuers='[{"issuer": 1}]')
    with pytest.raises(ConfigError, match="PAPO_TRUSTED_ISSUERS"):
        create_app(dataclasses.replace(base_settings, auth=auth))
