"""What every benchmark records beside its figures: the machine, the code measured, a log line."""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 30.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict:
    """CPU count and model, memory, Python, and the load average when the run began (a busy
    machine makes every figure worse, so the reader should know)."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except (OSError, ValueError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor() or "unknown",
        "memory_gib": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def source_state() -> dict:
    """Which code was measured: the commit, and files that differ from it (read-only git)."""
    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(["git", "--no-optional-locks", *argv], cwd=ROOT, timeout=10,
                                  capture_output=True, text=True)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"),
            "modified_files": status.splitlines() if status else []}


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads) from /proc, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- subprocesses ----------------------------------------------------------------------------
class Child:
    """A subprocess with its output in a log file; stop() always leaves it dead."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        # Own session: a Ctrl-C at the terminal reaches only the benchmark, which then stops
        # the child once (a second SIGINT would make the service kill its workers).
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> dict:
        started = time.monotonic()
        how = "exited"
        if self.alive():
            how = "SIGINT"
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                how = "SIGKILL after SIGINT timed out"
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return {"how": how, "returncode": self.proc.returncode,
                "seconds": round(time.monotonic() - started, 3)}

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def terminate(child: Child, timeout: float = 30.0) -> dict:
    """SIGTERM (the services' graceful stop: running workers finish), then Child.stop()'s
    escalation if it does not end in time (a second signal kills the workers, then SIGKILL)."""
    started = time.monotonic()
    if child.alive():
        child.proc.send_signal(signal.SIGTERM)
        try:
            child.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    graceful = not child.alive()
    result = child.stop()
    if graceful:
        result["how"] = "SIGTERM"
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def stop_children_and_vhosts(children: list[Child], vhosts: list[str], admin) -> None:
    """A benchmark's clean-up, on success or failure: never leave a child process or a
    RabbitMQ virtual host behind."""
    for child in children:
        if child.alive():
            log(f"stopping {child.name} (pid {child.pid})")
        try:
            terminate(child)
        except Exception as exc:  # never leave a child behind: last resort
            log(f"stopping {child.name} failed ({exc}); killing it")
            child.proc.kill()
    for vhost in vhosts:
        try:
            admin.delete_vhost(vhost)
            log(f"vhost {vhost} deleted")
        except Exception as exc:
            log(f"deleting vhost {vhost} failed: {exc}")


def interrupt_on_signals(abort=None) -> None:
    """SIGINT and SIGTERM (also when started in the background, where SIGINT is otherwise
    ignored) raise KeyboardInterrupt once, so the finally blocks stop children and delete
    vhosts; `abort` (a threading.Event) is set for threads to notice. A second signal only
    says the clean-up goes on (each child gets SIGTERM, SIGINT, then SIGKILL)."""
    interrupted = {"count": 0}

    def on_signal(signum, frame):  # noqa: ARG001
        interrupted["count"] += 1
        if abort is not None:
            abort.set()
        if interrupted["count"] == 1:
            raise KeyboardInterrupt
        log("still cleaning up (bounded: each child gets SIGTERM, SIGINT, then SIGKILL)")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def broker_unavailable(admin, host: str) -> bool:
    """True (and said) when RabbitMQ's management API cannot be used."""
    reason = admin.unavailable_reason()
    if reason:
        log(f"RabbitMQ management API at {host}:15672: {reason}")
    return bool(reason)


def write_results(results: dict, path: Path, status: int, render) -> None:
    """Stamp the end, write the JSON, and print the rendered figures of a completed run."""
    results["finished_at"] = datetime.now(timezone.utc).isoformat()
    results["machine"]["loadavg_at_end"] = list(os.getloadavg())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if status == 0:
        print(render(results))
    log(f"results written to {path}")


class DrainsConnection:
    """The consuming thread of a benchmark's kombu watcher: drains `self._conn` until
    `self._stop` is set, and keeps the first failure in `self.error` so the results report it
    rather than a silently short count; `close` stops it. Subclasses set `_conn`, `_stop`,
    `_thread` (running `_loop`) and `error`."""

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._conn.release()
        except Exception:  # closing after a failure: nothing more to report
            pass

    def _loop(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                self._conn.drain_events(timeout=0.2)
            except socket.timeout:
                continue
            except Exception as exc:  # reported in the results, never silently dropped
                if not self._stop.is_set():
                    self.error = f"{type(exc).__name__}: {exc}"
                return
