"""One watcher per process: tells when the client of a watched WSGI request leaves.

Server-neutral: adapters hand it a connection's file descriptor (or, for servers that offer
only a callable, a probe) and what to do when the client is gone. One daemon thread, started on
the first registration and again in a forked child, blocks in ``epoll`` on the watched
connections, asking only for the peer's hang-up (``EPOLLRDHUP``, plus the ``EPOLLHUP`` and
``EPOLLERR`` a reset raises): bytes still arriving (a pipelined request, an upload the view has
not read) wake nothing, so there is no busy loop and no false alarm from them. A client that
half-closes its sending side (``shutdown(SHUT_WR)``) counts as gone, as nginx counts it.
Probes (waitress) are asked every :data:`PROBE_INTERVAL`, only while one is registered.

Only requests that registered pay: one ``epoll_ctl`` to add and one to remove. The thread
runs the ``on_gone`` functions itself, so they must be short (interrupt a query, cancel a
task, close an upstream connection).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable
from typing import Final

from ._compat import real_epoll, real_lock, real_poll, start_real_thread

logger = logging.getLogger(__name__)

#: How often a probe (a server's "is the client gone?" callable) is asked, in seconds.
PROBE_INTERVAL: Final = 0.02

_GONE: Final = (
    getattr(select, "EPOLLRDHUP", 0x2000)
    | getattr(select, "EPOLLHUP", 0x10)
    | getattr(select, "EPOLLERR", 0x8)
)
_POLL_GONE: Final = (
    getattr(select, "POLLRDHUP", 0x2000)
    | getattr(select, "POLLHUP", 0x10)
    | getattr(select, "POLLERR", 0x8)
)

OnGone = Callable[[], object]
Probe = Callable[[], bool]


def socket_gone(fd: int) -> bool:
    """Whether the peer of a connected socket hung up or reset, asked without blocking
    (``poll`` with a zero timeout; data waiting to be read is not an answer)."""
    poll = real_poll()
    if poll is None:
        return False
    try:
        poller = poll()
        poller.register(fd, _POLL_GONE)
        return any(events & _POLL_GONE for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


class _Watch:
    """One registration: remove it with :meth:`Watcher.remove`."""

    __slots__ = ("fd", "on_gone", "probe")

    def __init__(self, fd: int, on_gone: OnGone, probe: Probe | None) -> None:
        self.fd = fd
        self.on_gone = on_gone
        self.probe = probe


class Watcher:
    """The process's watcher (see the module docstring); use :func:`get_watcher`."""

    def __init__(self) -> None:
        self._lock = real_lock()
        self._fds: dict[int, _Watch] = {}
        self._probes: dict[int, _Watch] = {}
        self._epoll: select.epoll | None = None
        self._wake_r = self._wake_w = -1
        self._pid = os.getpid()

    @property
    def watched(self) -> int:
        """How many requests are watched now."""
        return len(self._fds) + len(self._probes)

    def _started(self) -> select.epoll:
        """The epoll object, and the thread, created on first use (under the lock)."""
        epoll = self._epoll
        if epoll is None:
            epoll = real_epoll()()
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_w, False)
            epoll.register(self._wake_r, select.EPOLLIN)
            self._epoll = epoll
            start_real_thread(self._run)
        return epoll

    def add(self, fd: int, on_gone: OnGone) -> _Watch | None:
        """Watch a connected socket; ``on_gone()`` runs on the watcher's thread once its
        client hangs up. None when the descriptor cannot be watched."""
        watch = _Watch(fd, on_gone, None)
        with self._lock:
            try:
                epoll = self._started()
                self._fds.pop(fd, None)  # a stale watch of a reused descriptor: replaced
                try:
                    epoll.register(fd, _GONE)
                except FileExistsError:  # still registered (the same connection, kept alive)
                    epoll.modify(fd, _GONE)
            except (OSError, ValueError):
                return None
            self._fds[fd] = watch
        return watch

    def add_probe(self, probe: Probe, on_gone: OnGone) -> _Watch | None:
        """Ask ``probe()`` every :data:`PROBE_INTERVAL`; ``on_gone()`` once it answers True."""
        watch = _Watch(-1, on_gone, probe)
        with self._lock:
            try:
                self._started()
            except OSError:
                return None
            first = not self._probes
            self._probes[id(watch)] = watch
        if first:
            self._wake()
        return watch

    def remove(self, watch: _Watch) -> None:
        """Stop watching (the response was delivered or failed); harmless twice."""
        with self._lock:
            if watch.probe is not None:
                self._probes.pop(id(watch), None)
                return
            if self._fds.get(watch.fd) is not watch:
                return
            del self._fds[watch.fd]
            if self._epoll is not None:
                # Already closed: the kernel dropped it.
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(watch.fd)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # the pipe is full: the thread wakes anyway
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # never expected; the requests stay unwatched, never broken
            logger.exception("django-sent-otel: the disconnect watcher stopped")

    def _loop(self) -> None:
        epoll = self._epoll
        assert epoll is not None
        wake = self._wake_r
        while self._pid == os.getpid():
            timeout = PROBE_INTERVAL if self._probes else -1
            try:
                events = epoll.poll(timeout)
            except InterruptedError:
                continue
            gone: list[_Watch] = []
            with self._lock:
                for fd, mask in events:
                    if fd == wake:
                        with contextlib.suppress(OSError):
                            os.read(wake, 512)
                        continue
                    watch = self._fds.get(fd)
                    # Recheck: an event gathered just before a descriptor was removed and
                    # reused by another connection must not report that one gone.
                    if watch is None or not (mask & _GONE) or not socket_gone(fd):
                        continue
                    del self._fds[fd]
                    with contextlib.suppress(OSError, ValueError):
                        epoll.unregister(fd)
                    gone.append(watch)
                probes = list(self._probes.values())
            for watch in probes:
                try:
                    if watch.probe is not None and watch.probe():
                        with self._lock:
                            if self._probes.pop(id(watch), None) is not None:
                                gone.append(watch)
                except Exception:  # a probe that fails is a request no longer watched
                    with self._lock:
                        self._probes.pop(id(watch), None)
            for watch in gone:
                try:
                    watch.on_gone()
                except Exception:
                    logger.exception("django-sent-otel: reporting a client that left failed")


_watcher: Watcher | None = None
_create_lock = threading.Lock()


def get_watcher() -> Watcher:
    """This process's watcher (a new one in a forked child)."""
    watcher = _watcher
    if watcher is not None:
        return watcher
    return _create()


def _create() -> Watcher:
    global _watcher
    with _create_lock:
        if _watcher is None:
            _watcher = Watcher()
        return _watcher


def _forked() -> None:
    """In a forked child the parent's thread does not exist and its connections are not the
    child's: forget the watcher (its descriptors are closed), a new one starts on demand."""
    global _watcher, _create_lock
    old, _watcher = _watcher, None
    _create_lock = threading.Lock()
    if old is not None and old._epoll is not None:
        for fd in (old._wake_r, old._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        old._epoll.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
