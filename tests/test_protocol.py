"""The contract, sans I/O: the registry, decoding, and documentation that cannot drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from papo.protocol import frames as f
from papo.protocol.errors import ErrorCode, PapoError
from papo.protocol.registry import (
    DuplicateFrameType,
    Registry,
    RegistryError,
    RegistryFrozen,
    UnknownFrameType,
)
from papo.server import contract

DOCS = Path(__file__).parents[1] / "docs"


async def _noop(context: Any, frame: Any) -> Any:
    return None


def _registry() -> Registry[Any]:
    registry: Registry[Any] = Registry()
    registry.register(f.Ping, _noop, summary="ping")
    registry.register(f.MessageSend, _noop, summary="send")
    registry.freeze()
    return registry


def test_duplicate_registration_is_a_named_error() -> None:
    registry: Registry[Any] = Registry()
    registry.register(f.Ping, _noop, summary="ping")
    with pytest.raises(DuplicateFrameType, match="ping"):
        registry.register(f.Ping, _noop, summary="again")


def test_unknown_types_and_late_registration_are_named_errors() -> None:
    registry = _registry()
    with pytest.raises(UnknownFrameType):
        registry.spec("teleport")
    with pytest.raises(RegistryFrozen):
        registry.register(f.Typing, _noop, summary="late")
    with pytest.raises(RegistryError):
        Registry[Any]().freeze()


def test_frames_decode_in_one_pass_with_field_paths() -> None:
    registry = _registry()
    frame = registry.decode(
        b'{"type":"message.send","id":3,"room":"r1","text":"hi","client_id":"c"}'
    )
    assert isinstance(frame, f.MessageSend)
    assert (frame.id, frame.room, frame.text) == (3, "r1", "hi")
    cases = {
        b'{"type":"nope"}': (ErrorCode.UNKNOWN_TYPE, "type"),
        b'{"type":"ping","x":1}': (ErrorCode.VALIDATION_FAILED, "x"),
        b'{"type":"message.send","room":"r","text":"","client_id":"c"}': (
            ErrorCode.VALIDATION_FAILED,
            "text",
        ),
        b"[]": (ErrorCode.VALIDATION_FAILED, None),
        b"{": (ErrorCode.INVALID_JSON, None),
    }
    for raw, (code, field) in cases.items():
        with pytest.raises(PapoError) as caught:
            registry.decode(raw)
        assert caught.value.code is code, raw
        assert caught.value.field == field, raw


def test_events_never_carry_a_request_id() -> None:
    for event in f.SERVER_EVENTS:
        assert "id" not in event.__struct_fields__, event.__name__


def test_one_encoding_per_event() -> None:
    event = f.MessageEvent(room="r", seq=1, ts=1.0, sender=f.UserRef(id="u", name="U"), text="hi")
    assert msgspec.json.decode(msgspec.json.encode(event))["type"] == "message"


def test_the_committed_protocol_docs_match_the_definitions() -> None:
    stale = contract.stale(DOCS)
    assert stale == [], f"run `papo protocol` to regenerate {stale}"


def test_every_registered_frame_is_documented() -> None:
    text = (DOCS / "protocol.md").read_text()
    for name in contract.documents():
        assert (DOCS / name).exists()
    registry = contract.build_realtime_registry()
    for spec in registry:
        assert f"### `{spec.frame_type}`" in text
    for code in ErrorCode:
        assert f"`{code.value}`" in text


def test_the_cli_checks_drift(tmp_path: Path) -> None:
    check = [
        sys.executable,
        "-m",
        "papo.server.cli",
        "protocol",
        "--docs",
        str(tmp_path),
        "--check",
    ]
    assert subprocess.run(check, capture_output=True, check=False, timeout=60).returncode == 1
    write = [sys.executable, "-m", "papo.server.cli", "protocol", "--docs", str(tmp_path)]
    assert subprocess.run(write, capture_output=True, check=False, timeout=60).returncode == 0
    assert subprocess.run(check, capture_output=True, check=False, timeout=60).returncode == 0
