# SPDX-License-Identifier: Apache-2.0
"""Ports for the servers the tests start (httpd, etcd, backends). Shared by
t/httpd and t/cluster (and what imports them: t/stress, t/leak,
bench/cluster_bench.py), which put t/ on sys.path for it.

A port the kernel hands out for bind(("127.0.0.1", 0)) comes from the
ephemeral range (32768-60999 by default), and is free only until the
socket closes: then another test worker's "free" port, or a client's
outgoing connection, can be the same one before httpd binds it, and the
test fails at start or, worse, talks to another worker's server. So each
process takes a block of ports below that range for itself, with a lock
file held until it exits, and hands its ports out one after the other."""

import fcntl
import os
import socket
import tempfile

FIRST, BLOCK, BLOCKS = 20000, 200, 60  # 20000-31999, under the ephemeral range
_LOCK_DIR = os.path.join(tempfile.gettempdir(), "cptoken-test-ports")

_block = None  # (the process that holds it, its first port, the lock file kept open)
_next = 0


def _take_block():
    global _block, _next
    os.makedirs(_LOCK_DIR, exist_ok=True)
    start = os.getpid() % BLOCKS  # processes started together try different blocks first
    for i in range(BLOCKS):
        n = (start + i) % BLOCKS
        f = open(os.path.join(_LOCK_DIR, f"{n}.lock"), "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _block, _next = (os.getpid(), FIRST + n * BLOCK, f), 0
        return
    raise RuntimeError(f"every block of test ports in {_LOCK_DIR} is held by a running process")


def _bindable(port):
    """Whether `port` is free on both 127.0.0.1 and ::1 (httpd's Listen and
    the shipped configs' `localhost` use both)."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port():
    """A TCP port free on both 127.0.0.1 and ::1 that no other process using
    this module hands out while this one runs."""
    global _next
    if _block is None or _block[0] != os.getpid():  # a forked child shares no block with its parent
        _take_block()
    first = _block[1]
    for _ in range(BLOCK):
        port = first + _next % BLOCK
        _next += 1
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port in {first}-{first + BLOCK - 1}")


def free_ports(count):
    """COUNT distinct ports, as free_port() gives them."""
    return [free_port() for _ in range(count)]
