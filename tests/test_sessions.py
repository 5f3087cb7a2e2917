"""Per-user view state: isolated between sessions, bounded, with a clear message when missing."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from ui.sessions import SessionStore


def test_sessions_are_isolated_and_bounded():
    store = SessionStore(capacity=2)
    alice, bob, carol = (SimpleNamespace(session_hash=h) for h in ("a", "b", "c"))
    store.put(alice, "attention", {"who": "alice"})
    store.put(bob, "attention", {"who": "bob"})
    assert store.get(alice, "attention", "missing")["who"] == "alice"
    assert store.get(bob, "attention", "missing")["who"] == "bob"
    with pytest.raises(gr.Error, match="Press Analyse"):
        store.get(bob, "patches", "Press Analyse first.")
    store.put(carol, "attention", {"who": "carol"})  # evicts the least recently used: alice (bob was read last)
    with pytest.raises(gr.Error):
        store.get(alice, "attention", "gone")
    assert store.get(bob, "attention", "missing")["who"] == "bob"
    assert store.get(carol, "attention", "missing")["who"] == "carol"
