"""The WebSocket auth hook: a bearer header, ?token= or a first frame become an identity."""

from __future__ import annotations

import pytest

from papo.domains.accounts.model import Role
from papo.domains.accounts.service import AccountService
from papo.protocol.errors import ErrorCode, PapoError
from papo.server.auth import identify_websocket, token_from_handshake
from papo.server.runner import RunningServer
from tests.conftest import Session


@pytest.fixture
def accounts(server: RunningServer) -> AccountService:
    service: AccountService = server.app.state.papo.accounts
    return service


async def test_bearer_header_query_and_first_frame_all_identify(
    accounts: AccountService, customer: Session
) -> None:
    by_header = await identify_websocket(
        accounts, {"authorization": f"Bearer {customer.access_token}"}, {}
    )
    by_query = await identify_websocket(accounts, {}, {"token": customer.access_token})
    by_frame = await identify_websocket(
        accounts, {}, {}, {"type": "auth", "token": customer.access_token}
    )
    for identity in (by_header, by_query, by_frame):
        assert str(identity.user_id) == customer.user_id
        assert identity.role is Role.CUSTOMER
        assert identity.via == "access"
        assert identity.expires_at is not None


async def test_missing_or_malformed_credentials_are_refused(
    accounts: AccountService, customer: Session
) -> None:
    with pytest.raises(PapoError) as nothing:
        await identify_websocket(accounts, {}, {})
    assert nothing.value.code is ErrorCode.TOKEN_MISSING
    for frame in ({"type": "join"}, {"type": "auth"}, {"type": "auth", "token": 5}):
        with pytest.raises(PapoError) as bad_frame:
            await identify_websocket(accounts, {}, {}, frame)
        assert bad_frame.value.code is ErrorCode.TOKEN_MISSING
        assert bad_frame.value.field == "token"
    with pytest.raises(PapoError) as forged:
        await identify_websocket(accounts, {}, {"token": customer.access_token + "x"})
    assert forged.value.code is ErrorCode.TOKEN_INVALID


def test_the_header_wins_over_the_query() -> None:
    assert token_from_handshake({"authorization": "Bearer a"}, {"token": "b"}) == "a"
    assert token_from_handshake({"authorization": "Basic a"}, {"token": "b"}) == "b"
    assert token_from_handshake({}, {"token": "  "}) is None
