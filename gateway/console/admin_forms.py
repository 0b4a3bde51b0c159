"""The forms of the trash, holds, audit and users pages (each carries the CSRF token).

As in gateway/console/forms.py, no validators: the services decide what is
valid and the page shows their message in the form.
"""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    HiddenField,
    PasswordField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.widgets import CheckboxInput, ListWidget

DATE = {"type": "date"}
NEW_PASSWORD = {"autocomplete": "new-password"}


class RestoreForm(FlaskForm):
    to = StringField("Restore to another path in the same share (optional)")
    overwrite = BooleanField("Send what is in the way to the trash first")


class PurgeForm(FlaskForm):
    reason = StringField("Reason (recorded in the audit trail)")


class HoldForm(FlaskForm):
    path = StringField(
        "Path, share first", render_kw={"placeholder": "/clinical/9434765919", "spellcheck": False}
    )
    reason = StringField("Reason", render_kw={"placeholder": "e.g. complaint 2026-031"})


class ReleaseForm(FlaskForm):
    path = HiddenField()
    reason = StringField("Reason for releasing")


class AuditSearchForm(FlaskForm):
    user = StringField("User")
    patient = StringField("Patient id")
    path = StringField("Path, share first", render_kw={"placeholder": "/clinical/9434765919"})
    since = StringField("From (date, UTC)", render_kw=DATE)
    until = StringField("To (date, UTC, inclusive)", render_kw=DATE)
    outcome = SelectField(
        "Outcome",
        choices=[
            SelectChoice("", "Any"),
            SelectChoice("success", "Successes"),
            SelectChoice("refusal", "Refusals"),
            SelectChoice("miss", "Misses (404, 405, junk)"),
        ],
    )
    status = StringField("Status or code", render_kw={"placeholder": "e.g. 403"})
    # The pages of results are the Older and Newer buttons' values (``before``, ``after``).


class ReportForm(FlaskForm):
    patient = StringField("Patient id", render_kw={"placeholder": "943 476 5919"})
    since = StringField("From (date, UTC)", render_kw=DATE)
    until = StringField("To (date, UTC, inclusive)", render_kw=DATE)


class GroupChoices(SelectMultipleField):
    """The policy's groups as check boxes (choices set per request)."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()

    def pre_validate(self, form: object) -> None:
        """Any group name may be sent: the user store judges it."""


class GroupsForm(FlaskForm):
    groups = GroupChoices("Groups", choices=[])
    other_groups = StringField(
        "Other groups (comma-separated)", render_kw={"placeholder": "e.g. practice-managers"}
    )


class PasswordForm(FlaskForm):
    password = PasswordField("New password", render_kw=NEW_PASSWORD)
    again = PasswordField("The same password again", render_kw=NEW_PASSWORD)


class UserAddForm(GroupsForm):
    name = StringField("User name", render_kw={"autocomplete": "off", "spellcheck": False})
    password = PasswordField("Password", render_kw=NEW_PASSWORD)
    again = PasswordField("The same password again", render_kw=NEW_PASSWORD)
