"""Pydantic models of the POS API: what goes in is parsed here, at the HTTP edge."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

Money = Annotated[StrictInt, Field(ge=0, le=10**13, description="whole Rupiah (minor units)")]
Text64 = Annotated[StrictStr, Field(min_length=1, max_length=64)]
Channel = Literal["whatsapp", "email", "sms"]


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class SaleLineIn(_In):
    """One line of a sale."""

    sku: Text64
    name: Annotated[StrictStr, Field(max_length=200)] | None = None
    qty: Annotated[StrictInt, Field(gt=0, le=100_000)] = 1
    price: Money
    category: Annotated[StrictStr, Field(max_length=64)] | None = None
    paid_with_stamps: StrictBool = False


class SaleIn(_In):
    """A sale as the POS reports it (the same JSON as `tillstamp sale record`)."""

    receipt: Text64
    at: Annotated[StrictStr, Field(max_length=40, description="ISO 8601 with offset; default now")] | None = None
    lines: Annotated[list[SaleLineIn], Field(min_length=1, max_length=500)]
    total: Money
    discount: Money = 0
    member: Annotated[StrictStr, Field(min_length=1, max_length=512, description=(
        "member card QR payload, phone number, member id, or '@scan' for the last scan at this till"
    ))] | None = None
    source: Annotated[StrictStr, Field(max_length=32, description="where the sale came from, e.g. `tap`")] | None = None


class SaleOut(BaseModel):
    """What recording a sale did; optional keys appear as `tillstamp sale record` prints them."""

    receipt: str
    member: str | None
    stamps_awarded: int
    balance: int | None
    duplicate: bool
    claim: str | None = None
    claim_stamps: int | None = None
    missions: list[str] | None = None


class RefundIn(_In):
    """Which lines to refund; no body or no `lines` refunds the whole sale (a void)."""

    lines: dict[Annotated[StrictStr, Field(max_length=64)], StrictInt] | None = None


class OutcomeOut(BaseModel):
    """The result of a refund, redemption or claim."""

    model_config = ConfigDict(extra="allow")

    member: str | None
    stamps: int
    balance: int | None


class MemberIn(_In):
    """A new member, enrolled at the till."""

    phone: Annotated[StrictStr, Field(min_length=1, max_length=32)]
    name: Annotated[StrictStr, Field(max_length=100)] | None = None
    email: Annotated[StrictStr, Field(max_length=200)] | None = None
    birthday: Annotated[StrictStr, Field(max_length=10, description="YYYY-MM-DD")] | None = None
    consent: Annotated[list[Channel], Field(max_length=3)] = []
    print_card: bool = Field(False, description=(
        "print the member's card QR on a slip of its own (sale receipts never carry it)"))


class EnrolledOut(BaseModel):
    """The member just enrolled; `card` is their QR payload when this till signs cards."""

    member: str
    phone: str | None
    name: str | None
    card: str | None = None
    card_job: str | None = Field(None, description="the print job of the card slip, with print_card")


class Expiring(BaseModel):
    """Stamps that expire at a time."""

    stamps: int
    at: str


class MissionOut(BaseModel):
    """A mission's progress in its current period."""

    id: str
    name: str
    progress: int
    target: int
    done: bool
    text: str = Field(description="progress as shown: `2/3`, or `Rp 162.000 / Rp 500.000` for spend")


class RewardOut(BaseModel):
    """A catalogue entry; `can_redeem` when asked for a member."""

    id: str
    name: str
    cost: int
    tiers: list[str]
    can_redeem: bool | None = None


class MemberOut(BaseModel):
    """A member as the till sees them now."""

    member: str
    name: str | None
    phone: str | None
    balance: int
    tier: str
    tier_name: str
    next_tier: str | None
    to_next_tier: int
    measure: int
    card: str
    card_text: str
    full_cards: int
    expiring: list[Expiring]
    missions: list[MissionOut]
    badges: list[str]
    visits: int
    consent: dict[str, bool]
    rewards: list[RewardOut]


class RedemptionIn(_In):
    """Redeem `reward` for `member` (id, phone, card payload or '@scan')."""

    member: Annotated[StrictStr, Field(min_length=1, max_length=512)]
    reward: Text64


class ClaimIn(_In):
    """Claim the stamps of a receipt QR for a member."""

    payload: Annotated[StrictStr, Field(min_length=1, max_length=1024)]
    member: Annotated[StrictStr, Field(min_length=1, max_length=512)]


class PrintOut(BaseModel):
    """A queued reprint."""

    receipt: str
    job: str
    queued: bool


class ErrorOut(BaseModel):
    """Every refusal: a stable code, a sentence saying what is wrong, and details if any."""

    error: str
    message: str
    details: list[dict[str, Any]] | None = None


class HealthOut(BaseModel):
    """Devices, print queue and outbox."""

    model_config = ConfigDict(extra="allow")

    status: str
    devices: dict[str, dict[str, Any]]
    print_queue: dict[str, Any]
    outbox: dict[str, Any]
    tap: dict[str, Any] | None = Field(None, description=(
        "the print tap with [tap] listen: listen, printer, state, jobs, recorded, errors, spooled, last"))
