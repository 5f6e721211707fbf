"""A capturing SMTP server: real SMTP on 127.0.0.1 (aiosmtpd), with faults switchable at runtime.

The notifications service sends mail with smtplib; its tests and benchmark talk to this server
instead of a mock, so every command, reply code and TLS handshake is the real protocol.

    with SmtpServer() as smtp:
        with smtplib.SMTP(smtp.host, smtp.port) as client:
            client.send_message(message)
        [mail] = smtp.wait_for(1)
        mail["Subject"], mail.envelope_from, mail.envelope_to

What a client sees (smtplib's exceptions; all faults are consumed in order, one per use):

- `refuse_connections(n)`: the next n connections get the greeting "421 4.3.2 ... Service not
  available" and are closed. `smtplib.SMTP(host, port)` (or `.connect()`) raises
  `SMTPConnectError` with `smtp_code == 421`: transient. With `how="drop"` the connection is
  closed without any greeting instead: smtplib raises `SMTPServerDisconnected` ("Connection
  unexpectedly closed"), also transient.
- `pause()` ... `resume()`: the server is down. It stops listening (a new connection fails at TCP
  level: `ConnectionRefusedError`, an `OSError`) and cuts the open sessions (a client holding a
  connection gets `SMTPServerDisconnected` on its next command). `resume()` listens again on the
  same port.
- `reject_recipient(address, code=550)`: RCPT TO for that address (case-insensitive) answers
  "550 5.1.1 <address>: Recipient address rejected: User unknown" (a 4xx code gives a "try
  again later" text instead). When every recipient of a message is refused smtplib raises
  `SMTPRecipientsRefused` (`.recipients == {address: (550, b"...")}`); when only some are,
  `send_message`/`sendmail` return the refused ones as a dict and the message goes to the rest.
- `fail_data(n, code=451)`: the next n messages are read completely, then refused after the
  final "." with "451 4.3.0 ... try again later" (5xx: "... rejected"). smtplib raises
  `SMTPDataError` (`smtp_code == 451`) and sends RSET, so the connection stays usable.

Security (`security=`): "none" (plain SMTP), "starttls" (STARTTLS offered and required before
MAIL: a client that skips it gets `SMTPSenderRefused` 530), "tls" (implicit TLS, what
`smtplib.SMTP_SSL` speaks). Both TLS modes use a self-signed certificate for "localhost" and
127.0.0.1 made once per process with the `openssl` command line; where it is missing they raise
`TlsUnavailable` with the reason (`tls_unavailable_reason()` tells beforehand), and tests skip.
Clients verify it with `smtp.client_ssl_context()`; code that makes its own
`ssl.create_default_context()` trusts it when SSL_CERT_FILE names `smtp.cert_path` (OpenSSL
reads that variable each time a default context is made), and a client connecting to
127.0.0.1 or "localhost" passes the host name check.

AUTH (`auth=("user", "secret")`): PLAIN and LOGIN are offered (with "starttls" only after
STARTTLS, as real servers do; with "none" in clear text, a test convenience), MAIL without a
successful AUTH answers 530 (`SMTPSenderRefused`), wrong credentials 535
(`SMTPAuthenticationError`). Without `auth` no AUTH is advertised: `login()` raises
`SMTPNotSupportedError`.

Speed: receiving a message appends its raw bytes and envelope, nothing more; parsing happens
when `messages` is read (about 0.3 ms a message). `keep_messages=False` keeps only the count
(`received`), for benchmarks: 10,000 messages over one connection cost the server about 4 s of
CPU on this 2-core machine (aiosmtpd itself; an smtplib client needs about as much again).

Eventlet: the test process is monkey-patched (tests/conftest.py). aiosmtpd's own Controller then
runs its asyncio loop in a green thread of the caller's hub: it works, but the running loop is
visible from every other greenlet (`asyncio.get_running_loop()` returns it, `asyncio.run()`
refuses to start) and the server only runs while the caller's greenlets yield. So the loop runs
in a real OS thread, with eventlet's *original* threading and socket modules
(`eventlet.patcher.original`) and an epoll selector over the original select module (see
`_selectors_over`). The two sides share only GIL-atomic structures (list append, deque pop, int
read) and nothing green is waited on across the two OS threads; start(), stop(), pause() and
resume() wait on real events, which holds the caller's hub for those few milliseconds. In a
process that is not patched (the benchmarks), the ordinary modules are used.
"""
from __future__ import annotations

