"""Tables in docs/ that are generated from the code (the event catalogue, the settings).

Each lives between a start and an end marker in its page; regenerating rewrites only what is
between them, so the prose around a table stays hand-written, and a test compares the two.
"""
from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def held_block(text: str, start: str, end: str) -> str:
    """The marked block of `text`, markers included; ValueError when a marker is missing."""
    if start not in text or end not in text:
        raise ValueError(f"the markers {start!r} and {end!r} are not both in the page")
    return text[text.index(start):text.index(end) + len(end)]


def rewrite_block(page: Path, start: str, end: str, block: str) -> bool:
    """Put `block` (markers included) in place of the marked block of `page`; True if it changed."""
    text = page.read_text()
    held = held_block(text, start, end)
    if held == block:
        return False
    page.write_text(text.replace(held, block, 1))
    return True
