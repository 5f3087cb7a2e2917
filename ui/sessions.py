"""Per-user view state kept on the server, keyed by the browser session: never shared between users, bounded.

Each tab stores what its views read (e.g. an AttentionSession) under (session hash, tab name); the least recently
used entries are dropped past ``capacity`` so idle users cannot hold memory forever.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import gradio as gr


class SessionStore:
    """A small LRU map from (session hash, key) to a user's view state."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _id(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "local"

    def put(self, request: gr.Request | None, key: str, value: Any) -> None:
        with self._lock:
            self._items[(self._id(request), key)] = value
            self._items.move_to_end((self._id(request), key))
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def peek(self, request: gr.Request | None, key: str) -> Any:
        """The user's stored value, or None (for events that should do nothing before a first analysis)."""
        with self._lock:
            return self._items.get((self._id(request), key))

    def get(self, request: gr.Request | None, key: str, missing: str) -> Any:
        """The user's stored value, or a gr.Error with ``missing`` as the message."""
        with self._lock:
            value = self._items.get((self._id(request), key))
            if value is not None:
                self._items.move_to_end((self._id(request), key))
        if value is None:
            raise gr.Error(missing, print_exception=False)
        return value


STORE = SessionStore()
