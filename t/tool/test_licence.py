# SPDX-License-Identifier: Apache-2.0
"""The project's licence, the Apache License 2.0: LICENSE at the root, the
package's debian/copyright in DEP-5 naming it, and an SPDX line in the first
lines of every source file (C++, Python, shell, Lua, JavaScript, the page's
HTML and CSS, the Makefile)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPDX = "SPDX-License-Identifier: Apache-2.0"
SKIP_DIRS = {".git", "build", "node_modules", "__pycache__", ".pytest_cache"}


def sources():
    for top, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in names:
            path = Path(top) / name
            if path.suffix in (".cpp", ".hpp", ".py", ".sh", ".lua", ".js", ".html", ".css") or name == "Makefile":
                yield path


def test_licence_file_is_the_apache_license_2():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_debian_copyright_names_it():
    text = (ROOT / "debian" / "copyright").read_text()
    assert text.startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    assert "\nLicense: Apache-2.0\n" in text and "/usr/share/common-licenses/Apache-2.0" in text
    assert "TODO" not in text


def test_every_source_file_has_an_spdx_line():
    files = list(sources())
    assert len(files) > 100, files
    missing = [str(p.relative_to(ROOT)) for p in files if SPDX not in "".join(p.read_text().splitlines(True)[:3])]
    assert not missing, f"no '{SPDX}' in the first 3 lines of: {missing}"
