"""Reading vendor JSON strictly where it matters and leniently elsewhere.

``Payload(vendor, endpoint, data)`` wraps a decoded body; ``field(path)`` and friends raise
``MalformedPayload`` naming vendor, endpoint and field (``data[3].results[0].amount.value``)
when a required field is missing or has the wrong type. Unknown fields are ignored.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from providers.connectors.base import MalformedPayload

_MISSING = object()


class Payload:
    def __init__(self, *, vendor: builtins.str, endpoint: builtins.str, data: Any, path: builtins.str = "") -> None:
        self.vendor = vendor
        self.endpoint = endpoint
        self.data = data
        self.path = path

    def _fail(self, path: builtins.str, problem: builtins.str) -> MalformedPayload:
        return MalformedPayload(
            f"{self.vendor} {self.endpoint} returned an unexpected payload: field '{path or '(body)'}' {problem}.",
            vendor=self.vendor,
            endpoint=self.endpoint,
        )

    def _child_path(self, key: builtins.str | builtins.int) -> builtins.str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: builtins.str, default: Any = _MISSING) -> Any:
        """The raw value at ``key``; missing is an error unless a default is given."""
        if not isinstance(self.data, dict):
            raise self._fail(self.path, f"should be an object, got {_kind(self.data)}")
        if key not in self.data:
            if default is _MISSING:
                raise self._fail(self._child_path(key), "is missing")
            return default
        return self.data[key]

    def obj(self, key: builtins.str, *, optional: builtins.bool = False) -> Payload | None:
        value = self.get(key, None if optional else _MISSING)
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            raise self._fail(self._child_path(key), f"should be an object, got {_kind(value)}")
        return Payload(vendor=self.vendor, endpoint=self.endpoint, data=value, path=self._child_path(key))

    def list(self, key: builtins.str) -> builtins.list[Payload]:
        value = self.get(key)
        if not isinstance(value, list):
            raise self._fail(self._child_path(key), f"should be a list, got {_kind(value)}")
        base = self._child_path(key)
        return [
            Payload(vendor=self.vendor, endpoint=self.endpoint, data=item, path=f"{base}[{i}]")
            for i, item in enumerate(value)
        ]

    def str(self, key: builtins.str, *, optional: builtins.bool = False) -> builtins.str | None:
        value = self.get(key, None if optional else _MISSING)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self._fail(self._child_path(key), f"should be a string, got {_kind(value)}")
        return value

    def int(self, key: builtins.str, *, optional: builtins.bool = False) -> builtins.int | None:
        value = self.get(key, None if optional else _MISSING)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(self._child_path(key), f"should be an integer, got {_kind(value)}")
        return value

    def bool(self, key: builtins.str, *, optional: builtins.bool = False) -> builtins.bool | None:
        value = self.get(key, None if optional else _MISSING)
        if value is None and optional:
            return None
        if not isinstance(value, bool):
            raise self._fail(self._child_path(key), f"should be true or false, got {_kind(value)}")
        return value

    def decimal(self, key: builtins.str, *, optional: builtins.bool = False) -> Decimal | None:
        """A number given as a JSON number or a numeric string, as an exact Decimal."""
        value = self.get(key, None if optional else _MISSING)
        if value is None and optional:
            return None
        return self.as_decimal(value, self._child_path(key))

    def as_decimal(self, value: Any, path: builtins.str) -> Decimal:
        # The HTTP client decodes JSON floats as strings, so 0.06 arrives as "0.06", exactly.
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self._fail(path, f"should be a number, got {_kind(value)}")
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation:
            raise self._fail(path, f"should be a number, got {str(value)[:40]!r}") from None
        if not result.is_finite():
            raise self._fail(path, "should be a finite number")
        return result

    def unix_time(self, key: builtins.str) -> datetime:
        seconds = self.int(key)
        assert seconds is not None
        return datetime.fromtimestamp(seconds, tz=UTC)

    def iso_time(self, key: builtins.str) -> datetime:
        text = self.str(key)
        assert text is not None
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise self._fail(self._child_path(key), f"should be an RFC 3339 time, got {text[:40]!r}") from None
        if parsed.tzinfo is None:
            raise self._fail(self._child_path(key), "should carry a time zone")
        return parsed.astimezone(UTC)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)
