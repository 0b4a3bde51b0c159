"""The console's forms (Flask-WTF: every one carries the CSRF token).

The forms only carry what was typed: they have no validators of their own.
What is valid is decided by the services, which raise the errors WebDAV and
the command line give (``invalid-consent``, ``invalid-patient-id``...), and
the page shows that error's message in the form.  Field names follow the
command line's options (``clindav consent add --given-by ...``).
"""

from __future__ import annotations

from collections.abc import Iterable

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    HiddenField,
    PasswordField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.widgets import CheckboxInput, DateInput, ListWidget

from gateway.records.consent import GIVEN_BY, METHODS, SCOPES

# A select's first, empty choice: nothing is chosen until the user chooses.
CHOOSE = SelectChoice("", "choose...")


def options(values: Iterable[str]) -> list[SelectChoice]:
    """Choices shown as they are sent (each value its own label)."""
    return [SelectChoice(value) for value in values]


class SignInForm(FlaskForm):
    user = StringField("User name", render_kw={"autocomplete": "username", "autofocus": True})
    password = PasswordField("Password", render_kw={"autocomplete": "current-password"})


class ActionForm(FlaskForm):
    """A button that changes something (sign out, ...): only the CSRF token."""


class Checkboxes(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class PatientForm(FlaskForm):
    patient = StringField("Patient", render_kw={"autocomplete": "off", "spellcheck": "false"})


class ConsentForm(FlaskForm):
    """Every field of ``clindav consent add``."""

    patient = StringField("Patient", render_kw={"autocomplete": "off", "spellcheck": "false"})
    scope = Checkboxes("Scopes", choices=options(SCOPES))
    given_by = SelectField("Given by", choices=[CHOOSE, *options(GIVEN_BY)])
    given_by_name = StringField("Name of who consented (when not the patient)")
    method = SelectField("Method", choices=[CHOOSE, *options(METHODS)])
    form = StringField("Reference to the stored consent form")
    intimate = BooleanField("Intimate images are allowed")
    dob = StringField("Date of birth", widget=DateInput())
    valid_until = StringField(
        "Valid until (the consent ends at the start of that day)", widget=DateInput()
    )
    recorded_by = StringField("Recorded by")
    note = TextAreaField("Note")
    back = HiddenField()


class WithdrawForm(FlaskForm):
    """``clindav consent withdraw ID --scope ...``; the signed-in user withdraws."""

    scope = Checkboxes("Scopes to withdraw", choices=options(SCOPES))
    note = StringField("Note")


class CopyForm(FlaskForm):
    """A copy into another share (referrals, teaching), as a WebDAV COPY."""

    share = SelectField("Copy to", choices=[])
    name = StringField("Name there", render_kw={"spellcheck": "false"})
