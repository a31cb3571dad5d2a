# SPDX-License-Identifier: Apache-2.0
"""A system user the tests need (the store owner a manager's children run as),
made if missing. Shared by t/httpd and t/cluster (and what imports them:
t/leak, bench/cluster_bench.py), which put t/ on sys.path for it."""

import pwd
import subprocess


def system_user(name):
    """The passwd entry of `name`, made with useradd --system if missing.
    Another test worker, or make demo, may make it at the same moment: then
    useradd fails and the user exists, which is all that is asked."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                              capture_output=True, text=True)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise AssertionError(f"cannot create the user {name}: {made.stderr.strip()}") from None
