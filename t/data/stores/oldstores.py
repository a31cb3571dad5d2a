# SPDX-License-Identifier: Apache-2.0
"""The stores made by earlier versions (t/data/stores/vN/, see make-v1.py),
for t/tool/test_old_stores.py and t/httpd/test_old_stores.py.

A test never opens the repository's copy: opening a store writes its lock
file. It copies tokens.mdb into a store of its own first."""

import json
import shutil
import struct
from pathlib import Path

import lmdb

HERE = Path(__file__).resolve().parent
# Every schema version kept as test data; each later one adds its directory.
VERSIONS = ("v1",)


def recorded(version):
    """tokens.json of `version`: the tokens, their checks and what they got."""
    return json.loads((HERE / version / "tokens.json").read_text())


def copy_store(version, directory):
    """Copies `version`'s tokens.mdb over the tokens.mdb of the store that
    `cptoken init` made in `directory`, keeping its mode and group: the
    restore that docs/cptoken.md gives for a backup."""
    target = Path(directory) / "tokens.mdb"
    assert target.is_file(), f"{directory} is not a store made by cptoken init"
    shutil.copyfile(HERE / version / "tokens.mdb", target)


def set_schema_version(directory, number):
    """Writes `number` as the store's meta schema_version, keeping the
    value's 24-byte Lightning Stream header (docs/store.md)."""
    env = lmdb.open(str(Path(directory) / "tokens.mdb"), subdir=False, max_dbs=8, max_readers=16384)
    try:
        with env.begin(write=True) as txn:
            meta = env.open_db(b"meta", txn=txn)
            value = txn.get(b"schema_version", db=meta)
            assert value is not None and len(value) == 28, value
            txn.put(b"schema_version", value[:24] + struct.pack(">I", number), db=meta)
    finally:
        env.close()
