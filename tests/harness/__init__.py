"""Helpers for tests that run real servers and talk to them over loopback sockets."""

from __future__ import annotations
