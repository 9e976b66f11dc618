"""`hq.toml`: the channels and the messaging rules (quiet hours, frequency cap, holdout,
public URL, store zones). Secrets are never in the file: it names environment variables
(`token_env`, `app_secret_env`, ...), read when the file is loaded.

    [channels.whatsapp]
    api_base = "https://graph.facebook.com/v23.0"
    phone_number_id = "1234567890"
    token_env = "TILLSTAMP_WA_TOKEN"
    app_secret_env = "TILLSTAMP_WA_APP_SECRET"
    verify_token_env = "TILLSTAMP_WA_VERIFY_TOKEN"   # the GET hub.challenge handshake
    [channels.email]
    smtp = "smtp://127.0.0.1:2525"     # smtps://HOST:465, or starttls = true
    from = "Kopi Senja <halo@kopisenja.id>"
    user_env = "TILLSTAMP_SMTP_USER"
    password_env = "TILLSTAMP_SMTP_PASSWORD"
    [channels.sms]
    url = "https://sms.example.id/send"
    token_env = "TILLSTAMP_SMS_TOKEN"
    webhook_secret_env = "TILLSTAMP_SMS_WEBHOOK_SECRET"
    [messaging]
    quiet_hours = "21:00-08:00"
    cap = "2/7d"
    holdout = 0.1
    public_url = "https://hq.kopisenja.id"
    unsubscribe_secret_env = "TILLSTAMP_UNSUBSCRIBE_SECRET"
    [otp]                               # one-time codes of the customer's pages
    channel = "whatsapp"                # through [channels.whatsapp], or "sms"
    template = "kode_masuk"             # WhatsApp: an approved template, one body parameter
    [zones]                             # stores outside the program's zone
    MKS1 = "Asia/Makassar"
    JAY1 = "Asia/Jayapura"
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .flows import FlowError, parse_duration


class ConfigError(ValueError):
    """hq.toml is not valid (or a secret it names is not in the environment)."""


@dataclass(frozen=True)
class WhatsAppConfig:
    """WhatsApp Business Cloud API: where to post and the secrets."""

    api_base: str
    phone_number_id: str
    token: str
    app_secret: str
    verify_token: str | None = None
    timeout_s: float = 10.0


@dataclass(frozen=True)
class EmailConfig:
    """An SMTP relay."""

    host: str
    port: int
    from_addr: str
    implicit_tls: bool = False
    starttls: bool = False
    user: str | None = None
    password: str | None = None
    ca_file: str | None = None
    timeout_s: float = 10.0


@dataclass(frozen=True)
class SmsConfig:
    """An SMS HTTP gateway (request shape in docs/FLOWS.md)."""

    url: str
    token: str
    webhook_secret: str | None = None
    timeout_s: float = 10.0


@dataclass(frozen=True)
class OtpConfig:
    """How one-time codes reach a customer's phone: through a channel configured above."""

    channel: str  # "whatsapp" or "sms"
    template: str | None = None  # WhatsApp: an approved template whose one body parameter is the code
    language: str = "id"
    sender: str | None = None  # SMS: the sender name the gateway shows, if it takes one


@dataclass(frozen=True)
class QuietHours:
    """A daily window in store time when nothing is sent (may cross midnight)."""

    start: dt.time
    end: dt.time

    def contains(self, t: dt.time) -> bool:
        """Whether a local time of day falls in the window."""
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def next_end(self, local: dt.datetime) -> dt.datetime:
        """The first moment at or after `local` (aware, store time) outside the window."""
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if end <= local:
            end += dt.timedelta(days=1)
        # rebuild from the wall clock so a DST change in between keeps "08:00"
        return dt.datetime.combine(end.date(), self.end, local.tzinfo)


@dataclass(frozen=True)
class MessagingConfig:
    """Channels and rules from hq.toml."""

    whatsapp: WhatsAppConfig | None = None
    email: EmailConfig | None = None
    sms: SmsConfig | None = None
    quiet: QuietHours | None = QuietHours(dt.time(21), dt.time(8))
    cap: int = 2
    cap_window: dt.timedelta = dt.timedelta(days=7)
    holdout: float | None = None
    public_url: str = "http://127.0.0.1:8700"
    unsubscribe_secret: bytes = b""
    zones: dict[str, str] = field(default_factory=dict)
    lease: dt.timedelta = dt.timedelta(minutes=5)
    batch: int = 200
    # Sent messages recorded per transaction. 1: each on its own. More is faster; a crash then
    # leaves up to this many sent messages `unknown` (settled by the status webhooks), never resent.
    record_every: int = 1
    # Provider calls in flight per sending worker, each on its own keep-alive connection. The
    # Cloud API and SMS gateways take concurrent requests; every call still follows its own
    # committed row, so this changes speed, not what is sent.
    connections: int = 1
    otp: OtpConfig | None = None

    def channels(self) -> tuple[str, ...]:
        """The channels configured."""
        return tuple(n for n in ("whatsapp", "sms", "email") if getattr(self, n) is not None)

    def zone_of(self, store: str | None, default: str) -> str:
        """A store's time zone (hq.toml `[zones]`, else the program's)."""
        return self.zones.get(store or "", default)


