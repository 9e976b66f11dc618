"""The cashier panel at `/`: server-rendered Jinja2, live through the event stream.

`/` renders the whole page; `/panel/live` renders only the part that changes, which the
page's script fetches again after each event, so every piece of HTML is drawn in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..agent.runtime import Runtime
from . import ops

HERE = Path(__file__).parent
WORDS: dict[str, dict[str, str]] = {
    "id": {
        "title": "Panel Kasir", "member": "Member", "no_member": "Belum ada member. Minta pelanggan "
        "scan QR member di kamera atau scanner.", "scanned": "baru discan", "balance": "Saldo",
        "stamps": "stempel", "tier": "Tier", "to_next": "{n} stempel lagi ke {tier}", "top": "Tier tertinggi",
        "card": "Kartu", "missions": "Misi", "expiring": "Segera kedaluwarsa", "rewards": "Hadiah bisa ditukar",
        "no_rewards": "Belum ada hadiah yang bisa ditukar", "redeem": "Tukar", "enrol": "Daftar member baru",
        "phone": "Nomor HP", "name": "Nama", "consent": "Setuju dihubungi lewat", "submit": "Daftar",
        "sales": "Transaksi terakhir", "awards": "Aktivitas", "devices": "Perangkat", "sync": "Sinkronisasi",
        "online": "online", "offline": "offline", "waiting": "event menunggu", "print_waiting": "struk antre",
        "claim_offer": "QR klaim struk {receipt}: {n} stempel", "claim_for": "Klaim untuk member ini",
        "claimed": "sudah diklaim", "no_sales": "Belum ada transaksi", "guest": "tamu",
        "refunded": "refund", "done": "selesai", "visits": "kunjungan", "visit": "kunjungan",
        "live": "terhubung",
        "enrolled": "Member terdaftar", "redeemed": "Hadiah ditukar", "error": "Gagal",
        "ev_sale": "Transaksi {receipt}: +{n} stempel", "ev_refund": "Refund {receipt}: {n} stempel",
        "ev_redemption": "Tukar {reward}: {n} stempel", "ev_claim": "Klaim {receipt}: +{n} stempel",
        "ev_enrol": "Member baru: {name}", "ev_sale_guest": "Transaksi {receipt}: QR klaim {n} stempel",
        "sync_off": "tidak dipakai",
        "dev_printer": "Printer", "dev_camera": "Kamera", "dev_scanner": "Scanner",
        "dev_tap": "Sadap struk POS", "state_none": "tidak dipasang", "state_opening": "menyambung…",
        "state_open": "siap", "state_retrying": "mencoba lagi", "state_lost": "terputus",
        "state_failed": "gagal, cek pengaturan", "state_closed": "mati",
    },
    "en": {
        "title": "Cashier Panel", "member": "Member", "no_member": "No member yet. Ask the customer to "
        "scan their member QR at the camera or scanner.", "scanned": "just scanned", "balance": "Balance",
        "stamps": "stamps", "tier": "Tier", "to_next": "{n} more stamps to {tier}", "top": "Top tier",
        "card": "Card", "missions": "Missions", "expiring": "Expiring soon", "rewards": "Rewards to redeem",
        "no_rewards": "No reward can be redeemed yet", "redeem": "Redeem", "enrol": "Enrol a new member",
        "phone": "Phone", "name": "Name", "consent": "Agrees to be contacted by", "submit": "Enrol",
        "sales": "Last sales", "awards": "Activity", "devices": "Devices", "sync": "Sync",
        "online": "online", "offline": "offline", "waiting": "events waiting", "print_waiting": "receipts queued",
        "claim_offer": "Receipt claim QR {receipt}: {n} stamps", "claim_for": "Claim for this member",
        "claimed": "already claimed", "no_sales": "No sales yet", "guest": "guest",
        "refunded": "refunded", "done": "done", "visits": "visits", "visit": "visit", "live": "live",
        "enrolled": "Member enrolled", "redeemed": "Reward redeemed", "error": "Failed",
        "ev_sale": "Sale {receipt}: +{n} stamps", "ev_refund": "Refund {receipt}: {n} stamps",
        "ev_redemption": "Redeemed {reward}: {n} stamps", "ev_claim": "Claim {receipt}: +{n} stamps",
        "ev_enrol": "New member: {name}", "ev_sale_guest": "Sale {receipt}: claim QR for {n} stamps",
        "sync_off": "not used",
        "dev_printer": "Printer", "dev_camera": "Camera", "dev_scanner": "Scanner",
        "dev_tap": "POS print tap", "state_none": "not fitted", "state_opening": "connecting…",
        "state_open": "ready", "state_retrying": "retrying", "state_lost": "disconnected",
        "state_failed": "failed, check settings", "state_closed": "off",
    },
}


def rupiah(amount: int) -> str:
    """`Rp 25.000`."""
    return f"Rp {amount:,}".replace(",", ".")


def activity(event: dict[str, Any], w: dict[str, str]) -> str:
    """One line of the activity list for an event."""
    kind = event["type"]
    n = event.get("stamps_awarded", event.get("stamps", 0))
    if kind == "sale" and not event.get("member"):
        kind, n = "sale_guest", event.get("claim_stamps", 0)
    return w[f"ev_{kind}"].format(receipt=event.get("receipt", ""), n=n, reward=event.get("reward", ""),
                                  name=event.get("name") or event.get("member", ""))


def device_state(name: str, state: str, w: dict[str, str]) -> tuple[str, str]:
    """(device name, state) in the panel's language; unknown ones as they are."""
    return w.get(f"dev_{name}", name), w.get(f"state_{state}", state)


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters["rupiah"] = rupiah
    return env


def add_panel(app: FastAPI, rt: Runtime) -> None:
    """Add `/`, `/panel/live` and the panel's script and style to `app`."""
    env = _env()
    run = app.state.run
    check_key = app.state.check_key
    key_dependency = app.state.key_dependency

    def language(request: Request) -> str:
        lang = request.query_params.get("lang") or request.cookies.get("tillstamp_lang") or rt.till.config.language
        return lang if lang in WORDS else "id"

    async def render(request: Request, template: str) -> HTMLResponse:
        lang = language(request)
        state = await run(ops.panel_state)
        html = env.get_template(template).render(
            s=state, w=WORDS[lang], lang=lang, activity=activity, device_state=device_state, store=rt.till.config.store_name or rt.till.config.store,
            terminal=rt.till.config.terminal)
        resp = HTMLResponse(html)
        if request.query_params.get("lang") in WORDS:
            resp.set_cookie("tillstamp_lang", lang, samesite="strict")
        key = request.query_params.get("key")
        if key:  # a browser cannot send headers from a link: the key travels once, then as a cookie
            resp.set_cookie("tillstamp_key", key, httponly=True, samesite="strict")
        return resp

    @app.get("/", include_in_schema=False)
    async def panel(request: Request) -> HTMLResponse:
        check_key(request)
        return await render(request, "panel.html")

    @app.get("/panel/live", include_in_schema=False, dependencies=[Depends(key_dependency)])
    async def live(request: Request) -> HTMLResponse:
        return await render(request, "live.html")

    for name, media in (("panel.js", "text/javascript"), ("panel.css", "text/css")):
        body = (HERE / "static" / name).read_bytes()

        async def static(body: bytes = body, media: str = media) -> Response:
            return Response(body, media_type=media, headers={"Cache-Control": "max-age=60"})

        app.add_api_route(f"/static/{name}", static, include_in_schema=False)
