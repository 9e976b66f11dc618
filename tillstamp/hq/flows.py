"""Automation flows: parsed from TOML into typed dataclasses, validated with the key path
(like programs and segments), rendered through a sandboxed Jinja2 environment.

    [[flows]]
    name = "winback-14"
    trigger = { lapsed_days = 14 }
    audience = "jakarta-regulars"     # optional: a saved segment
    delay = "2h"                      # optional: wait after the trigger
    channels = ["whatsapp", "email"]  # in order of preference
    once_per = "30d"
    holdout = 0.25                    # default 10 %
    [flows.whatsapp]
    template = "winback_14d"
    language = "id"
    params = ["{{ name }}", "{{ balance }}"]
    [flows.email]
    subject = "Kangen, {{ name }}!"
    body = "Sudah lama tidak mampir. Saldo kamu {{ balance }} stempel."
    [flows.email.en]                  # optional: the same template in another language
    subject = "We miss you, {{ name }}!"
    body = "..."

What a flow *means* at run time (who is due, at most once) lives in `scheduler.py`; the SQL
in `store_flows.py`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

CHANNELS = ("whatsapp", "sms", "email")
TRIGGERS = ("lapsed_days", "birthday_in_days", "reorder_due", "card_almost_full", "stamps_expiring_within_days",
            "enrolled", "tier_changed", "p_visit_14d_below")
DEFAULT_HOLDOUT = 0.10
LANGUAGES = ("id", "en")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DURATION = re.compile(r"^(\d{1,5})([mhd])$")
_FLOW_KEYS = {"name", "trigger", "audience", "delay", "channels", "once_per", "holdout", "language",
              "description", *CHANNELS}


class FlowError(ValueError):
    """A flow definition that is not valid; the message starts with the key path."""


@dataclass(frozen=True)
class Trigger:
    """What makes a member due: one of TRIGGERS and its value."""

    kind: str
    value: Any


@dataclass(frozen=True)
class WhatsAppTemplate:
    """An approved WhatsApp template: its name, language code and body parameters (Jinja2)."""

    template: str
    language: str
    params: tuple[str, ...]


@dataclass(frozen=True)
class TextTemplate:
    """An email (subject and body) or SMS (body only) template, Jinja2 in a sandbox."""

    body: str
    subject: str | None = None


@dataclass(frozen=True)
class Flow:
    """One automation flow, validated."""

    name: str
    trigger: Trigger
    channels: tuple[str, ...]
    once_per: dt.timedelta
    holdout: float
    audience: str | None = None
    delay: dt.timedelta = dt.timedelta(0)
    language: str = "id"
    description: str = ""
    whatsapp: WhatsAppTemplate | None = None
    # per channel ("email", "sms"), per language ("id", "en"): the template
    texts: dict[str, dict[str, TextTemplate]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def text(self, channel: str, language: str) -> TextTemplate:
        """The channel's template in `language`, else in the flow's language."""
        per = self.texts[channel]
        return per.get(language) or per[self.language]


def parse_duration(v: Any, path: str) -> dt.timedelta:
    """'30d', '12h', '45m' as a timedelta."""
    m = _DURATION.match(v) if isinstance(v, str) else None
    if m is None:
        raise FlowError(f"{path}: expected a duration like '30d', '12h' or '45m', got {v!r}")
    n, unit = int(m.group(1)), m.group(2)
    return dt.timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: n})


def _int(v: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise FlowError(f"{path}: expected a whole number from {lo} to {hi}, got {v!r}")
    return v


def _text(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise FlowError(f"{path}: expected a non-empty string, got {v!r}")
    return v


def _trigger(v: Any, path: str) -> Trigger:
    if not isinstance(v, dict) or len(v) != 1:
        raise FlowError(f"{path}: expected one of {', '.join(TRIGGERS)}, e.g. {{ lapsed_days = 14 }}")
    (kind, val), = v.items()
    p = f"{path}.{kind}"
    if kind in ("lapsed_days", "stamps_expiring_within_days"):
        return Trigger(kind, _int(val, p, 1, 3650))
    if kind == "birthday_in_days":
        return Trigger(kind, _int(val, p, 0, 60))
    if kind == "card_almost_full":
        return Trigger(kind, _int(val, p, 1, 1000))
    if kind in ("reorder_due", "enrolled"):
        if val is not True:
            raise FlowError(f"{p}: expected true")
        return Trigger(kind, True)
    if kind == "tier_changed":
        if val != "up":
            raise FlowError(f"{p}: expected \"up\", got {val!r}")
        return Trigger(kind, "up")
    if kind == "p_visit_14d_below":
        if isinstance(val, bool) or not isinstance(val, int | float) or not 0 < float(val) <= 1:
            raise FlowError(f"{p}: expected a probability above 0 and at most 1, got {val!r}")
        return Trigger(kind, float(val))
    raise FlowError(f"{p}: unknown trigger (known: {', '.join(TRIGGERS)})")


_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True)
SAMPLE_CONTEXT = {"name": "Budi", "first_name": "Budi", "balance": 7, "card_size": 10, "card_filled": 7,
                  "stamps_to_go": 3, "tier": "silver", "store": "S1", "product": "Kopi Susu", "member": "M1",
                  "flow": "flow", "unsubscribe_url": "https://hq.example/u/x"}


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Template:
    # Compiling is most of a render's cost and a flow has a handful of templates: compile each
    # once. A compiled template is immutable, so threads may share it.
    return _ENV.from_string(text)


# A parameter that is one plain name ("{{ first_name }}") is the common case of WhatsApp
# template parameters; Jinja prints a value with str(), so the lookup gives the same text
# without building a render context per message (a tenth of a millisecond each).
_PLAIN_NAME = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


def render(text: str, context: dict[str, Any]) -> str:
    """Render a template string in the sandbox (undefined names are an error)."""
    plain = _PLAIN_NAME.match(text)
    if plain is not None and plain[1] in context:
        return str(context[plain[1]])
    return _compiled(text).render(**context)


def _template(v: Any, path: str) -> str:
    text = _text(v, path)
    try:
        render(text, SAMPLE_CONTEXT)
    except TemplateError as e:
        raise FlowError(f"{path}: {e.message or type(e).__name__} "
                        f"(names: {', '.join(sorted(SAMPLE_CONTEXT))})") from None
    return text


def _texts(v: Any, path: str, channel: str, language: str) -> dict[str, TextTemplate]:
    if not isinstance(v, dict):
        raise FlowError(f"{path}: expected a table")

    def one(t: dict[str, Any], p: str) -> TextTemplate:
        allowed = {"subject", "body"} if channel == "email" else {"body"}
        extra = set(t) - allowed - set(LANGUAGES)
        if extra:
            raise FlowError(f"{p}.{min(extra)}: unknown key (allowed: {', '.join(sorted(allowed))})")
        return TextTemplate(_template(t.get("body"), f"{p}.body"),
                            _template(t.get("subject"), f"{p}.subject") if channel == "email" else None)

    out = {language: one(v, path)}
    for lang in LANGUAGES:
        if lang in v:
            if not isinstance(v[lang], dict):
                raise FlowError(f"{path}.{lang}: expected a table")
            out[lang] = one(v[lang], f"{path}.{lang}")
    return out


def parse_flow(data: Any, path: str = "flow") -> Flow:
    """One flow from its table; FlowError naming the key path if it is not valid."""
    if not isinstance(data, dict):
        raise FlowError(f"{path}: expected a table")
    unknown = set(data) - _FLOW_KEYS
    if unknown:
        raise FlowError(f"{path}.{min(unknown)}: unknown key")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise FlowError(f"{path}.name: expected lowercase letters, digits, '-' or '_', got {name!r}")
    trigger = _trigger(data.get("trigger"), f"{path}.trigger")
    channels = data.get("channels")
    if (not isinstance(channels, list) or not channels or len(set(channels)) != len(channels)
            or not all(isinstance(c, str) for c in channels)):
        raise FlowError(f"{path}.channels: expected a list of distinct channels from {', '.join(CHANNELS)}")
    for i, ch in enumerate(channels):
        if ch not in CHANNELS:
            raise FlowError(f"{path}.channels[{i}]: unknown channel {ch!r} (known: {', '.join(CHANNELS)})")
        if ch not in data:
            raise FlowError(f"{path}.{ch}: missing (a template for every channel listed)")
    language = data.get("language", "id")
    if language not in LANGUAGES:
        raise FlowError(f"{path}.language: expected one of {', '.join(LANGUAGES)}, got {language!r}")
    holdout = data.get("holdout", DEFAULT_HOLDOUT)
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 <= float(holdout) <= 0.5:
        raise FlowError(f"{path}.holdout: expected a share from 0 to 0.5, got {holdout!r}")
    audience = data.get("audience")
    if audience is not None:
        audience = _text(audience, f"{path}.audience")
    wa = None
    if "whatsapp" in data:
        t = data["whatsapp"]
        p = f"{path}.whatsapp"
        if not isinstance(t, dict):
            raise FlowError(f"{p}: expected a table")
        extra = set(t) - {"template", "language", "params"}
        if extra:
            raise FlowError(f"{p}.{min(extra)}: unknown key (allowed: template, language, params)")
        params = t.get("params", [])
        if not isinstance(params, list):
            raise FlowError(f"{p}.params: expected a list of strings")
        tname = _text(t.get("template"), f"{p}.template")
        if not re.match(r"^[a-z0-9_]{1,512}$", tname):
            raise FlowError(f"{p}.template: a WhatsApp template name is lowercase letters, digits and '_'")
        wa = WhatsAppTemplate(tname, _text(t.get("language", language), f"{p}.language"),
                              tuple(_template(x, f"{p}.params[{i}]") for i, x in enumerate(params)))
    texts = {ch: _texts(data[ch], f"{path}.{ch}", ch, language) for ch in ("email", "sms") if ch in data}
    return Flow(
        name=name, trigger=trigger, channels=tuple(channels),
        once_per=parse_duration(data.get("once_per", "30d"), f"{path}.once_per"),
        holdout=float(holdout), audience=audience,
        delay=parse_duration(data["delay"], f"{path}.delay") if "delay" in data else dt.timedelta(0),
        language=language, description=str(data.get("description", "")), whatsapp=wa, texts=texts,
        source=json.loads(json.dumps(data)),
    )


def parse_flows_text(text: str, source: str = "flows") -> list[Flow]:
    """Every `[[flows]]` of a TOML (or JSON) file; FlowError with the key path."""
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise FlowError(f"{source}: not valid TOML or JSON: {e}") from None
    flows = data.get("flows")
    if not isinstance(flows, list) or not flows:
        raise FlowError(f"{source}: expected one or more [[flows]] tables")
    out = [parse_flow(f, f"flows[{i}]") for i, f in enumerate(flows)]
    names = [f.name for f in out]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise FlowError(f"flows[{i}].name: {n!r} appears twice")
    return out


def held_out(flow: str, member: str, share: float) -> bool:
    """Whether a member is in a flow's control group: a hash of (flow, member), so the same
    member is always on the same side of the same flow, on every backend and every run."""
    h = int.from_bytes(hashlib.sha256(f"holdout\x1f{flow}\x1f{member}".encode()).digest()[:8], "big")
    return h < share * 2**64


def message_ref(flow: str, member: str, occurrence: str) -> str:
    """The message's idempotency key as providers see it (WhatsApp `biz_opaque_callback_data`,
    the SMS gateway's `reference`, the email's Message-ID): derived from (flow, member, occurrence)."""
    return "tsm1-" + hashlib.sha256(f"{flow}\x1f{member}\x1f{occurrence}".encode()).hexdigest()[:32]
