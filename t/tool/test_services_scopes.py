# SPDX-License-Identifier: Apache-2.0
"""Services and scopes in the tool: `create`/`bulk-create` --service,
--scope, --safe-methods; `edit` --scope, --any-scope, --safe-methods,
--any-method (and their old names --read-only and --read-write, which
still work and say what they do not stop); `list --service`; what `list`,
`show` and `check` say. The JSON key stays `read_only`."""

import json

import pytest

from conftest import assert_accepted, assert_refusal, assert_refused, assert_usage_error


def test_new_tokens_are_cpanel_tokens_without_scopes(store):
    store.create("alice", "plain")
    [entry] = store.list_json()
    assert entry["service"] == "cpanel"
    assert entry["scopes"] is None and entry["read_only"] is False
    assert entry["limits"] is None and entry["imported_from"] is None


def test_create_with_service_scopes_and_safe_methods(store):
    created = store.create_json("alice", "reseller", "--service", "whm", "--scope", "/execute/Email/",
                                "--scope", "/json-api/cpanel", "--safe-methods")
    assert created["service"] == "whm"
    assert created["scopes"] == ["/execute/Email/", "/json-api/cpanel"]  # in the order given
    assert created["read_only"] is True
    shown = store.show_json("alice", "reseller")
    assert (shown["service"], shown["scopes"], shown["read_only"]) == ("whm", created["scopes"], True)
    details = dict(l.split(":", 1) for l in store.run("show", "alice", "reseller").out.splitlines())
    assert details["service"].strip() == "whm"
    assert details["scopes"].strip() == "/execute/Email/, /json-api/cpanel"
    assert details["safe methods only"].strip() == "yes"


@pytest.mark.parametrize("args", [
    ["--service", "WHM"], ["--service", "whostmgr"], ["--service", ""],
    ["--scope", "execute/Email"], ["--scope", "/a/../b"], ["--scope", "/a//b"], ["--scope", "/a?x=1"],
    ["--scope", "/a%2fb"], ["--scope", "/a\\b"], ["--scope", ""], ["--scope", "/./"], ["--scope", "/a;b"],
    ["--scope", "/a/..;/b"], ["--scope", "/\u00e9"],
])
def test_bad_service_or_scope_is_refused_and_nothing_made(store, args):
    assert_usage_error(store.run("create", "alice", "t", *args))
    assert store.list_json() == []


def test_too_many_scopes(store):
    args = [a for i in range(65) for a in ("--scope", f"/s{i}")]
    assert_usage_error(store.run("create", "alice", "t", *args))
    store.create("alice", "t", *args[:128])
    assert len(store.show_json("alice", "t")["scopes"]) == 64


def test_list_shows_service_and_filters(store):
    store.create("alice", "site")
    store.create("alice", "reseller", "--service", "whm")
    store.create("bob", "site")
    out = store.run("list").out.splitlines()
    assert out[0].split()[:3] == ["USER", "NAME", "SERVICE"]
    assert {tuple(l.split()[:3]) for l in out[1:]} == {("alice", "reseller", "whm"), ("alice", "site", "cpanel"),
                                                     ("bob", "site", "cpanel")}
    whm = json.loads(store.run("list", "--service", "whm", "--json").out)
    assert [(e["user"], e["name"]) for e in whm] == [("alice", "reseller")]
    cpanel = json.loads(store.run("list", "alice", "--service", "cpanel", "--json").out)
    assert [(e["user"], e["name"]) for e in cpanel] == [("alice", "site")]
    assert_usage_error(store.run("list", "--service", "both"))


def test_edit_scopes_and_safe_methods(store):
    token = store.create("alice", "t", "--scope", "/a")
    assert store.run("edit", "alice", "t", "--scope", "/b", "--scope", "/c/").rc == 0
    assert store.show_json("alice", "t")["scopes"] == ["/b", "/c/"]  # replaced, not added
    assert store.run("edit", "alice", "t", "--safe-methods").rc == 0
    entry = store.show_json("alice", "t")
    assert entry["read_only"] is True and entry["scopes"] == ["/b", "/c/"]
    assert store.run("edit", "alice", "t", "--any-scope").rc == 0
    entry = store.show_json("alice", "t")
    assert entry["scopes"] is None and entry["read_only"] is True
    assert store.run("edit", "alice", "t", "--any-method").rc == 0
    assert store.show_json("alice", "t")["read_only"] is False
    assert_accepted(store.check("alice", token))  # the token stays


@pytest.mark.parametrize("args", [
    ["--scope", "/a", "--any-scope"], ["--safe-methods", "--any-method"], ["--read-only", "--read-write"],
    ["--safe-methods", "--read-write"], ["--read-only", "--any-method"], ["--scope", "/a/./b"],
])
def test_edit_refuses_contradictions_and_bad_scopes(store, args):
    store.create("alice", "t", "--scope", "/keep", "--safe-methods")
    before = store.show_json("alice", "t")
    assert_usage_error(store.run("edit", "alice", "t", *args))
    assert store.show_json("alice", "t") == before


def test_edit_keeps_restrictions_it_is_not_asked_to_change(store):
    store.create("alice", "t", "--service", "whm", "--scope", "/x", "--safe-methods")
    assert store.run("edit", "alice", "t", "--name", "renamed", "--expires", "+30d", "--allow-ip", "10.0.0.0/8").rc == 0
    entry = store.show_json("alice", "renamed")
    assert (entry["service"], entry["scopes"], entry["read_only"]) == ("whm", ["/x"], True)


