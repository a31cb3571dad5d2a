#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Markdown from docs/ made fit for a manual page (go-md2man reads stdout).

A man page is read on an installed system, in a terminal of 80 columns:
- a link shows its text only: its target is a heading of this page, another
  doc (installed under /usr/share/doc/libapache2-mod-cptoken/) or a file of
  the source tree, whose installed path is put in its place;
- a table becomes a definition list (tbl would draw it wider than the page):
  each row's first cell the term, the other cells, named by their headers,
  the definition.

  md-for-man.py < docs/directives.md
"""

import re
import sys

# Files of the source tree the docs link to, where the package installs them.
INSTALLED = {
    "conf/cptoken.load": "/etc/apache2/mods-available/cptoken.load",
    "conf/cptoken.conf": "/etc/apache2/mods-available/cptoken.conf",
    "conf/cpanel-2083.conf": "/usr/share/doc/libapache2-mod-cptoken/examples/cpanel-2083.conf",
    "conf/whm-2087.conf": "/usr/share/doc/libapache2-mod-cptoken/examples/whm-2087.conf",
    "conf/fail2ban-cptoken.conf": "/etc/fail2ban/filter.d/cptoken.conf",
}
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]*)\)")


def link_text(match):
    text, target = match.group(1), match.group(2)
    path = target.split("#", 1)[0].removeprefix("../")
    if path in INSTALLED:
        installed = INSTALLED[path]
        return installed if text.strip("`") in (path, target) else f"{text} ({installed})"
    return text


def cells(row):
    """The cells of a table row; `\\|` is a bar inside a cell."""
    row = row.strip().removeprefix("|")
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row)]


def table_as_list(rows):
    header, body = cells(rows[0]), [cells(r) for r in rows[2:]]
    out = []
    for row in body:
        term, rest = row[0], row[1:]
        if len(header) == 2 or not any(header[1:]):
            definition = "; ".join(c for c in rest if c)
        else:
            definition = "; ".join(f"{h}: {c}" for h, c in zip(header[1:], rest) if c)
        out += [term or "-", ": " + (definition or "-"), ""]
    return out


def without_links(text):
    """LINK replaced outside fenced code blocks; a link's text may span lines."""
    parts = re.split(r"(^```.*?^```[^\n]*$)", text, flags=re.M | re.S)
    return "".join(part if part.startswith("```") else LINK.sub(link_text, part) for part in parts)


def main():
    lines = without_links(sys.stdin.read()).split("\n")
    out, i, in_code = [], 0, False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-:| ]+\|\s*$", lines[i + 1]):
            end = i
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            out += table_as_list(lines[i:end])
            i = end
            continue
        out.append(line)
        i += 1
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
