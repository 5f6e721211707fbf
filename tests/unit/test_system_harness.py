"""The system harness's scale-out parts (tests/system/harness.py): instance names, the shared
database they need, and the round-robin load balancer before several HTTP doors
(tests/fakes/load_balancer.py)."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.fakes.load_balancer import RoundRobinBalancer
from tests.support import free_port
from tests.system.harness import SystemProcesses, instance_name, service_of


def test_the_first_instance_keeps_the_service_name():
    assert instance_name("loyalty", 1) == "loyalty"
    assert instance_name("loyalty", 2) == "loyalty@2"
    assert service_of("loyalty@2") == "loyalty"
    assert service_of("loyalty") == "loyalty"


@pytest.mark.parametrize("mongo_uri", ["mongomock://", ""])
def test_several_instances_refuse_databases_of_their_own(tmp_path, mongo_uri):
    procs = SystemProcesses("amqp://guest:guest@127.0.0.1:1/none", tmp_path,
                            {"MONGO_URI": mongo_uri})
    with pytest.raises(ValueError, match="share its database"):
        procs.start("loyalty", instances=2)
    with pytest.raises(ValueError, match="share its database"):
        procs.start("loyalty@2")
    assert procs.children == {}  # refused before any process started


class _Named(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = f"{self.server.name} {self.path} {body.decode()} {self.headers['X-Sig']}".encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("X-Upstream", self.server.name)
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def upstreams():
    servers = []
    for name in ("a", "b"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Named)
        server.name = name
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_balancer_hands_requests_to_each_upstream_in_turn_unchanged(upstreams):
    with RoundRobinBalancer(upstreams) as balancer:
        answers = [requests.post(f"{balancer.url}/hook/{i}", data=f"body{i}",
                                 headers={"X-Sig": f"s{i}"}, timeout=10) for i in range(4)]
    assert [a.status_code for a in answers] == [201] * 4
    assert [a.text for a in answers] == ["a /hook/0 body0 s0", "b /hook/1 body1 s1",
                                         "a /hook/2 body2 s2", "b /hook/3 body3 s3"]
    assert answers[1].headers["X-Upstream"] == "b"
    assert balancer.answered == {upstreams[0]: 2, upstreams[1]: 2}


def test_an_unreachable_upstream_answers_502(upstreams):
    down = f"http://127.0.0.1:{free_port()}"
    with RoundRobinBalancer([upstreams[0], down]) as balancer:
        first = requests.post(balancer.url + "/x", data="1", headers={"X-Sig": "1"}, timeout=10)
        second = requests.post(balancer.url + "/x", data="2", headers={"X-Sig": "2"}, timeout=10)
    assert (first.status_code, second.status_code) == (201, 502)
    assert balancer.answered == {upstreams[0]: 1, down: 0}
