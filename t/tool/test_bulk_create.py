# SPDX-License-Identifier: Apache-2.0
"""cptoken bulk-create: many tokens in one transaction, all or none."""

import json

from conftest import TOKEN_RE, assert_accepted, assert_error, assert_refused, iso_to_epoch


def test_creates_every_line_and_prints_user_name_token(store):
    r = store.run("bulk-create", input="alice ci\n# a comment\n\nbob deploy +1d\nalice cd 2099-01-02\n")
    assert r.rc == 0, r
    lines = [line.split(" ") for line in r.out.splitlines()]
    assert [(u, n) for u, n, _ in lines] == [("alice", "ci"), ("bob", "deploy"), ("alice", "cd")]
    for user, _, token in lines:
        assert TOKEN_RE.match(token)
        assert_accepted(store.check(user, token))
    listed = {(e["user"], e["name"]): e for e in store.list_json()}
    assert set(listed) == {("alice", "ci"), ("bob", "deploy"), ("alice", "cd")}
    assert listed[("alice", "ci")]["expires"] is None
    assert listed[("alice", "cd")]["expires"] == "2099-01-02T00:00:00Z"
    assert iso_to_epoch(listed[("bob", "deploy")]["expires"]) > iso_to_epoch(listed[("bob", "deploy")]["created"])


def test_reads_a_file_and_applies_allow_ip(store, tmp_path):
    source = tmp_path / "tokens.txt"
    source.write_text("alice one\nalice two\n")
    r = store.run("bulk-create", source, "--allow-ip", "10.0.0.0/8", "--json")
    assert r.rc == 0, r
    created = json.loads(r.out)
    assert [c["name"] for c in created] == ["one", "two"]
    for c in created:
        assert c["allowed_ips"] == ["10.0.0.0/8"]
        assert_accepted(store.check("alice", c["token"], ip="10.1.2.3"))
        assert_refused(store.check("alice", c["token"], ip="192.0.2.1"), "not allowed")


def test_a_bad_line_writes_nothing_and_names_the_line(store):
    store.create("carol", "keep")
    before = store.list_json()
    r = store.run("bulk-create", input="alice ok\nBob bad\n")
    assert_error(r, 2)
    assert "line 2" in r.err
    r = store.run("bulk-create", input="alice ok\nalice ok2 yesterday\n")
    assert_error(r, 2)
    assert "line 2" in r.err
    r = store.run("bulk-create", input="alice ok too many fields\n")
    assert_error(r, 2)
    assert store.list_json() == before


def test_a_duplicate_name_writes_nothing(store):
    store.create("alice", "taken")
    before = store.list_json()
    r = store.run("bulk-create", input="alice fresh\nalice taken\n")
    assert_error(r, 1)
    assert store.list_json() == before
    r = store.run("bulk-create", input="bob twice\nbob twice\n")
    assert_error(r, 2)  # the input is wrong: the same name on two lines
    assert "line 2" in r.err and "line 1" in r.err, r.err
    assert store.list_json() == before


def test_many_tokens_in_one_go(store):
    r = store.run("bulk-create", input="".join(f"user{i % 7} t{i}\n" for i in range(5000)), timeout=120)
    assert r.rc == 0, r.err
    tokens = [line.split(" ")[2] for line in r.out.splitlines()]
    assert len(tokens) == len(set(tokens)) == 5000
    assert len(store.list_json()) == 5000
    assert_accepted(store.check("user3", tokens[3]))
    assert_refused(store.check("user3", tokens[4]), "another user")


def test_missing_file_is_a_refusal(store, tmp_path):
    assert_error(store.run("bulk-create", tmp_path / "nope.txt"), 1)
