"""The provider stand-in the flow tests talk to (it ships in the package: the demo uses it too)."""

from tillstamp.hq.channels.standin import (  # noqa: F401
    PHONE_NUMBER_ID,
    SMS_SECRET,
    SMS_TOKEN,
    WA_SECRET,
    WA_TOKEN,
    WA_VERIFY,
    wa_inbound,
    wa_signature,
    wa_status,
)
