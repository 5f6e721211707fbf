"""The shape of every API answer, attacked with requests an outsider can make: each carries
`X-Content-Type-Options: nosniff` (a browser must not read JSON or CSV as HTML), OPTIONS says
what a resource answers in `Allow` instead of a bare 405, and a request line too long for the
web server is refused as problem details like any other refusal."""
from __future__ import annotations

import json
import socket

import pytest
import requests
from eventlet.wsgi import MAX_REQUEST_LINE
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from services.gateway.app import GatewayApp
from services.gateway.auth import Authenticator
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes import build_routes
from services.gateway.routing import Router
from services.gateway.service import GatewayService
from tests.security.test_scopes import RecordingBackends
from tests.support import free_port


@pytest.fixture(scope="module")
def app() -> GatewayApp:
    return GatewayApp(Router(build_routes()), Authenticator(0), RateLimiter(10 ** 9),
                      max_body_bytes=1 << 20)


def answer(app: GatewayApp, method: str, path: str, key: str | None = "good", **options):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    environ = EnvironBuilder(path=path, method=method, headers=headers,
                             environ_base={"REMOTE_ADDR": "192.0.2.10"}, **options).get_environ()
    return app.handle(Request(environ), RecordingBackends({"good": ("admin",)}))


@pytest.mark.parametrize("method,path,key,status", [
    ("GET", "/api/v1/openapi.json", None, 200),
    ("GET", "/api/v1/customers", None, 401),
    ("GET", "/api/v1/customers", "bad", 401),
    ("GET", "/api/v1/nowhere", "good", 404),
    ("DELETE", "/api/v1/customers", "good", 405),
    ("GET", "/api/v1/customers/c1", "good", 404),  # the stand-in service knows no one
    ("GET", "/api/v1/customers?limit=0", "good", 400),
    ("OPTIONS", "/api/v1/customers", None, 204),
])
def test_every_answer_forbids_content_sniffing(app, method, path, key, status):
    response = answer(app, method, path, key)
    assert response.status_code == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_options_names_the_methods_a_resource_answers_and_needs_no_key(app):
    customer = answer(app, "OPTIONS", "/api/v1/customers/c1", key=None)
    assert customer.status_code == 204
    assert set(customer.headers["Allow"].split(", ")) == {"GET", "HEAD", "PATCH", "DELETE",
                                                          "OPTIONS"}
    assert customer.get_data() == b""
    unknown = answer(app, "OPTIONS", "/api/v1/nowhere", key=None)
    assert unknown.status_code == 404 and unknown.mimetype == "application/problem+json"


def test_a_wrong_method_names_the_allowed_ones(app):
    response = answer(app, "PUT", "/api/v1/customers")
    assert response.status_code == 405 and response.mimetype == "application/problem+json"
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD"}


@pytest.fixture
def gateway_url(services) -> str:
    """The gateway alone: what is tested here is answered before any other service is asked."""
    port = free_port()
    services.start(GatewayService, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}")
    return f"http://127.0.0.1:{port}"


def test_over_http_options_is_answered_by_the_gateway_not_refused_by_the_server(gateway_url):
    response = requests.options(gateway_url + "/api/v1/customers", timeout=10)
    assert response.status_code == 204
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_over_http_a_request_line_too_long_is_a_414_problem(gateway_url):
    host, port = gateway_url.removeprefix("http://").split(":")
    target = "/api/v1/customers?q=" + "x" * MAX_REQUEST_LINE
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    assert status_line.split(" ")[1] == "414"
    assert headers["content-type"] == "application/problem+json"
    assert headers["x-content-type-options"] == "nosniff"
    problem = json.loads(body)
    assert problem["status"] == 414 and problem["type"].endswith(":uri-too-long")
    assert problem["instance"] == "/api/v1/customers" and problem["request_id"]
    assert int(headers["content-length"]) == len(body)
