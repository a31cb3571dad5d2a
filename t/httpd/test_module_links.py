# SPDX-License-Identifier: Apache-2.0
"""What the built module links: never libcurl. lib/cluster (the etcd client)
needs it, and only cptoken and the tests may pull it in (the Makefile keeps
lib/cluster in an archive of its own); an httpd child must not carry an HTTP
client it never uses."""

import subprocess

from conftest import MOD


def test_the_module_does_not_link_libcurl():
    needed = subprocess.run(["ldd", MOD], capture_output=True, text=True, check=True).stdout
    assert "libcrypto" in needed  # ldd did list the module's libraries
    assert "libcurl" not in needed
