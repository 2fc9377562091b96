"""Menu trees shared by the IVR tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ivr import Menu, Option, Prompt, Route

WELCOME = Prompt("text", "Thank you for calling.")
INVALID = Prompt("text", "That is not a valid choice.")
GOODBYE = Prompt("text", "Goodbye.")
UNAVAILABLE = Prompt("text", "All our staff are busy right now.")
EXTENSIONS = {"101", "102", "5"}


def known(digits: str) -> bool:
    """The extensions that exist in these tests."""
    return digits in EXTENSIONS


def text(value: str) -> Prompt:
    return Prompt("text", value)


def menu(name: str, **fields: Any) -> Menu:
    """A menu with the tests' common settings: back ``*``, repeat ``#``, 5 s, 2 retries."""
    shared: dict[str, Any] = {
        "invalid": INVALID, "goodbye": GOODBYE, "unavailable": UNAVAILABLE,
        "back_key": "*", "repeat_key": "#", "timeout": 5.0, "max_retries": 2,
    }
    return Menu(name, **{**shared, **fields})


def tree(**top: Any) -> Menu:
    """A four-level tree::

        main (welcome)  1 Sales -> ring_group sales       0 operator -> user operator
                        2 Support -> support              3 Billing (own prompt) -> billing
        support         1 Hardware -> hardware            2 Software -> queue software
        hardware (welcome) 1 Disks -> disks                2 Software -> queue software
        disks           3 Disks -> queue disks
        billing (welcome) 1 Invoices -> user alice

    Keyword arguments override fields of the top menu.
    """
    disks = menu("disks", options={"3": Option("Disks", route=Route("queue", "disks"))})
    hardware = menu("hardware", welcome=text("Hardware support."),
                    options={"1": Option("Disks", submenu=disks),
                             "2": Option("Software", route=Route("queue", "software"))})
    support = menu("support", options={"1": Option("Hardware", submenu=hardware),
                                       "2": Option("Software", route=Route("queue", "software"))})
    billing = menu("billing", welcome=text("Billing."),
                   options={"1": Option("Invoices", route=Route("user", "alice"))})
    options = {
        "3": Option("Billing", submenu=billing, prompt=text("Press 3 for billing.")),
        "2": Option("Support", submenu=support),
        "1": Option("Sales", route=Route("ring_group", "sales")),
        "0": Option("the operator", route=Route("user", "operator")),
    }
    return replace(menu("main", welcome=WELCOME, options=options), **top)


TOP_PROMPTS = (
    text("For Sales, press 1."),
    text("For Support, press 2."),
    text("Press 3 for billing."),
    text("For the operator, press 0."),
)
"""The top menu's option prompts, in keypad order."""


def with_submenu(root: Menu, key: str, **changes: Any) -> Menu:
    """``root`` with the submenu on ``key`` changed by ``changes``."""
    option = root.options[key]
    assert option.submenu is not None
    submenu = replace(option.submenu, **changes)
    return replace(root, options={**root.options, key: replace(option, submenu=submenu)})