def _secret(t: Mapping[str, Any], key: str, path: str, env: Mapping[str, str], required: bool = True) -> str | None:
    name = t.get(key)
    if name is None:
        if required:
            raise ConfigError(f"{path}.{key}: missing (the name of an environment variable holding the secret)")
        return None
    if not isinstance(name, str) or not re.match(r"^[A-Z_][A-Z0-9_]*$", name):
        raise ConfigError(f"{path}.{key}: expected an environment variable name, got {name!r}")
    value = env.get(name)
    if not value:
        raise ConfigError(f"{path}.{key}: environment variable {name} is not set")
    return value


def _str(t: Mapping[str, Any], key: str, path: str) -> str:
    v = t.get(key)
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{path}.{key}: expected a non-empty string")
    return v


def _check_keys(t: Any, path: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(t, dict):
        raise ConfigError(f"{path}: expected a table")
    extra = set(t) - allowed
    if extra:
        raise ConfigError(f"{path}.{min(extra)}: unknown key (allowed: {', '.join(sorted(allowed))})")
    return t


def _url(v: str, path: str, schemes: tuple[str, ...]) -> str:
    u = urlsplit(v)
    if u.scheme not in schemes or not u.hostname:
        raise ConfigError(f"{path}: expected a {' or '.join(schemes)} URL, got {v!r}")
    return v.rstrip("/")


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost")


def parse_config(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> MessagingConfig:
    """hq.toml's data as a MessagingConfig; ConfigError naming the key path."""
    env = os.environ if env is None else env
    _check_keys(data, "hq.toml", {"channels", "messaging", "zones", "otp", "hq"})
    ch = _check_keys(data.get("channels", {}), "channels", {"whatsapp", "email", "sms"})
    wa = email = sms = None
    if "whatsapp" in ch:
        p = "channels.whatsapp"
        t = _check_keys(ch["whatsapp"], p, {"api_base", "phone_number_id", "token_env", "app_secret_env",
                                            "verify_token_env", "timeout_s"})
        wa = WhatsAppConfig(_url(_str(t, "api_base", p), f"{p}.api_base", ("https", "http")),
                            _str(t, "phone_number_id", p), str(_secret(t, "token_env", p, env)),
                            str(_secret(t, "app_secret_env", p, env)),
                            _secret(t, "verify_token_env", p, env, required=False),
                            float(t.get("timeout_s", 10.0)))
    if "email" in ch:
        p = "channels.email"
        t = _check_keys(ch["email"], p, {"smtp", "from", "starttls", "user_env", "password_env", "ca_file",
                                         "timeout_s"})
        u = urlsplit(_url(_str(t, "smtp", p), f"{p}.smtp", ("smtp", "smtps")))
        starttls = bool(t.get("starttls", False))
        host = u.hostname or ""
        if u.scheme == "smtp" and not starttls and not _loopback(host):
            raise ConfigError(f"{p}.smtp: off loopback use smtps:// or starttls = true (credentials and "
                              "addresses must not cross the network in clear)")
        email = EmailConfig(host, u.port or (465 if u.scheme == "smtps" else 25), _str(t, "from", p),
                            implicit_tls=u.scheme == "smtps", starttls=starttls,
                            user=_secret(t, "user_env", p, env, required=False),
                            password=_secret(t, "password_env", p, env, required=False),
                            ca_file=t.get("ca_file"), timeout_s=float(t.get("timeout_s", 10.0)))
    if "sms" in ch:
        p = "channels.sms"
        t = _check_keys(ch["sms"], p, {"url", "token_env", "webhook_secret_env", "timeout_s"})
        sms = SmsConfig(_url(_str(t, "url", p), f"{p}.url", ("https", "http")), str(_secret(t, "token_env", p, env)),
                        _secret(t, "webhook_secret_env", p, env, required=False), float(t.get("timeout_s", 10.0)))
    m = _check_keys(data.get("messaging", {}), "messaging",
                    {"quiet_hours", "cap", "holdout", "public_url", "unsubscribe_secret_env", "lease", "batch",
                     "record_every", "connections"})
    quiet: QuietHours | None = QuietHours(dt.time(21), dt.time(8))
    if "quiet_hours" in m:
        q = m["quiet_hours"]
        mq = re.match(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$", q) if isinstance(q, str) else None
        if q == "" or q is False:
            quiet = None
        elif mq is None or int(mq[1]) > 23 or int(mq[3]) > 23 or int(mq[2]) > 59 or int(mq[4]) > 59:
            raise ConfigError(f"messaging.quiet_hours: expected 'HH:MM-HH:MM' store time, got {q!r}")
        else:
            quiet = QuietHours(dt.time(int(mq[1]), int(mq[2])), dt.time(int(mq[3]), int(mq[4])))
    cap, window = 2, dt.timedelta(days=7)
    if "cap" in m:
        mc = re.match(r"^(\d{1,3})/(\S+)$", m["cap"]) if isinstance(m["cap"], str) else None
        if mc is None:
            raise ConfigError(f"messaging.cap: expected 'N/DURATION' like '2/7d', got {m['cap']!r}")
        try:
            cap, window = int(mc[1]), parse_duration(mc[2], "messaging.cap")
        except FlowError as e:
            raise ConfigError(str(e)) from None
    holdout = m.get("holdout")
    if holdout is not None and (isinstance(holdout, bool) or not isinstance(holdout, int | float)
                                or not 0 <= holdout <= 0.5):
        raise ConfigError(f"messaging.holdout: expected a share from 0 to 0.5, got {holdout!r}")
    public_url = _url(m.get("public_url", "http://127.0.0.1:8700"), "messaging.public_url", ("https", "http"))
    secret = _secret(m, "unsubscribe_secret_env", "messaging", env, required=False)
    if email is not None and not secret:
        raise ConfigError("messaging.unsubscribe_secret_env: required with channels.email "
                          "(it signs the one-click unsubscribe links)")
    zones = dict(_check_keys(data.get("zones", {}), "zones", set(data.get("zones", {}))))
    for store, zone in zones.items():
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"zones.{store}: unknown time zone {zone!r}") from None
    lease = dt.timedelta(minutes=5)
    if "lease" in m:
        try:
            lease = parse_duration(m["lease"], "messaging.lease")
        except FlowError as e:
            raise ConfigError(str(e)) from None
    return MessagingConfig(wa, email, sms, quiet, cap, window, None if holdout is None else float(holdout),
                           public_url, (secret or "").encode(), {str(k): str(v) for k, v in zones.items()},
                           lease, _count(m, "batch", 200), _count(m, "record_every", 1),
                           _count(m, "connections", 1, most=64), _otp(data.get("otp"), wa, sms))


def _otp(t: Any, wa: WhatsAppConfig | None, sms: SmsConfig | None) -> OtpConfig | None:
    """`[otp]`: the channel must be one configured under [channels] (one place for its secrets)."""
    if t is None:
        return None
    t = _check_keys(t, "otp", {"channel", "template", "language", "sender"})
    channel = t.get("channel")
    if channel not in ("whatsapp", "sms"):
        raise ConfigError(f"otp.channel: expected 'whatsapp' or 'sms', got {channel!r}")
    if (wa if channel == "whatsapp" else sms) is None:
        raise ConfigError(f"otp.channel: {channel!r} needs [channels.{channel}]")
    template = _str(t, "template", "otp") if channel == "whatsapp" else None
    language = t.get("language", "id")
    if not isinstance(language, str) or not re.match(r"^[a-z]{2}(_[A-Z]{2})?$", language):
        raise ConfigError(f"otp.language: expected a language code like 'id' or 'en_US', got {language!r}")
    sender = _str(t, "sender", "otp") if "sender" in t else None
    return OtpConfig(str(channel), template, language, sender)


def _count(m: Mapping[str, Any], key: str, default: int, most: int = 10_000) -> int:
    v = m.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most:
        raise ConfigError(f"messaging.{key}: expected a whole number from 1 to {most}, got {v!r}")
    return v


def load_config(path: str, env: Mapping[str, str] | None = None) -> MessagingConfig:
    """Read and check hq.toml."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        return parse_config(data, env)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
