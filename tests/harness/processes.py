"""Processes and sockets of a running server, read from Linux ``/proc``."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc/<pid>/task/*/children``)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return sorted(set(found))


def _tcp_inode(local_port: int, remote_port: int) -> int | None:
    """Inode of the IPv4 TCP socket ``127.0.0.1:local_port <-> *:remote_port``."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], int(parts[9])
            if int(local.split(":")[1], 16) == local_port and (
                int(remote.split(":")[1], 16) == remote_port and inode
            ):
                return inode
    return None


def socket_owner(client: socket.socket, server_port: int, pids: Iterable[int]) -> int | None:
    """Which of ``pids`` holds the server side of the client's connection."""
    inode = _tcp_inode(server_port, client.getsockname()[1])
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except (FileNotFoundError, PermissionError):
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None
