"""The console's forms build and render without wtforms' deprecation warnings.

wtforms 3.3 deprecates choices given as tuples (removed in 3.4): a form that
still passes them would break at the next upgrade.  Every form of the
console is built and rendered here with those warnings turned into errors.
"""

from __future__ import annotations

import importlib
import inspect
import warnings

import pytest
from flask import Flask
from flask_wtf import FlaskForm

MODULES = ("forms", "admin_forms", "devices", "upload_requests")


def console_forms() -> list[type[FlaskForm]]:
    found: dict[str, type[FlaskForm]] = {}
    for name in MODULES:
        module = importlib.import_module(f"gateway.console.{name}")
        for cls in vars(module).values():
            if (
                inspect.isclass(cls)
                and issubclass(cls, FlaskForm)
                and cls.__module__ == module.__name__
            ):
                found[cls.__qualname__] = cls
    return list(found.values())


@pytest.mark.parametrize("form", console_forms(), ids=lambda form: form.__name__)
def test_a_form_renders_without_deprecation_warnings(form: type[FlaskForm]) -> None:
    app = Flask("forms")
    app.config.update(SECRET_KEY="test", WTF_CSRF_ENABLED=False)
    with app.test_request_context(), warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        built = form()
        for field in built:
            field()


def test_the_forms_with_choices_are_among_them() -> None:
    names = {form.__name__ for form in console_forms()}
    assert {"ConsentForm", "WithdrawForm", "CopyForm", "AuditSearchForm", "GroupsForm"} <= names
