"""A private RabbitMQ node for tests that stop the broker, so the machine's shared one is left
alone (other engineers and CI's other tests use it).

The node runs the installed RabbitMQ (`rabbitmq-server`) as a child of the test, with every
file in a temporary directory: its own node name, AMQP, distribution and management ports,
Mnesia and log directories, enabled-plugins file, config file, and Erlang cookie (HOME points
into the directory, so the server and our `rabbitmqctl` calls share a cookie of their own and
never touch the user's ~/.erlang.cookie). `stop_app`/`start_app` take the broker away and bring
it back, as an operator's broker restart does; `close()` stops the node and deletes the
directory, whatever happened before.

    with PrivateBroker.start() as broker:
        broker.amqp_uri("/")            # amqp://guest:guest@127.0.0.1:<port>/
        broker.stop_app(); broker.start_app()
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import requests

from tests.support import free_port

# Debian and Ubuntu wrap the scripts in /usr/sbin with `su rabbitmq` when run as root; the real
# scripts live here. Elsewhere (generic unix tarball, Homebrew) the scripts on PATH are the real ones.
_LIB_BIN = Path("/usr/lib/rabbitmq/bin")


def _script(name: str) -> str:
    direct = _LIB_BIN / name
    if direct.exists():
        return str(direct)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (RabbitMQ is needed for this test)")
    return found


def available() -> str | None:
    """Why a private node cannot be started here, or None when it can."""
    try:
        _script("rabbitmq-server")
        _script("rabbitmqctl")
    except FileNotFoundError as exc:
        return str(exc)
    return None


class PrivateBroker:
    """One RabbitMQ node of our own; see the module doc."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.name = f"companion-fault-{uuid.uuid4().hex[:8]}@localhost"
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.management_port = free_port()
        self.proc: subprocess.Popen | None = None
        self._app_stopped = False
        self._log = None
        (base / "home").mkdir()
        (base / "mnesia").mkdir()
        (base / "log").mkdir()
        (base / "rabbitmq-env.conf").write_text("")  # not the system's (its NODENAME)
        (base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (base / "rabbitmq.conf").write_text(
            f"management.tcp.port = {self.management_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            # Keep the node up however full the test machine's disk is.
            "disk_free_limit.absolute = 1MB\n"
        )
        self.env = {
            **os.environ,
            "HOME": str(base / "home"),  # the Erlang cookie is created and read here
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "node.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    # -- life -------------------------------------------------------------------------------
    @classmethod
    def start(cls, timeout: float = 120.0) -> "PrivateBroker":
        broker = cls(Path(tempfile.mkdtemp(prefix="companion-rabbit-")))
        try:
            broker._boot(timeout)
        except BaseException:
            broker.close()
            raise
        return broker

    def _boot(self, timeout: float) -> None:
        self._log = open(self.base / "server.out", "wb")
        self.proc = subprocess.Popen([_script("rabbitmq-server")], env=self.env, cwd=self.base,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.await_startup(timeout)

    def await_startup(self, timeout: float = 120.0) -> None:
        """`rabbitmqctl await_startup`, asked again while the node has not yet registered with
        epmd (it answers "not running" at once until then)."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.ctl("await_startup", "--timeout", str(max(1, int(deadline - time.monotonic()))),
                            timeout=timeout + 10, check=False)
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the private broker did not start: {done.stdout}{done.stderr}"
                                   f"\n{self.tail()}")
            time.sleep(1)
        self.wait_management(max(10.0, deadline - time.monotonic()))

    def ctl(self, *argv: str, timeout: float = 60.0, check: bool = True
            ) -> subprocess.CompletedProcess:
        """`rabbitmqctl -n <node> ...` with the node's own cookie."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the private broker exited ({self.proc.returncode}):\n{self.tail()}")
        done = subprocess.run([_script("rabbitmqctl"), "-n", self.name, *argv], env=self.env,
                              cwd=self.base, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(argv)} failed ({done.returncode}): "
                               f"{done.stdout}{done.stderr}\n{self.tail()}")
        return done

    def stop_app(self) -> None:
        """The broker goes away (every connection closed, the ports stop answering); the Erlang
        node stays up, so `start_app` brings the same broker back with its durable queues."""
        self._app_stopped = True
        self.ctl("stop_app")

    def start_app(self, timeout: float = 120.0) -> None:
        self.ctl("start_app", timeout=timeout)
        self.await_startup(timeout)
        self._app_stopped = False

    def app_running(self) -> bool:
        """False between our stop_app and start_app."""
        return not self._app_stopped

    def wait_management(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.management_url}/api/overview", auth=("guest", "guest"),
                                timeout=3).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the private broker's management API did not answer:\n{self.tail()}")

    def close(self) -> None:
        """Stop the node and delete its directory (always; a stuck node is killed)."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    self.ctl("stop", timeout=60, check=False)
                    self.proc.wait(30)
                except (subprocess.TimeoutExpired, RuntimeError, OSError):
                    pass
                if self.proc.poll() is None:  # the whole session: the shell script and beam
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self.proc.wait(10)
        finally:
            if self._log is not None:
                self._log.close()
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "PrivateBroker":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- addresses --------------------------------------------------------------------------
    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def amqp_uri(self, vhost: str = "/") -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/{urllib.parse.quote(vhost, safe='')}"

    def tail(self, lines: int = 30) -> str:
        out = []
        for path in [self.base / "server.out", *sorted((self.base / "log").glob("*.log"))]:
            try:
                out.extend(path.read_text(errors="replace").splitlines()[-lines:])
            except OSError:
                pass
        return "\n".join(out[-lines:])
