# SPDX-License-Identifier: Apache-2.0
"""What the built modules link. The front-ends' mod_cptoken.so: never
libcurl or simdjson. lib/cluster (the etcd client) needs both, and only
cptoken, the manager instance's mod_cptoken_manager.so and the tests may
pull them in (the Makefile keeps lib/cluster in an archive of its own); a
front-end's httpd child must not carry an HTTP client or a JSON parser for
etcd that it never uses."""

import subprocess

from conftest import MOD, MOD_MANAGER


def test_the_module_does_not_link_the_etcd_clients_libraries():
    needed = subprocess.run(["ldd", MOD], capture_output=True, text=True, check=True).stdout
    assert "libcrypto" in needed  # ldd did list the module's libraries
    assert "libcurl" not in needed
    assert "libsimdjson" not in needed


def test_only_the_managers_build_links_them():
    """mod_cptoken_manager.so, which the manager instance loads, writes to etcd (CPTokenEtcd)."""
    needed = subprocess.run(["ldd", MOD_MANAGER], capture_output=True, text=True, check=True).stdout
    assert "libcurl" in needed
    assert "libsimdjson" in needed
