"""The fault-injection hook the fault tests use (shared/faults.py)."""
import pytest

from shared.faults import HandlerFaults, InjectedFault


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


def test_off_by_default_reads_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loyalty.on_order_placed").write_text("loyalty.on_order_placed\n")
    HandlerFaults("").check("loyalty.on_order_placed")
    HandlerFaults(None).check("loyalty.on_order_placed")
