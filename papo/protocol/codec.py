"""Decoding untrusted JSON into typed definitions, with errors that name the field.

msgspec validates while it decodes (one pass, no intermediate dicts) and generates
JSON Schema from the same ``Struct`` types, so one definition serves validation,
encoding and documentation.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from papo.protocol.errors import ErrorCode, PapoError

T = TypeVar("T")

_AT_PATH = re.compile(r"^(?P<message>.*?) - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")

encoder = msgspec.json.Encoder()


def _field_path(path: str, leaf: str | None = None) -> str:
    """``$.a.b[2]`` as msgspec reports it becomes ``a.b[2]``; ``""`` means the body."""
    cleaned = path.lstrip(".")
    if leaf:
        cleaned = f"{cleaned}.{leaf}" if cleaned else leaf
    return cleaned


def validation_failure(error: msgspec.ValidationError) -> PapoError:
    text = str(error)
    path = ""
    if match := _AT_PATH.match(text):
        text, path = match["message"], match["path"]
    if match := _MISSING.match(text):
        return PapoError(
            ErrorCode.VALIDATION_FAILED,
            f"{match['field']} is required",
            field=_field_path(path, match["field"]),
        )
    if match := _UNKNOWN.match(text):
        return PapoError(
            ErrorCode.VALIDATION_FAILED,
            f"{match['field']} is not a known field",
            field=_field_path(path, match["field"]),
        )
    return PapoError(ErrorCode.VALIDATION_FAILED, text, field=_field_path(path) or None)


def decode(data: bytes | str, into: type[T]) -> T:
    """Decode and validate; any problem becomes a ``PapoError`` naming the field."""
    try:
        return msgspec.json.decode(data, type=into)
    except msgspec.ValidationError as exc:
        raise validation_failure(exc) from None
    except msgspec.DecodeError as exc:
        raise PapoError(ErrorCode.INVALID_JSON, f"the body is not valid JSON: {exc}") from None


def convert(value: Any, into: type[T]) -> T:
    """Validate already-decoded data (query strings, nested payloads)."""
    try:
        return msgspec.convert(value, type=into, strict=False)
    except msgspec.ValidationError as exc:
        raise validation_failure(exc) from None


def encode(value: Any) -> bytes:
    return encoder.encode(value)
