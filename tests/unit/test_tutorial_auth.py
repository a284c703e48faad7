"""The tutorial login, with the real TutorialAuthenticator and its real password store (a dbm file
in tmp_path); only the request handler is a stand-in (it answers find_user from a dict)."""

from types import SimpleNamespace

import pytest
from traitlets.config import Config

from spawner.core.config import StackhubConfig
from spawner.hub.apply import HubPaths, apply_config
from spawner.hub.tutorial_auth import TutorialAuthenticator
from spawner.core.usernames import normalize, refusal

ROOM = "room-code-4711"
ADMIN_SECRET = "admin-secret-" + "x" * 40


class Handler:
    def __init__(self, users=None):
        self.users = users or {}
        self.custom_login_error = ""

    def find_user(self, name):
        return self.users.get(name)


def staff(admin=False, groups=()):
    return SimpleNamespace(admin=admin, groups=[SimpleNamespace(name=g) for g in groups])


@pytest.fixture
def auth(tmp_path):
    for name, value in (("shared-password", ROOM), ("admin-password", ADMIN_SECRET),
                        ("proxy-token", "p" * 32), ("admin-token", "a" * 32)):
        (tmp_path / name).write_text(value)
    c = apply_config(Config(), StackhubConfig(), HubPaths(state=tmp_path, secrets=tmp_path))
    c.TutorialAuthenticator.admin_users = {"admin"}
    return TutorialAuthenticator(config=c)


async def login(auth, name, password, code="", handler=None):
    handler = handler or Handler()
    result = await auth.authenticate(handler, {"username": name, "password": password, "otp": code})
    return result, handler.custom_login_error


async def test_room_code_claims_a_free_name_then_only_its_password_opens_it(auth):
    assert await login(auth, "ada", "ada-own-pw", ROOM) == ("ada", "")
    assert await login(auth, "ada", "ada-own-pw") == ("ada", "")
    # the room code, alone or as the password, never opens a claimed name
    name, error = await login(auth, "ada", ROOM, ROOM)
    assert name is None and "Wrong password for ada" in error
    name, error = await login(auth, "ada", "guess", ROOM)
    assert name is None


async def test_same_name_in_other_spellings_is_the_same_claimed_account(auth):
    await login(auth, "ada", "ada-own-pw", ROOM)
    for spelling in ("ADA", " Ada ", "\uff41da"):  # fullwidth a normalises to a (NFKC)
        name, error = await login(auth, spelling, "attacker-pw", ROOM)
        assert name is None and "Wrong password for ada" in error, spelling


async def test_new_name_needs_the_right_room_code_and_a_real_password(auth):
    assert (await login(auth, "bob", "bob-own-pw"))[1].startswith("bob is a new name")
    assert await login(auth, "bob", "bob-own-pw", "wrong") == (None, "Wrong room code.")
    name, error = await login(auth, "bob", "short", ROOM)
    assert name is None and "at least 8 characters" in error
    name, error = await login(auth, "bob", ROOM, ROOM)
    assert name is None and "not the room code" in error
    assert auth._stored("bob") is None  # nothing was claimed by the refused attempts


async def test_admin_names_open_only_with_the_admin_secret(auth):
    for spelling in ("admin", "Admin", "ADMIN"):
        name, error = await login(auth, spelling, ROOM, ROOM)
        assert name is None and "admin account" in error
    assert await login(auth, "Admin", ADMIN_SECRET) == ({"name": "admin", "admin": True}, "")


async def test_instructor_and_admin_accounts_are_never_claimed_with_the_room_code(auth):
    handler = Handler({"teach": staff(groups=["instructors"]), "boss": staff(admin=True)})
    for name in ("teach", "boss"):
        result, error = await login(auth, name, "my-own-password", ROOM, handler)
        assert result is None and "never opens with the room code" in error
        assert auth._stored(name) is None


async def test_reset_password_gives_a_staff_account_a_password_of_its_own(auth):
    await auth.store_password("teach", "generated-pw-1")
    handler = Handler({"teach": staff(groups=["instructors"])})
    assert (await login(auth, "teach", "generated-pw-1", "", handler))[0] == "teach"
    assert (await login(auth, "teach", ROOM, ROOM, handler))[0] is None


@pytest.mark.parametrize("name", ["proxy", "hub", "root", "jupyterhub", "stackhub-hub", "stackhub", "services"])
async def test_reserved_names_are_refused(auth, name):
    result, error = await login(auth, name, "some-password", ROOM)
    assert result is None and "reserved" in error
    assert auth._stored(name) is None


@pytest.mark.parametrize("name", ["a", "9lives", "ada lovelace", "ada/../x", "\u0430dmin", "x" * 33, "ada,b", ""])
def test_names_outside_the_pattern_are_refused(name):
    assert refusal(normalize(name)) is not None


def test_normalize_folds_case_width_and_space():
    assert normalize("  ADA ") == "ada"
    assert normalize("\uff21\uff24\uff21") == "ada"
    assert refusal("ada.lovelace_2-x") is None
    assert refusal("admin", allowed_reserved={"admin"}) is None and refusal("admin") is not None


async def test_user_may_change_own_password_but_not_to_the_room_code(auth):
    await login(auth, "ada", "ada-own-pw", ROOM)
    assert "not the room code" in auth.reset_password("ada", ROOM)
    assert "success" in auth.reset_password("ada", "ada-new-pw")
    assert (await login(auth, "ada", "ada-new-pw"))[0] == "ada"