def test_rotate_keeps_service_and_scopes(store):
    store.create("alice", "t", "--service", "whm", "--scope", "/x", "--safe-methods")
    r = store.run("rotate", "alice", "t", "--json")
    assert r.rc == 0, r
    rotated = json.loads(r.out)
    assert (rotated["service"], rotated["scopes"], rotated["read_only"]) == ("whm", ["/x"], True)


def test_bulk_create_applies_restrictions_to_every_line(store):
    r = store.run("bulk-create", "--service", "whm", "--scope", "/execute/", "--safe-methods", "--json",
                  input="alice a\nbob b\n")
    assert r.rc == 0, r
    for entry in store.list_json():
        assert (entry["service"], entry["scopes"], entry["read_only"]) == ("whm", ["/execute/"], True)
    assert_usage_error(store.run("bulk-create", "--scope", "nope", input="carol c\n"))
    assert [e["user"] for e in store.list_json()] == ["alice", "bob"]


def test_check_names_service_and_scopes(store):
    whm = store.create("alice", "reseller", "--service", "whm", "--scope", "/execute/Email/", "--safe-methods")
    cpanel = store.create("alice", "site")
    r = store.check("alice", whm)
    assert_accepted(r)
    assert "service whm" in r.out and "scopes /execute/Email/" in r.out and "safe methods only" in r.out
    assert "service cpanel" in store.check("alice", cpanel).out
    # --service: as the cpanel or the whm scheme would decide.
    assert_accepted(store.run("check", "alice", "--service", "whm", input=whm + "\n"))
    assert_refused(store.run("check", "alice", "--service", "cpanel", input=whm + "\n"), "whm token")
    assert_refused(store.run("check", "alice", "--service", "whm", input=cpanel + "\n"), "cpanel token")
    assert_usage_error(store.run("check", "alice", "--service", "x", input=whm + "\n"))


def test_check_path_and_method(store):
    token = store.create("alice", "t", "--scope", "/execute/Email/", "--safe-methods")

    def check(*args):
        return store.run("check", "alice", *args, input=token + "\n")

    assert_accepted(check("--path", "/execute/Email/list_pops"))
    assert_accepted(check("--path", "/execute/Email/list_pops", "--method", "HEAD"))
    for path in ("/execute/EmailX", "/execute/Email/../Ftp", "/execute/Ftp/list"):
        r = check("--path", path)
        assert r.rc == 1 and r.out.startswith("forbidden:") and "outside the token's scopes" in r.out, r
    r = check("--path", "/execute/Email/add_pop", "--method", "POST")
    assert r.rc == 1 and "method not allowed for a safe-methods token" in r.out, r
    assert_usage_error(check("--method", "POST"))  # a method says nothing without a path
    assert_usage_error(check("--path", "relative"))


def test_old_tool_refuses_nothing_it_should_not(store):
    # A cpanel token without restrictions is what every token was before
    # services: the list shows it as such, and it is accepted everywhere.
    token = store.create("alice", "legacy")
    assert_accepted(store.run("check", "alice", "--service", "cpanel", input=token + "\n"))
    assert_accepted(store.run("check", "alice", "--path", "/anything", "--method", "DELETE", input=token + "\n"))


# The one line the old names print: what they are called now, and what they never stopped.
def assert_renamed_notice(err):
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("cptoken: ") and "--safe-methods" in line and "--any-method" in line, line
    assert "does not stop GET" in line and "UAPI" in line and "WHM API 1" in line, line


def test_old_names_still_work_and_say_what_they_do_not_stop(store):
    r = store.run("create", "alice", "old", "--read-only")
    assert r.rc == 0 and len(r.out.split()) == 1, r  # stdout: the token only
    assert_renamed_notice(r.err)
    assert store.show_json("alice", "old")["read_only"] is True
    r = store.run("bulk-create", "--read-only", input="alice bulk\n")
    assert r.rc == 0, r
    assert_renamed_notice(r.err)
    assert store.show_json("alice", "bulk")["read_only"] is True
    r = store.run("edit", "alice", "old", "--read-write")
    assert r.rc == 0, r
    assert_renamed_notice(r.err)
    assert store.show_json("alice", "old")["read_only"] is False
    r = store.run("edit", "alice", "old", "--read-only")
    assert r.rc == 0, r
    assert_renamed_notice(r.err)
    assert store.show_json("alice", "old")["read_only"] is True
    # The new names print nothing on stderr.
    for args in (["create", "alice", "new", "--safe-methods"], ["edit", "alice", "new", "--any-method"]):
        r = store.run(*args)
        assert r.rc == 0 and r.err == "", r


@pytest.mark.parametrize("command", ["create", "bulk-create", "edit"])
def test_help_says_what_safe_methods_does_not_stop(command, store):
    r = store.run(command, "--help")
    assert r.rc == 0
    help_text = " ".join(r.out.split())
    assert "--safe-methods" in help_text and "--read-only" not in help_text, r.out
    assert "GET, HEAD, OPTIONS" in help_text and "not GET calls that change state" in help_text, r.out
    if command == "edit":
        assert "--any-method" in help_text and "--read-write" not in help_text, r.out
