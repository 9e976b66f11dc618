"""Email over SMTP (implicit TLS or STARTTLS, optional AUTH), with RFC 8058 one-click
unsubscribe: `List-Unsubscribe: <https://hq/.../v1/unsubscribe/TOKEN>` and
`List-Unsubscribe-Post: List-Unsubscribe=One-Click`. The relay is expected to DKIM-sign
those headers (RFC 8058 section 4), which is the relay's configuration, not ours.

The message's Message-ID is derived from its idempotency key, so a copy that did leave is
recognisable in any mailbox or relay log. Each SMTP step is classified on its own: a
refusal before the end of DATA means nothing was sent; losing the connection while the
server was acknowledging DATA means it may have been.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from ..messaging import EmailConfig
from . import MaybeSent, NotSent, Outgoing, Rejected, SendResult


def build_message(config: EmailConfig, msg: Outgoing) -> EmailMessage:
    """The RFC 5322 message for one email."""
    m = EmailMessage()
    m["From"] = config.from_addr
    m["To"] = msg.to
    m["Subject"] = msg.subject or ""
    m["Date"] = formatdate(usegmt=True)
    domain = parseaddr(config.from_addr)[1].rpartition("@")[2] or "tillstamp.invalid"
    m["Message-ID"] = f"<{msg.ref}@{domain}>"
    if msg.unsubscribe_url:
        m["List-Unsubscribe"] = f"<{msg.unsubscribe_url}>"
        m["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    m.set_content(msg.body)
    return m


def _reply_error(code: int, text: str) -> Exception:
    return (NotSent if 400 <= code < 500 else Rejected)(f"SMTP {code}: {text}", code)


class EmailChannel:
    """One SMTP session per message (a relay on loopback or the LAN makes that cheap)."""

    name = "email"

    def __init__(self, config: EmailConfig):
        self.config = config
        self.context = ssl.create_default_context(cafile=config.ca_file)

    def _open(self) -> smtplib.SMTP:
        c = self.config
        try:
            smtp: smtplib.SMTP
            if c.implicit_tls:
                smtp = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout_s, context=self.context)
            else:
                smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout_s)
            smtp.ehlo()
            if c.starttls:
                smtp.starttls(context=self.context)
                smtp.ehlo()
            if c.user:
                smtp.user, smtp.password = c.user, c.password or ""
                if "plain" in smtp.esmtp_features.get("auth", "").lower().split():
                    # One mechanism, one answer: login() would try the next mechanism after a 535.
                    smtp.auth("PLAIN", smtp.auth_plain)
                else:
                    smtp.login(c.user, c.password or "")
        except smtplib.SMTPAuthenticationError as e:
            raise Rejected(f"SMTP login refused: {e.smtp_code}", e.smtp_code) from None
        except smtplib.SMTPResponseException as e:
            raise _reply_error(e.smtp_code, str(e.smtp_error)) from None
        except (OSError, smtplib.SMTPException) as e:  # before any message data: nothing sent
            raise NotSent(f"SMTP connection failed: {type(e).__name__}: {e}") from None
        return smtp

    def send(self, msg: Outgoing) -> SendResult:
        """Send one email; its Message-ID."""
        m = build_message(self.config, msg)
        sender = parseaddr(self.config.from_addr)[1]
        smtp = self._open()
        try:
            try:
                code, text = smtp.mail(sender)
                if code != 250:
                    raise _reply_error(code, text.decode(errors="replace"))
                code, text = smtp.rcpt(msg.to)
                if code not in (250, 251):
                    raise _reply_error(code, text.decode(errors="replace"))
            except (OSError, smtplib.SMTPServerDisconnected) as e:
                raise NotSent(f"SMTP lost before DATA: {type(e).__name__}") from None
            try:
                smtp.data(m.as_bytes())
            except smtplib.SMTPDataError as e:
                raise _reply_error(e.smtp_code, str(e.smtp_error)) from None
            except (OSError, smtplib.SMTPServerDisconnected) as e:
                raise MaybeSent(f"SMTP lost during DATA: {type(e).__name__}") from None
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return SendResult(str(m["Message-ID"]))

    def close(self) -> None:
        """Nothing held between messages."""
