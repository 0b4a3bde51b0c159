"""A local HTTP server that answers as the GOV.UK Notify API does, for the tests.

It checks what the real service checks before sending: the JWT of the
``Authorization: Bearer`` header, signed with the API key's secret and issued
by its service id (verified with the Notify client's own ``decode_jwt_token``,
the code the service runs), the template id, and the address (a UK mobile
number, an e-mail address); it answers 201 with the notification's JSON, or
the service's error JSON (``{"status_code": 400, "errors": [{"error":
"ValidationError", "message": "phone_number Not a UK mobile number"}]}``).
Every request it accepted is kept in ``received``.  Nothing leaves the machine.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from notifications_python_client.authentication import decode_jwt_token, get_token_issuer
from notifications_python_client.errors import TokenError

UK_MOBILE = re.compile(r"(?:\+44|0044|0)7\d{9}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@dataclass
class NotifyServer:
    sms_template: str = field(default_factory=lambda: str(uuid.uuid4()))
    email_template: str = field(default_factory=lambda: str(uuid.uuid4()))
    service_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    secret: str = field(default_factory=lambda: str(uuid.uuid4()))
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)

    @property
    def api_key(self) -> str:
        return f"clindav_test-{self.service_id}-{self.secret}"

    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"notify": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, headers: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        problem = self._auth_problem(headers.get("Authorization", ""))
        if problem:
            return 403, _errors(403, "AuthError", problem)
        kind = {"/v2/notifications/sms": "sms", "/v2/notifications/email": "email"}.get(path)
        if kind is None:
            return 404, _errors(404, "NotFound", "Not found")
        template = self.sms_template if kind == "sms" else self.email_template
        if body.get("template_id") != template:
            return 400, _errors(400, "BadRequestError", "Template not found")
        address_key, pattern = (
            ("phone_number", UK_MOBILE) if kind == "sms" else ("email_address", EMAIL)
        )
        address = re.sub(r"[\s()-]", "", str(body.get(address_key, "")))
        if not pattern.fullmatch(address):
            what = "Not a UK mobile number" if kind == "sms" else "Not a valid email address"
            return 400, _errors(400, "ValidationError", f"{address_key} {what}")
        notification = str(uuid.uuid4())
        self.received.append({"kind": kind, **body, "id": notification})
        return 201, {
            "id": notification,
            "reference": body.get("reference"),
            "content": {
                "body": json.dumps(body.get("personalisation", {})),
                "from_number": "GOVUK",
            },
            "uri": f"https://api.notifications.service.gov.uk/v2/notifications/{notification}",
            "template": {
                "id": template,
                "version": 1,
                "uri": "https://api.notifications.service.gov.uk/v2/template/" + template,
            },
        }

    def _auth_problem(self, header: str) -> str | None:
        if not header.startswith("Bearer "):
            return "Unauthorized: authentication token must be provided"
        token = header[len("Bearer ") :]
        try:
            if get_token_issuer(token) != self.service_id:
                return "Invalid token: service not found"
            decode_jwt_token(token, self.secret)
        except TokenError as exc:
            return exc.message
        return None


def _errors(status: int, error: str, message: str) -> dict[str, Any]:
    return {"status_code": status, "errors": [{"error": error, "message": message}]}


class _Handler(BaseHTTPRequestHandler):
    notify: NotifyServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        status, answer = self.notify.answer(self.path, self.headers, body)
        if status >= 400:
            self.notify.refused.append({"path": self.path, "status": status, **answer})
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass
