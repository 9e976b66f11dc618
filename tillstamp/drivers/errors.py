"""Typed device errors: "not ready, retry later" versus "misconfigured, needs a person"."""

from __future__ import annotations

from collections.abc import Iterable


class DeviceError(Exception):
    """Base class for every error a driver raises."""


class DeviceUnavailable(DeviceError):
    """The device is not ready now (unplugged, offline, out of paper): retry later."""


class DeviceConfigError(DeviceError, ValueError):
    """The device is misconfigured (bad URL, bad option): retrying will not help."""


class UnknownSchemeError(DeviceConfigError):
    """A device URL names a scheme no opener is registered for."""

    def __init__(self, url: str, kind: str, known: Iterable[str]) -> None:
        self.url = url
        self.kind = kind
        self.known = sorted(known)
        super().__init__(
            f"unknown {kind} URL scheme in {url!r}; known schemes: {', '.join(self.known)}"
        )
