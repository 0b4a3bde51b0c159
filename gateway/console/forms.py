"""The console's forms (Flask-WTF: every one carries the CSRF token).

The forms only carry what was typed: they have no validators of their own.
What is valid is decided by the services, which raise the errors WebDAV and
the command line give (``invalid-consent``, ``invalid-patient-id``...), and
the page shows that error's message in the form.
"""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField


class SignInForm(FlaskForm):
    user = StringField("User name", render_kw={"autocomplete": "username", "autofocus": True})
    password = PasswordField("Password", render_kw={"autocomplete": "current-password"})


class ActionForm(FlaskForm):
    """A button that changes something (sign out, ...): only the CSRF token."""