import asyncio
import builtins
import importlib.util
import logging
import shutil
import selectors as selectors_
import socket as socket_
import ssl
import subprocess
import sys
import tempfile
import threading as threading_
import time
from collections import deque
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, NamedTuple

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Security = Literal["none", "starttls", "tls"]
SERVER_NAME = "localhost"
START_TIMEOUT = 5.0


class TlsUnavailable(RuntimeError):
    """No certificate could be made here (no `openssl` command), so no TLS mode."""


class CapturedMessage(EmailMessage):
    """A received message (parsed with `email.policy.default`, line ends as "\\n") and its envelope.

    Only the top-level message carries the envelope fields; its MIME parts are of this class too
    (the parser makes every part with one factory) and keep the empty defaults.
    """

    envelope_from: str = ""
    envelope_to: tuple[str, ...] = ()
    login: str | None = None  # the AUTH user of the session, when it authenticated
    tls: bool = False  # the session was encrypted (STARTTLS or implicit TLS)
    raw: bytes = b""  # exactly the DATA the client sent, dot-unstuffed


class _Received(NamedTuple):
    envelope_from: str
    envelope_to: tuple[str, ...]
    login: str | None
    tls: bool
    raw: bytes


class _Modules(NamedTuple):
    threading: ModuleType
    selectors: ModuleType
    socket: ModuleType


@lru_cache(maxsize=1)
def _unpatched_modules() -> _Modules:
    """threading, selectors and socket as the OS provides them, even after eventlet patched them."""
    if "eventlet" not in sys.modules:  # nothing can be patched; importing it costs 0.2 s
        return _Modules(threading_, selectors_, socket_)
    from eventlet import patcher
    return _Modules(
        patcher.original("threading") if patcher.is_monkey_patched("thread") else threading_,
        _selectors_over(patcher.original("select")) if patcher.is_monkey_patched("select")
        else selectors_,
        patcher.original("socket") if patcher.is_monkey_patched("socket") else socket_,
    )


def _selectors_over(real_select: ModuleType) -> ModuleType:
    """A private copy of the stdlib selectors module built on the real select module.

    `eventlet.patcher.original("selectors")` cannot give this: it re-imports selectors, whose
    `import select` then finds the module eventlet patched in place (green select(), epoll
    removed), so its DefaultSelector is a SelectSelector that fails on first use. Here the
    copy's own `__import__` hands it the real select module, and nothing global changes.
    """
    spec = importlib.util.find_spec("selectors")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)

    def import_(name: str, *args: Any, **kwargs: Any) -> Any:
        return real_select if name == "select" else builtins.__import__(name, *args, **kwargs)

    module.__dict__["__builtins__"] = {**vars(builtins), "__import__": import_}
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# Certificate (made once per process: an EC key takes a few milliseconds)
# --------------------------------------------------------------------------------------------

_CERT_DIR: tempfile.TemporaryDirectory[str] | None = None


@lru_cache(maxsize=1)
def _certificate() -> tuple[Path, Path] | str:
    """(cert, key) paths of a self-signed certificate for localhost/127.0.0.1, or why not."""
    global _CERT_DIR
    openssl = shutil.which("openssl")
    if openssl is None:
        return "no `openssl` command on PATH to make a self-signed certificate"
    _CERT_DIR = tempfile.TemporaryDirectory(prefix="fake-smtp-tls-")  # removed at exit
    cert, key = Path(_CERT_DIR.name) / "cert.pem", Path(_CERT_DIR.name) / "key.pem"
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
               "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
               "-subj", f"/CN={SERVER_NAME}",
               "-addext", f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1"]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        return f"`openssl req` could not make a certificate: {exc} {stderr.decode(errors='replace')}"
    return cert, key


def tls_unavailable_reason() -> str | None:
    """Why the TLS modes cannot run here, or None when they can."""
    made = _certificate()
    return made if isinstance(made, str) else None


# --------------------------------------------------------------------------------------------
# aiosmtpd plumbing
# --------------------------------------------------------------------------------------------

