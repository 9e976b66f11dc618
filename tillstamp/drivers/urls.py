"""Device URL parsing shared by the camera, scanner and printer registries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from tillstamp.drivers.errors import DeviceConfigError, UnknownSchemeError

T = TypeVar("T")


@dataclass(frozen=True)
class DeviceURL:
    """A device URL split into scheme, host, port, path and query options."""

    raw: str
    scheme: str
    host: str
    port: int | None
    path: str
    options: dict[str, str] = field(default_factory=dict)

    def int_option(self, name: str, default: int) -> int:
        """Return an integer query option, raising DeviceConfigError when it is not one."""
        value = self.options.get(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise DeviceConfigError(f"{name}={value!r} is not an integer in {self.raw!r}") from None

    def float_option(self, name: str, default: float) -> float:
        """Return a float query option, raising DeviceConfigError when it is not one."""
        value = self.options.get(name)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise DeviceConfigError(f"{name}={value!r} is not a number in {self.raw!r}") from None


def parse_url(url: str) -> DeviceURL:
    """Split a device URL; a string without a scheme is not accepted here."""
    if "://" not in url:
        raise DeviceConfigError(f"{url!r} is not a device URL (expected scheme://...)")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise DeviceConfigError(f"bad port in {url!r}") from None
    return DeviceURL(
        raw=url,
        scheme=parts.scheme.lower(),
        host=parts.hostname or "",
        port=port,
        path=unquote(parts.path),
        options=dict(parse_qsl(parts.query, keep_blank_values=True)),
    )


def lookup(registry: Mapping[str, Callable[[DeviceURL], T]], url: str, kind: str) -> T:
    """Open `url` with the opener its scheme names in `registry`."""
    parsed = parse_url(url)
    opener = registry.get(parsed.scheme)
    if opener is None:
        raise UnknownSchemeError(url, kind, registry)
    return opener(parsed)
