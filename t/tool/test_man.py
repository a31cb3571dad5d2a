# SPDX-License-Identifier: Apache-2.0
"""The manual pages (`make man`, from docs/cptoken.md and docs/directives.md):
they render without a groff warning, and cptoken(8) covers every command
that `cptoken --help` lists."""

import re
import subprocess
from pathlib import Path

import pytest

from conftest import CPTOKEN, run

MAN = Path(CPTOKEN).parent / "man"


def render(page):
    path = MAN / page
    assert path.is_file(), f"{path} is missing (make man)"
    # -k: UTF-8 input, as man(1) reads it; -ww: every warning.
    p = subprocess.run(["groff", "-k", "-man", "-Tutf8", "-ww", str(path)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return re.sub(r".\x08", "", p.stdout)  # overstrike (bold) to plain text


@pytest.mark.parametrize("page,title", [("cptoken.8", "CPTOKEN(8)"), ("mod_cptoken.8", "MOD_CPTOKEN(8)")])
def test_page_renders_without_warnings(page, title):
    text = render(page)
    assert text.lstrip().startswith(title)
    version = (Path(__file__).resolve().parents[2] / "VERSION").read_text().strip()
    assert "NAME" in text and f"mod_cptoken {version}" in text


def test_cptoken_page_covers_every_command():
    r = run("--help")
    assert r.rc == 0
    commands = re.findall(r"^  ([a-z][a-z-]+)\s{2,}", r.out.split("Subcommands:")[1], flags=re.M)
    assert len(commands) >= 13, r.out
    text = render("cptoken.8")
    missing = [c for c in commands if f"cptoken [--db DIR] {c}" not in text]
    assert not missing, f"commands not in the SYNOPSIS of cptoken(8): {missing}"


@pytest.mark.parametrize("page", ["cptoken.8", "mod_cptoken.8"])
def test_page_reads_as_a_manual_not_as_rendered_markdown(page):
    """No link targets (`⟨#authtype-cpanel⟩`, `⟨../conf/cptoken.load⟩`: headings and source paths
    mean nothing in man), no table wider than the terminal: only code may be wider than 80 columns."""
    text = render(page)
    assert "⟨" not in text and "../conf/" not in text and ".md#" not in text, \
        [l for l in text.splitlines() if "⟨" in l or "../conf/" in l or ".md#" in l][:5]
    assert not re.search(r"[┌├└│]", text), "a table drawn by tbl"
    # Prose is indented 7 columns; code (an example, a log line) at least 11.
    wide = [l for l in text.splitlines() if len(l) > 80 and not l.startswith(" " * 11)]
    assert not wide, wide[:5]