class _QuietLoginData(logging.Filter):
    """aiosmtpd 1.4.6 itself sets the deprecated Session.login_data on every successful AUTH, and
    logs a deprecation warning each time (on stderr where logging is not configured)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


_AIOSMTPD_LOG = logging.getLogger("mail.log")
if not any(isinstance(f, _QuietLoginData) for f in _AIOSMTPD_LOG.filters):
    _AIOSMTPD_LOG.addFilter(_QuietLoginData())


def _take(queue: deque[Any]) -> Any:
    """Pop one pending fault, or None; deque.popleft is atomic, so no lock across threads."""
    try:
        return queue.popleft()
    except IndexError:
        return None


class _Handler:
    """aiosmtpd hooks: envelope checks, faults and capture, on the server's loop thread."""

    def __init__(self, owner: "SmtpServer") -> None:
        self.owner = owner

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # with this hook aiosmtpd leaves it to us
        if self.owner._credentials is None:  # advertise AUTH only when there is an account
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        return responses

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        # Required AUTH is checked here rather than with aiosmtpd's auth_required, which warns on
        # every connection when AUTH may happen without TLS (our "none" mode allows it).
        if self.owner._credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        code = self.owner._rejected.get(address.lower())
        if code is not None:
            if code < 500:
                return f"{code} 4.2.0 <{address}>: Recipient address rejected: try again later"
            return f"{code} 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        code = _take(owner._data_failures)
        if code is not None:
            if code < 500:
                return f"{code} 4.3.0 Error: temporary failure, try again later"
            return f"{code} 5.7.1 Error: message rejected"
        if owner.keep_messages:
            transport = server.transport
            auth_data = session.auth_data
            login = getattr(auth_data, "login", None)
            owner._raw.append(_Received(
                envelope.mail_from or "", tuple(envelope.rcpt_tos),
                login.decode("utf-8", "replace") if isinstance(login, bytes) else login,
                transport is not None and transport.get_extra_info("ssl_object") is not None,
                envelope.original_content or b""))
        owner._count += 1  # only this thread writes it
        return "250 2.0.0 OK: queued"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        expected = self.owner._credentials
        if isinstance(auth_data, LoginPassword) and expected is not None:
            given = (auth_data.login.decode("utf-8", "replace"),
                     auth_data.password.decode("utf-8", "replace"))
            if given == expected:
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535 5.7.8


