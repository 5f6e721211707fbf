"""The fault tests' launcher (tests/system/fault_launcher.py): its fault file, and a hook that
is in place only while the launcher runs."""
import pytest

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
    spawn = ReliableEventHandler._spawn
    with failing_handlers(HandlerFaults(None)):
        assert ReliableEventHandler._spawn is not spawn
    assert ReliableEventHandler._spawn is spawn
