"""The menu model: generated prompts and the problems a tree can have, each with its path."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from ivr import (
    MAX_DEPTH,
    IvrConfigError,
    Menu,
    Option,
    Prompt,
    Route,
    check_menu,
    menu_problems,
)
from tests.ivr.menus import TOP_PROMPTS, tree

SALES = Route("ring_group", "sales")


def problems(root: Menu) -> list[str]:
    return [str(p) for p in menu_problems(root)]


def nested(levels: int) -> Menu:
    """``levels`` menus, each opening the next on key 1; the last routes."""
    inner = Menu("m", options={"1": Option("Sales", route=SALES)})
    for _ in range(levels - 1):
        inner = Menu("m", options={"1": Option("Deeper", submenu=inner)})
    return Menu("main", options=inner.options)


def test_the_test_tree_has_no_problems() -> None:
    assert menu_problems(tree()) == []
    check_menu(tree())


def test_option_prompts_come_from_the_template_or_the_option() -> None:
    root = tree()
    assert root.menu_prompts() == TOP_PROMPTS
    assert root.option_prompt_for("1") == Prompt("text", "For Sales, press 1.")
    assert root.option_prompt_for("3") == Prompt("text", "Press 3 for billing.")


def test_values_are_frozen_and_options_are_a_private_copy() -> None:
    options = {"1": Option("Sales", route=SALES)}
    root = Menu("main", options=options)
    options["2"] = Option("Support", route=SALES)
    assert list(root.options) == ["1"]
    with pytest.raises(TypeError):
        root.options["2"] = Option("Support", route=SALES)  # type: ignore[index]
    with pytest.raises(FrozenInstanceError):
        root.timeout = 1.0  # type: ignore[misc]
    assert hash(root) == hash(Menu("main", options={"1": Option("Sales", route=SALES)}))
    assert root == Menu("main", options={"1": Option("Sales", route=SALES)})


def test_five_levels_are_allowed() -> None:
    assert menu_problems(nested(MAX_DEPTH)) == []


def test_a_sixth_level_is_a_problem_naming_its_path() -> None:
    [problem] = menu_problems(nested(MAX_DEPTH + 1))
    assert problem.keys == "11111"
    assert str(problem) == (
        "main.options.1.menu.options.1.menu.options.1.menu.options.1.menu.options.1.menu: "
        "menus nest at most 5 levels deep; this one is level 6"
    )


def test_depth_limit_can_be_lowered() -> None:
    [problem] = menu_problems(nested(3), max_depth=2)
    assert problem.path == "main.options.1.menu.options.1.menu"


@pytest.mark.parametrize("key", ["A", "x", "10", "", " "])
def test_option_keys_must_be_menu_keys(key: str) -> None:
    root = Menu("main", options={key: Option("Sales", route=SALES)})
    assert problems(root) == [f"main.options.{key}: {key!r} is not a menu key; "
                              "keys are 0-9, * and #"]


def test_back_and_repeat_keys_must_be_free_menu_keys() -> None:
    root = Menu("main", options={"1": Option("Sales", route=SALES)}, back_key="1",
                repeat_key="A")
    assert problems(root) == [
        "main.back_key: key 1 is also an option of this menu",
        "main.repeat_key: 'A' is not a menu key; keys are 0-9, * and #",
    ]
    same = Menu("main", options={"1": Option("Sales", route=SALES)}, back_key="*",
                repeat_key="*")
    assert problems(same) == ["main.repeat_key: key * is also the back key"]


def test_problems_deep_in_the_tree_name_their_path() -> None:
    billing = Menu("billing", options={"1": Option("Invoices", route=SALES),
                                       "2": Option("", route=SALES),
                                       "3": Option("Both", route=SALES, submenu=nested(1)),
                                       "4": Option("Neither")},
                   timeout=float("nan"), max_retries=-1)
    root = Menu("main", options={"3": Option("Billing", submenu=billing)})
    assert problems(root) == [
        "main.options.3.menu.timeout: must be more than 0 and at most 300 seconds",
        "main.options.3.menu.max_retries: must be 0 to 20",
        "main.options.3.menu.options.2.label: an option without its own prompt needs a label",
        "main.options.3.menu.options.3: an option needs exactly one of a route or a submenu",
        "main.options.3.menu.options.4: an option needs exactly one of a route or a submenu",
    ]


def test_an_option_with_its_own_prompt_needs_no_label() -> None:
    root = Menu("main", options={"1": Option("", route=SALES, prompt=Prompt("clip", "sales"))})
    assert problems(root) == []
    assert root.menu_prompts() == (Prompt("clip", "sales"),)


@pytest.mark.parametrize(("template", "why"), [
    ("For {name}, press {key}.", "KeyError('name')"),
    ("Press {}.", "IndexError"),
    ("Press {key", "ValueError"),
    ("{key:d}", "ValueError"),
])
def test_option_prompt_templates_that_cannot_be_filled(template: str, why: str) -> None:
    root = Menu("main", options={"1": Option("Sales", route=SALES)}, option_prompt=template)
    [problem] = problems(root)
    assert problem.startswith(f"main.option_prompt: cannot fill {template!r} ({why}")
    assert problem.endswith("it may use only {label} and {key}")


def test_a_template_that_says_nothing_is_a_problem() -> None:
    root = Menu("main", options={"1": Option("Sales", route=SALES)}, option_prompt="  ")
    assert problems(root) == ["main.option_prompt: the template makes an empty prompt"]


@pytest.mark.parametrize(("fields", "expected"), [
    ({"timeout": 0}, "main.timeout: must be more than 0 and at most 300 seconds"),
    ({"timeout": "5s"}, "main.timeout: expected seconds, not '5s'"),
    ({"timeout": True}, "main.timeout: expected seconds, not True"),
    ({"inter_digit_timeout": 301},
     "main.inter_digit_timeout: must be more than 0 and at most 300 seconds"),
    ({"max_retries": 2.5}, "main.max_retries: expected a whole number, not 2.5"),
    ({"max_retries": 21}, "main.max_retries: must be 0 to 20"),
    ({"after_unavailable": "queue"}, "main.after_unavailable: must be 'menu' or 'hangup'"),
    ({"welcome": Prompt("text", " ")}, "main.welcome: a prompt needs a value"),
    ({"goodbye": Prompt("", "bye")}, "main.goodbye: a prompt needs a kind"),
    ({"invalid": "Wrong key"}, "main.invalid: expected a Prompt, not str"),
    ({"on_failure": Route("user", "")}, "main.on_failure: a route needs a target"),
    ({"on_failure": "operator"}, "main.on_failure: expected a Route, not str"),
])
def test_bad_values_are_named(fields: dict[str, Any], expected: str) -> None:
    root = Menu("main", options={"1": Option("Sales", route=SALES)}, **fields)
    assert problems(root) == [expected]


def test_a_menu_needs_options_or_direct_dial() -> None:
    assert problems(Menu("main")) == [
        "main.options: a menu needs at least one option (or direct dialling)"]
    assert problems(Menu("main", direct_dial=True)) == []


def test_a_top_menu_needs_a_name() -> None:
    assert problems(Menu(" ", options={"1": Option("Sales", route=SALES)})) == [
        " .name: a menu needs a name"]


def test_check_menu_raises_with_every_problem() -> None:
    root = Menu("main", options={"1": Option("Sales")}, timeout=-1)
    with pytest.raises(IvrConfigError) as info:
        check_menu(root)
    assert len(info.value.problems) == 2
    assert "main.timeout" in str(info.value) and "main.options.1" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_keys_that_are_not_text_are_problems_not_crashes() -> None:
    options: dict[Any, Option] = {1: Option("Sales", route=SALES), "12": Option("B", route=SALES)}
    assert problems(Menu("main", options=options)) == [
        "main.options.1: 1 is not a menu key; keys are 0-9, * and #",
        "main.options.12: '12' is not a menu key; keys are 0-9, * and #",
    ]
