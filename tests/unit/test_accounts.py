"""Ending a user's sessions (spawner.hub.accounts) on JupyterHub's real database model (SQLite in memory),
and the hub-process limits (spawner.hub.limits)."""

import pytest
from jupyterhub import orm
from tornado.httpserver import HTTPServer
from tornado.web import Application

from spawner.hub.accounts import end_sessions
from spawner.hub.limits import limit_request_bodies


@pytest.fixture
def db():
    session = orm.new_session_factory("sqlite:///:memory:")()
    yield session
    session.close()


def test_end_sessions_rotates_the_cookie_and_deletes_tokens_but_those_kept(db):
    ada, bob = orm.User(name="ada"), orm.User(name="bob")
    db.add_all([ada, bob, orm.OAuthClient(identifier="jupyterhub")])
    db.commit()
    cookie = ada.cookie_id
    tokens = {key: orm.APIToken.new(user=ada, session_id=session, note=key)
              for key, session in (("here", "this-browser"), ("there", "other-browser"), ("api", None),
                                   ("server", None))}
    bobs = orm.APIToken.new(user=bob, note="bob's")
    server = orm.APIToken.find(db, tokens["server"]).id
    assert end_sessions(db, ada, keep_session="this-browser", keep_tokens=frozenset({server})) == 2
    assert ada.cookie_id != cookie
    left = {t.note for t in ada.api_tokens}
    assert left == {"here", "server"}
    assert orm.APIToken.find(db, bobs) is not None  # another user's tokens are not touched
    assert end_sessions(db, ada) == 2 and ada.api_tokens == []


def test_request_bodies_are_limited_for_servers_made_after():
    try:
        assert limit_request_bodies("1M") == 2**20
        server = HTTPServer(Application())
        assert server.conn_params.max_body_size == 2**20
        assert server.max_buffer_size == 2**20 + 64 * 1024
    finally:
        HTTPServer.configure(None)
    assert HTTPServer(Application()).conn_params.max_body_size is None


def test_server_tokens_are_found_only_for_servers_that_have_one(db):
    from types import SimpleNamespace

    from spawner.hub.accounts import server_token_ids

    ada = orm.User(name="ada")
    db.add_all([ada, orm.OAuthClient(identifier="jupyterhub")])
    db.commit()
    token = orm.APIToken.new(user=ada, note="Server at /user/ada/")
    user = SimpleNamespace(spawners={"": SimpleNamespace(api_token=token), "x": SimpleNamespace(api_token="")})
    assert server_token_ids(db, user) == {orm.APIToken.find(db, token).id}


class FakeAuth:
    def __init__(self, claimed=()):
        self.claimed = set(claimed)

    def is_claimed(self, name, user=None):
        return name in self.claimed


def stand_in(name, pending=None):
    from types import SimpleNamespace

    spawner = SimpleNamespace(pending=pending, active=False)
    return SimpleNamespace(name=name, spawners={"": spawner}, admin=False, groups=[])


async def test_a_promotion_is_refused_for_a_claimed_or_busy_name_before_anything_changes(monkeypatch):
    from types import SimpleNamespace

    from tornado.web import HTTPError

    from spawner.hub import accounts

    ended = []

    async def end_everything(handler, user):
        ended.append(user.name)
        return {"stopped": [], "tokens": 0}

    monkeypatch.setattr(accounts, "end_everything", end_everything)
    log = SimpleNamespace(info=lambda *a: None)
    handler = SimpleNamespace(authenticator=FakeAuth({"ada"}), log=log, current_user=SimpleNamespace(name="admin"))
    done = []
    for users, status in (([stand_in("bob"), stand_in("ada")], 409), ([stand_in("cat", pending="spawn")], 400)):
        with pytest.raises(HTTPError) as e:
            await accounts.promote(handler, users, lambda: done.append(1))
        assert e.value.status_code == status
    assert done == [] and ended == []  # JupyterHub's handler never ran, no session ended

    await accounts.promote(handler, [stand_in("bob")], lambda: done.append(1))
    assert done == [1] and ended == ["bob"]
