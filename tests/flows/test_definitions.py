"""Flow definitions and hq.toml: valid ones parse into typed values; each mistake is one
error naming its key path; secrets come only from the environment."""

from __future__ import annotations

import datetime as dt

import pytest
from jinja2 import TemplateError

from tillstamp.hq.flows import FlowError, held_out, message_ref, parse_flows_text, render
from tillstamp.hq.messaging import ConfigError, QuietHours, parse_config

from .conftest import ENV, lapsed_flow


def test_the_issue_example_parses():
    (f,) = parse_flows_text(lapsed_flow(holdout=0.25))
    assert f.trigger.kind == "lapsed_days" and f.trigger.value == 14
    assert f.channels == ("whatsapp", "email") and f.once_per == dt.timedelta(days=30) and f.holdout == 0.25
    assert f.whatsapp is not None and f.whatsapp.template == "winback_14d"
    assert render(f.text("email", "id").subject or "", {"name": "Ani"}) == "Kangen, Ani!"
    assert parse_flows_text(lapsed_flow().replace("holdout = 0.0\n", ""))[0].holdout == 0.10  # the default


@pytest.mark.parametrize(("change", "error"), [
    (("lapsed_days = 14", "lapsed_weeks = 2"), r"flows\[0\]\.trigger\.lapsed_weeks: unknown trigger"),
    (("lapsed_days = 14", "lapsed_days = 0"), r"flows\[0\]\.trigger\.lapsed_days: expected a whole number"),
    (('"whatsapp", "email", "sms"]', '"whatsapp", "fax", "sms"]'), r"flows\[0\]\.channels\[1\]: unknown"),
    (('once_per = "30d"', 'once_per = "a month"'), r"flows\[0\]\.once_per: expected a duration"),
    (("holdout = 0.0", "holdout = 0.9"), r"flows\[0\]\.holdout: expected a share"),
    (('subject = "Kangen, {{ name }}!"', 'subject = "Kangen, {{ nama }}!"'), r"flows\[0\]\.email\.subject: 'nama'"),
    (('subject = "Kangen, {{ name }}!"', 'subject = "Kangen, {{ name }!"'), r"flows\[0\]\.email\.subject: "),
    (('template = "winback_14d"', 'template = "Winback 14"'), r"flows\[0\]\.whatsapp\.template: "),
    (("[flows.sms]", "[flows.sms_x]"), r"flows\[0\]\.sms_x: unknown key"),
])
def test_each_mistake_names_its_key_path(change, error):
    old, new = change
    text = lapsed_flow(channels='["whatsapp", "email", "sms"]').replace(old, new, 1)
    with pytest.raises(FlowError, match=error):
        parse_flows_text(text)


def test_templates_run_in_a_sandbox():
    text = lapsed_flow().replace('subject = "Kangen, {{ name }}!"',
                                 'subject = "{{ name.__class__.__mro__[1].__subclasses__() }}"')
    with pytest.raises(FlowError, match="email.subject"):
        parse_flows_text(text)


def test_a_missing_channel_template_and_duplicate_names_are_refused():
    with pytest.raises(FlowError, match=r"flows\[0\]\.sms: missing"):
        text = lapsed_flow(channels='["sms"]')
        parse_flows_text(text[:text.index("[flows.sms]")])
    with pytest.raises(FlowError, match=r"flows\[1\]\.name: 'winback-14' appears twice"):
        parse_flows_text(lapsed_flow() + lapsed_flow())


def test_holdout_is_a_stable_hash_of_flow_and_member():
    members = [f"M{i}" for i in range(4000)]
    a = {m for m in members if held_out("f", m, 0.1)}
    assert a == {m for m in members if held_out("f", m, 0.1)}
    assert 320 <= len(a) <= 480
    assert a != {m for m in members if held_out("g", m, 0.1)}  # another flow, another draw
    assert message_ref("f", "M1", "x") == message_ref("f", "M1", "x") != message_ref("f", "M1", "y")


def test_hq_toml_reads_secrets_from_the_environment_only():
    data = {"channels": {"whatsapp": {"api_base": "https://graph.facebook.com/v23.0", "phone_number_id": "1",
                                      "token_env": "TS_WA_TOKEN", "app_secret_env": "TS_WA_SECRET"}}}
    cfg = parse_config(data, ENV)
    assert cfg.whatsapp is not None and cfg.whatsapp.token == ENV["TS_WA_TOKEN"]
    with pytest.raises(ConfigError, match="channels.whatsapp.token_env: environment variable TS_WA_TOKEN is not set"):
        parse_config(data, {})
    data["channels"]["whatsapp"]["token"] = "inline-secret"
    with pytest.raises(ConfigError, match="channels.whatsapp.token: unknown key"):
        parse_config(data, ENV)


def test_hq_toml_refuses_cleartext_smtp_off_loopback_and_bad_rules():
    email = {"smtp": "smtp://mail.example.id:25", "from": "a@b.id"}
    with pytest.raises(ConfigError, match="channels.email.smtp: off loopback"):
        parse_config({"channels": {"email": email}, "messaging": {"unsubscribe_secret_env": "TS_UNSUB"}}, ENV)
    with pytest.raises(ConfigError, match="messaging.quiet_hours"):
        parse_config({"messaging": {"quiet_hours": "9pm-8am"}}, ENV)
    with pytest.raises(ConfigError, match="messaging.cap"):
        parse_config({"messaging": {"cap": "two a week"}}, ENV)
    with pytest.raises(ConfigError, match="zones.X: unknown time zone"):
        parse_config({"zones": {"X": "Asia/Atlantis"}}, ENV)
    cfg = parse_config({"messaging": {"cap": "3/14d", "quiet_hours": "22:00-07:30"}}, ENV)
    assert (cfg.cap, cfg.cap_window) == (3, dt.timedelta(days=14))
    assert cfg.quiet == QuietHours(dt.time(22), dt.time(7, 30))
    assert cfg.connections == 1 and parse_config({"messaging": {"connections": 8}}, ENV).connections == 8
    for bad in (0, 65, "8", True):
        with pytest.raises(ConfigError, match="messaging.connections: expected a whole number from 1 to 64"):
            parse_config({"messaging": {"connections": bad}}, ENV)
    with pytest.raises(ConfigError, match="otp.template"):  # WhatsApp codes need an approved template
        wa = {"api_base": "https://graph.facebook.com/v23.0", "phone_number_id": "1", "token_env": "TS_WA_TOKEN",
              "app_secret_env": "TS_WA_SECRET"}
        parse_config({"channels": {"whatsapp": wa}, "otp": {"channel": "whatsapp"}}, ENV)


def test_quiet_hours_cross_midnight():
    q = QuietHours(dt.time(21), dt.time(8))
    assert q.contains(dt.time(21)) and q.contains(dt.time(3)) and not q.contains(dt.time(8))
    assert not q.contains(dt.time(20, 59))


def test_a_plain_name_renders_exactly_as_jinja_renders_it():
    from tillstamp.hq.flows import SAMPLE_CONTEXT, _compiled, render

    ctx = {**SAMPLE_CONTEXT, "name": "Budi <b> & Sari", "balance": 0, "tier": None, "card_size": 10**12}
    for key in ctx:
        for text in (f"{{{{ {key} }}}}", f"{{{{{key}}}}}", f"{{{{  {key}\t}}}}"):
            assert render(text, ctx) == _compiled(text).render(**ctx)
    with pytest.raises(TemplateError):  # an unknown name is still Jinja's error, not a blank
        render("{{ nama }}", ctx)
