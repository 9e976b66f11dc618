"""The provider stand-in the flow tests talk to (it ships in the package: the demo uses it too)."""

from tillstamp.hq.channels.standin import (
    PHONE_NUMBER_ID,
    SMS_SECRET,
    SMS_TOKEN,
    WA_SECRET,
    WA_TOKEN,
    WA_VERIFY,
    StandInProvider,
    wa_inbound,
    wa_signature,
    wa_status,
)

FakeProvider = StandInProvider

__all__ = ["PHONE_NUMBER_ID", "SMS_SECRET", "SMS_TOKEN", "WA_SECRET", "WA_TOKEN", "WA_VERIFY", "FakeProvider",
           "wa_inbound", "wa_signature", "wa_status"]
