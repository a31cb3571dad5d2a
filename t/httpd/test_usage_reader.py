# SPDX-License-Identifier: Apache-2.0
"""CPTokenUsageSocket: httpd's parent starts the usage reader that gives the
manager's children last used without their opening the usage store (which
httpd's group writes). It runs as nobody of the store's group, a child of
httpd's parent; its socket is 0600 and belongs to httpd's User; it answers
uses that httpd's children recorded, to that user only; it is started again
if it ends, replaced at a graceful restart and gone when httpd stops. A
socket directory others can write keeps it from starting (CPT0205), never
httpd."""

import hashlib
import os
import pwd
import grp
import signal
import stat
import subprocess
import time

from conftest import ALL_MPMS, PYTHON, assert_admitted, wait_until
from test_config import configtest
from test_last_used import location, usage

HTTPD_USER = pwd.getpwnam("www-data")
NOBODY = pwd.getpwnam("nobody")
WWW = grp.getgrnam("www-data")

# Asks the reader at argv[1] about the digests argv[2:]; prints the answer.
ASK = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("cannot connect:", e.strerror)
    sys.exit(3)
s.sendall("".join(d + "\n" for d in sys.argv[2:]).encode() + b"\n")
answer = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    answer += chunk
sys.stdout.write(answer.decode())
"""


def ask_as(user, sock, *digests):
    return subprocess.run(["runuser", "-u", user, "--", PYTHON, "-c", ASK, str(sock), *digests],
                          capture_output=True, text=True, timeout=30)


def readers_of(parent):
    """Pids of the processes named cptoken-usage whose parent is `parent`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("Name") == "cptoken-usage" and int(fields["PPid"]) == parent:
            out.append((int(entry), fields))
    return out


def gone(pid):
    """Whether `pid` has ended (reaped, or a zombie its new parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" in f.read()
    except FileNotFoundError:
        return True


def the_reader(srv):
    assert wait_until(lambda: len(readers_of(srv.proc.pid)) == 1, 5), readers_of(srv.proc.pid)
    return readers_of(srv.proc.pid)[0]


def socket_dir(srv, mode=0o755):
    d = srv.dir / "usage"
    d.mkdir(mode=mode)
    os.chmod(d, mode)
    return d


def body(sock, more=""):
    return f'CPTokenUsageSocket "{sock}"\n' + more + location(interval=0)


@ALL_MPMS
def test_reader_runs_as_nobody_of_the_store_group_and_answers_httpds_user(srv):
    token = srv.store.create("alice", "ci")
    sock = socket_dir(srv) / "usage.sock"
    srv.start(body(sock))
    pid, fields = the_reader(srv)
    assert fields["Uid"].split() == [str(NOBODY.pw_uid)] * 4, fields["Uid"]
    assert fields["Gid"].split() == [str(WWW.gr_gid)] * 4, fields["Gid"]
    assert fields["Groups"].split() == [str(WWW.gr_gid)], fields["Groups"]
    assert fields["NoNewPrivs"].strip() == "1"
    st = os.lstat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert st.st_uid == HTTPD_USER.pw_uid
    notice, = srv.lines(0, "CPT0205")
    assert f"pid {pid}" in notice and str(srv.store.path) in notice and "first CPTokenDB" in notice, notice

    # A use httpd's children recorded, as httpd's user (the manager's children) asks for it.
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    assert wait_until(lambda: usage(srv.store, "alice", "ci")[2] == 1, 5)
    digest = hashlib.sha512(token.encode()).hexdigest()
    never = hashlib.sha512(b"never used").hexdigest()
    p = ask_as("www-data", sock, digest, never)
    assert p.returncode == 0, p
    lines = p.stdout.splitlines()
    assert lines[-1] == "end" and len(lines) == 2, p.stdout
    fields = lines[0].split()
    assert fields[0] == digest[:32] and fields[2] == "1" and fields[3] == "127.0.0.1", lines[0]
    assert abs(int(fields[1]) - time.time()) < 60
    # Anyone else cannot even connect.
    p = ask_as("daemon", sock, digest)
    assert p.returncode == 3 and "Permission denied" in p.stdout, p


def test_reader_stops_with_httpd_and_its_socket_goes(srv):
    sock = socket_dir(srv) / "usage.sock"
    srv.start(body(sock))
    pid, _ = the_reader(srv)
    srv.stop()
    assert wait_until(lambda: gone(pid), 5), f"reader {pid} outlived httpd"
    assert not sock.exists()


def test_reader_dies_with_httpds_parent_even_killed(srv):
    """SIGKILL leaves httpd no cleanup: the reader goes with its parent all the same."""
    sock = socket_dir(srv) / "usage.sock"
    srv.start(body(sock))
    pid, _ = the_reader(srv)
    os.kill(srv.proc.pid, signal.SIGKILL)  # the parent alone (httpd's children are its process group too)
    srv.proc.wait(timeout=10)
    try:
        assert wait_until(lambda: gone(pid), 5), f"reader {pid} outlived httpd's parent"
    finally:
        try:
            os.killpg(srv.proc.pid, signal.SIGKILL)  # httpd's children, left without their parent
        except ProcessLookupError:
            pass
        srv.proc = None
        srv.stdout.close()


@ALL_MPMS
def test_graceful_restart_replaces_the_reader(srv):
    token = srv.store.create("alice", "ci")
    sock = socket_dir(srv) / "usage.sock"
    srv.start(body(sock))
    old, _ = the_reader(srv)
    srv.graceful()
    assert wait_until(lambda: [p for p, _ in readers_of(srv.proc.pid)] not in ([], [old]), 10), \
        readers_of(srv.proc.pid)
    assert wait_until(lambda: gone(old), 5)
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    p = ask_as("www-data", sock, hashlib.sha512(token.encode()).hexdigest())
    assert p.returncode == 0 and p.stdout.splitlines()[-1] == "end", p


@ALL_MPMS
def test_reader_that_ends_is_started_again(srv):
    srv.allow("CPT0205")
    sock = socket_dir(srv) / "usage.sock"
    srv.start(body(sock))
    old, _ = the_reader(srv)
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: [p for p, _ in readers_of(srv.proc.pid) if p != old], 10), "not started again"
    warning = [line for line in srv.lines(0, "CPT0205") if "[cptoken:warn]" in line]
    assert warning and f"(pid {old}) was killed by signal 9: starting it again" in warning[0], warning
    p = ask_as("www-data", sock, hashlib.sha512(b"x").hexdigest())
    assert p.returncode == 0 and p.stdout == "end\n", p


def test_socket_directory_others_can_write_keeps_the_reader_from_starting_not_httpd(srv):
    srv.allow("CPT0205")
    token = srv.store.create("alice", "ci")
    sock = socket_dir(srv, 0o1777) / "usage.sock"
    srv.start(body(sock))
    assert_admitted(srv.get(auth=f"cpanel alice:{token}"))
    assert readers_of(srv.proc.pid) == []
    error, = srv.lines(0, "CPT0205")
    assert "[cptoken:error]" in error and "writable by no one else" in error and "unavailable" in error, error
    assert not sock.exists()


def test_usage_socket_is_main_server_config_only(srv):
    sock = socket_dir(srv) / "usage.sock"
    rc, out = configtest(srv, f'<VirtualHost 127.0.0.1:80>\n    CPTokenUsageSocket "{sock}"\n</VirtualHost>\n')
    assert rc != 0 and "CPTokenUsageSocket" in out, out
    rc, out = configtest(srv, f'CPTokenUsageSocket "{sock}"\n')
    assert rc == 0, out
