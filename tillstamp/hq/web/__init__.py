"""HQ's web pages: the staff dashboard (/, /stores, /members, /segments, /flows, /programs,
each with a JSON twin at ?format=json) and the customer's pages (/k/{token}, /saya).
Templates and assets ship in this package; nothing is loaded from the internet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..crm import Crm
    from .codes import WebConfig


def mount_web(app: FastAPI, crm: Crm, config: WebConfig | None = None) -> None:
    """Add the staff dashboard, the customer's pages and the package's static files to the HQ app."""
    from fastapi.staticfiles import StaticFiles

    from .auth import Auth
    from .codes import WebConfig
    from .customer import Customer
    from .customer_pages import mount_customer
    from .render import STATIC, Renderer
    from .staff_pages import mount_staff

    config = config or WebConfig()
    ui = Renderer(config)
    auth = Auth(crm.store, crm.hq.clock)
    customer = Customer(crm.hq, config.sender)
    app.state.web_config = config
    app.state.customer = customer
    mount_staff(app, crm, auth, ui)
    mount_customer(app, customer, auth, ui)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
