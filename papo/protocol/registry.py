"""The frame registry: every client frame type, its schema, its handler and who may call it.

The core and each domain register into one ``Registry`` instance built at start-up (no
module globals). Freezing it builds one msgspec decoder for the tagged union of every
registered frame, so a frame is parsed and validated in a single pass.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, Union

import msgspec

from papo.protocol.codec import validation_failure
from papo.protocol.errors import ErrorCode, PapoError
from papo.protocol.frames import Request

ContextT = TypeVar("ContextT")
Handler = Callable[[ContextT, Any], Awaitable[Any]]


class Later:
    """What a ``now`` handler answers when the frame needs to wait for something."""

    __slots__ = ()


LATER = Later()
# Answers the frame before returning, or says ``LATER`` having changed nothing; the
# frame then goes to the handler.
NowHandler = Callable[[ContextT, Any], Any]

_INVALID_TAG = re.compile(r"^Invalid value '(?P<tag>.*)' - at `\$\.type`$")


class RegistryError(Exception):
    """Base of the registry's own errors (programming mistakes, caught at start-up)."""


class DuplicateFrameType(RegistryError):
    pass


class UnknownFrameType(RegistryError):
    pass


class RegistryFrozen(RegistryError):
    pass


@dataclass(frozen=True)
class FrameSpec(Generic[ContextT]):
    frame_type: str
    schema: type[Request]
    handler: Handler[ContextT]
    roles: frozenset[str] | None  # None: any authenticated user
    summary: str
    reply: Any = None  # the type of the ``data`` of a successful reply, for the docs
    domain: str = "chat"
    # The hot frames' synchronous path: handled as they are read, with no task.
    now: NowHandler[ContextT] | None = None


def frame_tag(schema: type[Request]) -> str:
    tag = schema.__struct_config__.tag
    if not isinstance(tag, str):
        raise RegistryError(f"{schema.__name__} has no string tag")
    return tag


class Registry(Generic[ContextT]):
    def __init__(self) -> None:
        self._specs: dict[str, FrameSpec[ContextT]] = {}
        self._decoder: msgspec.json.Decoder[Any] | None = None

    def register(
        self,
        schema: type[Request],
        handler: Handler[ContextT],
        *,
        summary: str,
        roles: frozenset[str] | None = None,
        reply: Any = None,
        domain: str = "chat",
        now: NowHandler[ContextT] | None = None,
    ) -> None:
        if self._decoder is not None:
            raise RegistryFrozen("frames must be registered before the registry is frozen")
        frame_type = frame_tag(schema)
        if frame_type in self._specs:
            raise DuplicateFrameType(f"frame type {frame_type!r} is registered twice")
        self._specs[frame_type] = FrameSpec(
            frame_type, schema, handler, roles, summary, reply, domain, now
        )

    def spec(self, frame_type: str) -> FrameSpec[ContextT]:
        try:
            return self._specs[frame_type]
        except KeyError:
            raise UnknownFrameType(frame_type) from None

    def __iter__(self) -> Iterator[FrameSpec[ContextT]]:
        return iter(sorted(self._specs.values(), key=lambda spec: spec.frame_type))

    def __contains__(self, frame_type: object) -> bool:
        return frame_type in self._specs

    def freeze(self) -> None:
        schemas = tuple(spec.schema for spec in self._specs.values())
        if not schemas:
            raise RegistryError("no frame types registered")
        self._decoder = msgspec.json.Decoder(Union[schemas])  # noqa: UP007 - runtime union

    def decode(self, data: bytes | str) -> Request:
        """Parse and validate one frame; failures are ``PapoError``s a client can act on."""
        if self._decoder is None:
            raise RegistryError("freeze the registry before decoding")
        try:
            frame: Request = self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            if match := _INVALID_TAG.match(str(exc)):
                raise PapoError(
                    ErrorCode.UNKNOWN_TYPE,
                    f"unknown frame type {match['tag']!r}",
                    field="type",
                ) from None
            raise validation_failure(exc) from None
        except msgspec.DecodeError as exc:
            raise PapoError(ErrorCode.INVALID_JSON, f"the frame is not valid JSON: {exc}") from None
        return frame
