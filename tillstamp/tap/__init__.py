"""The print tap: a transparent ESC/POS proxy that reads receipts and prints loyalty into them.

May import `tillstamp.drivers` and `tillstamp.loyalty`; `tillstamp.agent` imports it (never
the other way round). Nothing listens or starts a thread at import time.
"""

from tillstamp.tap.extract import NoMatch, ParsedReceipt, extract, extract_any
from tillstamp.tap.handler import Record, RecordError
from tillstamp.tap.jobs import JobReport
from tillstamp.tap.record import service_record
from tillstamp.tap.server import TapConfig, TapConfigError, TapServer, start_tap, tap_config
from tillstamp.tap.template import (
    Template,
    TemplateError,
    load_template,
    resolve_templates,
    shipped_templates,
)

__all__ = [
    "JobReport", "NoMatch", "ParsedReceipt", "Record", "RecordError", "TapConfig",
    "TapConfigError", "TapServer", "Template", "TemplateError", "extract", "extract_any",
    "load_template", "resolve_templates", "service_record", "shipped_templates", "start_tap",
    "tap_config",
]
