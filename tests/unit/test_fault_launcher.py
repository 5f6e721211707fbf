"""The fault tests' launcher (tests/system/fault_launcher.py): its fault file, and a hook that
is in place only while the launcher runs."""
import pytest

from shared.messaging.batches import BatchEventHandler
from shared.messaging.handlers import ReliableEventHandler
from tests.system.fault_launcher import HandlerFaults, InjectedFault, failing_handlers


def test_a_listed_handler_fails_only_while_the_file_exists(tmp_path):
    path = tmp_path / "failing"
    faults = HandlerFaults(str(path))
    faults.check("loyalty.on_order_placed")  # no file: no fault
    path.write_text("loyalty.on_order_placed\nnotifications.on_order_placed\n")
    with pytest.raises(InjectedFault, match="loyalty.on_order_placed"):
        faults.check("loyalty.on_order_placed")
    faults.check("loyalty.on_order_refunded")  # not listed
    path.unlink()
    faults.check("loyalty.on_order_placed")


def test_off_without_a_file_name_reads_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loyalty.on_order_placed").write_text("loyalty.on_order_placed\n")
    HandlerFaults("").check("loyalty.on_order_placed")
    HandlerFaults(None).check("loyalty.on_order_placed")


def test_the_product_handler_is_itself_again_after_the_launcher():
    spawn, run = ReliableEventHandler._spawn, BatchEventHandler._run
    with failing_handlers(HandlerFaults(None)):
        assert ReliableEventHandler._spawn is not spawn
        assert BatchEventHandler._run is not run
    assert (ReliableEventHandler._spawn, BatchEventHandler._run) == (spawn, run)


class _Handler:
    """Enough of a batch handler for the hook: its key, and a run that would apply."""

    def handler_key(self) -> str:
        return "loyalty.on_order_placed"


def test_a_listed_batch_handler_answers_the_fault_instead_of_running(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(BatchEventHandler, "_run", lambda handler, part: ran.append(part))
    path = tmp_path / "failing"
    path.write_text("loyalty.on_order_placed\n")
    with failing_handlers(HandlerFaults(str(path))):
        error = BatchEventHandler._run(_Handler(), ["event"])
        assert isinstance(error, InjectedFault) and ran == []
        path.unlink()
        assert BatchEventHandler._run(_Handler(), ["event"]) is None and ran == [["event"]]