class _FakeSMTP(SMTP):
    """One session; adds connection-level faults and tracks open sessions for pause()."""

    def __init__(self, owner: "SmtpServer", handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls_upgrade = self.transport is not None  # called again after STARTTLS
        super().connection_made(transport)
        if not starttls_upgrade:
            self._owner._open.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._owner._open.discard(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        # aiosmtpd (pinned 1.4.6) sends its 220 greeting first thing in _handle_client; a refused
        # connection must see a 421 (or nothing) instead, so the refusal goes before it.
        self._owner._connections += 1
        how = _take(self._owner._refusals)
        if how is not None and self.transport is not None:
            if how == "421":
                await self.push(f"421 4.3.2 {SERVER_NAME} Service not available, "
                                "closing transmission channel")
                self.transport.close()
            else:
                self.transport.abort()
            return
        await super()._handle_client()


class _Controller(Controller):
    """aiosmtpd's Controller on a real OS thread with unpatched modules (see module doc)."""

    def __init__(self, owner: "SmtpServer", handler: _Handler, ssl_context: ssl.SSLContext | None,
                 **smtp_kwargs: Any) -> None:
        self._modules = _unpatched_modules()
        loop = asyncio.SelectorEventLoop(self._modules.selectors.DefaultSelector())
        super().__init__(handler, hostname="127.0.0.1", port=0, loop=loop, ssl_context=ssl_context,
                         server_hostname=SERVER_NAME, **smtp_kwargs)
        self._owner = owner
        # aiosmtpd made this Event with the (maybe green) threading module; it is set on the
        # loop's OS thread, so it must be a real one.
        self._factory_invoked = self._modules.threading.Event()
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._paused = False

    def _listen(self, port: int) -> Any:
        """A real (never green) listening socket; port 0 picks a free one."""
        sock_mod = self._modules.socket
        sock = sock_mod.socket(sock_mod.AF_INET, sock_mod.SOCK_STREAM)
        sock.setsockopt(sock_mod.SOL_SOCKET, sock_mod.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def factory(self) -> SMTP:
        return _FakeSMTP(self._owner, self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._listener,
                                       ssl=self.ssl_context)

    def start(self) -> None:
        """Controller.start with a real thread and real events; same checks, same errors."""
        assert self._thread is None, "SMTP server already running"
        ready = self._modules.threading.Event()
        self._thread = self._modules.threading.Thread(
            target=self._run, args=(ready,), name="fake-smtp", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            raise self._thread_exception or TimeoutError("fake SMTP server did not start")
        self._trigger_server()  # makes aiosmtpd build (and so check) one session
        if not self._factory_invoked.wait(START_TIMEOUT):
            raise TimeoutError("fake SMTP server started but does not answer")
        if self._thread_exception is not None:
            raise self._thread_exception

    def run_in_loop(self, work: Any) -> None:
        """Run `work()` (a plain function) on the loop's thread and wait until it has run."""
        done = self._modules.threading.Event()
        errors: list[BaseException] = []

        def call() -> None:
            try:
                work()
            except BaseException as exc:  # handed to the caller below
                errors.append(exc)
            finally:
                done.set()

        self.loop.call_soon_threadsafe(call)
        if not done.wait(START_TIMEOUT):
            raise TimeoutError("fake SMTP server's loop did not answer")
        if errors:
            raise errors[0]

    def cut_sessions(self) -> None:
        """Abort every open session (a client sees the connection reset)."""
        def cut() -> None:
            for session in list(self._owner._open):
                if session.transport is not None:
                    session.transport.abort()
        self.run_in_loop(cut)

    def pause(self) -> None:
        if self._paused:
            return
        self._paused = True

        def close() -> None:
            assert self.server is not None
            self.server.close()  # closes the listener only; open sessions go on
        self.run_in_loop(close)
        self.cut_sessions()

    def stop(self, no_assert: bool = False) -> None:
        """Cut open sessions first: aiosmtpd's stop would leave their sockets open, and a
        client holding one would wait for an answer that never comes."""
        if self._thread is not None:
            self.cut_sessions()
        super().stop(no_assert)

    def resume(self) -> None:
        if not self._paused:
            return
        self._listener = self._listen(self.port)  # SO_REUSEADDR: the same port right away
        done = self._modules.threading.Event()
        outcome: list[Any] = []

        def open_() -> None:
            task = self.loop.create_task(self._create_server())
            task.add_done_callback(lambda t: (outcome.append(t), done.set()))
        self.loop.call_soon_threadsafe(open_)
        if not done.wait(START_TIMEOUT):
            raise TimeoutError("fake SMTP server did not listen again")
        self.server = outcome[0].result()
        self._paused = False


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

class SmtpServer:
    """A capturing SMTP server on 127.0.0.1 on a free port (see the module doc)."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        security: Security = "none",
        auth: tuple[str, str] | None = None,
        keep_messages: bool = True,
        data_size_limit: int = 32 * 1024 * 1024,
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"security must be none, starttls or tls, not {security!r}")
        self.security: Security = security
        self.keep_messages = keep_messages
        self.data_size_limit = data_size_limit
        self._credentials = auth
        self._cert: tuple[Path, Path] | None = None
        if security != "none":
            made = _certificate()
            if isinstance(made, str):
                raise TlsUnavailable(f"security={security!r} needs a certificate: {made}")
            self._cert = made

        # Shared with the loop's thread; each is GIL-atomic in the way it is used.
        self._raw: list[_Received] = []
        self._count = 0
        self._connections = 0
        self._refusals: deque[str] = deque()
        self._data_failures: deque[int] = deque()
        self._rejected: dict[str, int] = {}
        self._open: set[_FakeSMTP] = set()  # touched only on the loop's thread

        self._parsed: list[CapturedMessage] = []  # caller side only
        self._controller: _Controller | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> "SmtpServer":
        if self._controller is not None:
            return self
        handler = _Handler(self)
        server_ctx = None
        if self._cert is not None:
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(*map(str, self._cert))
        self._controller = _Controller(
            self, handler,
            ssl_context=server_ctx if self.security == "tls" else None,
            tls_context=server_ctx if self.security == "starttls" else None,
            require_starttls=self.security == "starttls",
            authenticator=handler.authenticate,
            auth_require_tls=self.security == "starttls",
            ident="Woo Companion fake SMTP",
            data_size_limit=self.data_size_limit,
        )
        self._controller.start()
        self._connections = 0  # the start-up check's connection is not the caller's
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> "SmtpServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("the fake SMTP server is not running: call start()")
        return self._controller.port

    @property
    def cert_path(self) -> Path | None:
        """The self-signed certificate (PEM) of the TLS modes, to trust in a client."""
        return None if self._cert is None else self._cert[0]

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this server's certificate (and checks the name)."""
        if self._cert is None:
            raise RuntimeError("security='none' has no certificate")
        return ssl.create_default_context(cafile=str(self._cert[0]))

    # ---------------------------------------------------------------- what arrived

    @property
    def received(self) -> int:
        """Messages accepted (250 after DATA) since start or clear(), kept or not."""
        return self._count

    @property
    def connections(self) -> int:
        """Connections accepted since start (refused ones included), e.g. to check reuse."""
        return self._connections

    @property
    def messages(self) -> list[CapturedMessage]:
        """The accepted messages in arrival order, parsed on first read (empty if not kept)."""
        raws = self._raw[: self._count] if self.keep_messages else []
        parser = BytesParser(CapturedMessage, policy=policy.default)
        for item in raws[len(self._parsed):]:
            # SMTP carries CRLF; parsed with LF so get_content() reads like any Python string
            message = parser.parsebytes(item.raw.replace(b"\r\n", b"\n"))
            assert isinstance(message, CapturedMessage)
            message.envelope_from, message.envelope_to = item.envelope_from, item.envelope_to
            message.login, message.tls, message.raw = item.login, item.tls, item.raw
            self._parsed.append(message)
        return list(self._parsed)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[CapturedMessage]:
        """Wait until `count` messages have been accepted in all; return `messages`.

        Polls (a green sleep under eventlet, so the caller's other greenlets, e.g. the service
        sending, keep running); raises TimeoutError with what did arrive.
        """
        deadline = time.monotonic() + timeout
        while self._count < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"expected {count} messages within {timeout} s, "
                                   f"got {self._count}")
            time.sleep(0.002)
        return self.messages

    def clear(self) -> None:
        """Forget received messages (and reset the count); faults stay as they are."""
        self._raw.clear()
        self._parsed.clear()
        self._count = 0

    # ---------------------------------------------------------------- faults

    def refuse_connections(self, count: int, how: Literal["421", "drop"] = "421") -> None:
        """The next `count` connections get a 421 greeting ("drop": no greeting) and are closed."""
        if how not in ("421", "drop"):
            raise ValueError(f"how must be '421' or 'drop', not {how!r}")
        self._refusals.extend([how] * count)

    def reject_recipient(self, address: str, code: int = 550) -> None:
        """RCPT TO `address` (any case) answers `code` until accept_recipient(address)."""
        if not 400 <= code < 600:
            raise ValueError("a refusal code is 4xx (transient) or 5xx (permanent)")
        self._rejected[address.lower()] = code

    def accept_recipient(self, address: str) -> None:
        self._rejected.pop(address.lower(), None)

    def fail_data(self, count: int, code: int = 451) -> None:
        """The next `count` messages are refused with `code` after their DATA was sent."""
        if not 400 <= code < 600:
            raise ValueError("a refusal code is 4xx (transient) or 5xx (permanent)")
        self._data_failures.extend([code] * count)

    def pause(self) -> None:
        """The server goes down: new connections are refused (TCP), open sessions are cut."""
        self._running().pause()

    def resume(self) -> None:
        """Listen again on the same port (a tiny window exists in which another program could
        take it; on 127.0.0.1 with ephemeral ports that is not seen in practice)."""
        self._running().resume()

    def reset_faults(self) -> None:
        self._refusals.clear()
        self._data_failures.clear()
        self._rejected.clear()

    def _running(self) -> _Controller:
        if self._controller is None:
            raise RuntimeError("the fake SMTP server is not running: call start()")
        return self._controller

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self._controller is not None else "stopped"
        return f"<SmtpServer {where} security={self.security} received={self._count}>"
