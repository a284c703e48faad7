"""The tutorial login, with the real TutorialAuthenticator and its real password store (a dbm file
in tmp_path); only the request handler is a stand-in (it answers find_user from a dict)."""

from types import SimpleNamespace

import bcrypt
import pytest
from tornado.web import HTTPError
from traitlets.config import Config

from spawner.core.config import StackhubConfig
from spawner.hub.apply import HubPaths, apply_config
from spawner.hub import passwords
from spawner.hub.tutorial_auth import REFUSED, TutorialAuthenticator
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


async def login(auth, name, password, code="", handler=None, again=None):
    """A login form post; a claim (with the room code) types the password twice unless ``again``."""
    handler = handler or Handler()
    data = {"username": name, "password": password, "otp": code,
            "password2": password if again is None else again}
    result = await auth.authenticate(handler, data)
    return result, handler.custom_login_error


async def test_room_code_claims_a_free_name_then_only_its_password_opens_it(auth):
    assert await login(auth, "ada", "ada-own-pw", ROOM) == ("ada", "")
    assert await login(auth, "ada", "ada-own-pw") == ("ada", "")
    # the room code, alone or as the password, never opens a claimed name
    name, error = await login(auth, "ada", ROOM, ROOM)
    assert name is None and error == REFUSED
    name, error = await login(auth, "ada", "guess", ROOM)
    assert name is None


async def test_same_name_in_other_spellings_is_the_same_claimed_account(auth):
    await login(auth, "ada", "ada-own-pw", ROOM)
    for spelling in ("ADA", " Ada ", "\uff41da"):  # fullwidth a normalises to a (NFKC)
        name, error = await login(auth, spelling, "attacker-pw", ROOM)
        assert name is None and error == REFUSED, spelling


async def test_new_name_needs_the_right_room_code_and_a_real_password(auth):
    assert await login(auth, "bob", "bob-own-pw") == (None, REFUSED)
    assert await login(auth, "bob", "bob-own-pw", "wrong") == (None, REFUSED)
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


async def test_user_may_change_own_password_with_the_old_one_but_not_to_the_room_code(auth):
    await login(auth, "ada", "ada-own-pw", ROOM)
    h = Handler()
    assert "not the room code" in await auth.change_password(h, "ada", "ada-own-pw", ROOM, ROOM)
    assert "current password is wrong" in await auth.change_password(h, "ada", "guess", "ada-new-pw", "ada-new-pw")
    assert "differ" in await auth.change_password(h, "ada", "ada-own-pw", "ada-new-pw", "ada-new-px")
    assert (await login(auth, "ada", "ada-own-pw"))[0] == "ada"  # every refusal left it as it was
    assert await auth.change_password(h, "ada", "ada-own-pw", "ada-new-pw", "ada-new-pw") is None
    assert (await login(auth, "ada", "ada-new-pw"))[0] == "ada"
    assert (await login(auth, "ada", "ada-own-pw"))[0] is None
    with pytest.raises(HTTPError):  # firstuseauthenticator's unchecked change is gone
        auth.reset_password("ada", "no-old-password")


# -- passwords of any length --------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["p" * 73, "long passphrase " * 20, "\u00e9t\u00e9 " * 40, "x" * 10_000])
async def test_passwords_of_any_length_claim_and_open(auth, password):
    assert await login(auth, "ada", password, ROOM) == ("ada", "")
    assert (await login(auth, "ada", password))[0] == "ada"
    assert (await login(auth, "ada", password[:-1] + "?"))[0] is None  # every byte counts, past 72 too
    assert (await login(auth, "ada", password[:72]))[0] is None


async def test_long_passwords_change_too(auth):
    await login(auth, "ada", "ada-own-pw", ROOM)
    long = "correct horse battery staple " * 5
    assert await auth.change_password(Handler(), "ada", "ada-own-pw", long, long) is None
    assert (await login(auth, "ada", long))[0] == "ada"


async def test_hashes_stored_before_still_open_and_are_upgraded(auth):
    old = bcrypt.hashpw(b"old-style-pw", bcrypt.gensalt(4))  # what firstuseauthenticator stored
    auth._put("ada", old)
    assert (await login(auth, "ada", "old-style-pw" + "!" * 80))[0] is None  # > 72 bytes: no 500, a refusal
    assert (await login(auth, "ada", "old-style-pw"))[0] == "ada"
    assert auth._stored("ada").startswith(passwords.PREFIX)
    assert (await login(auth, "ada", "old-style-pw"))[0] == "ada"


def test_damaged_or_retired_records_open_nothing():
    assert not passwords.check_password("x", b"not a hash")
    assert not passwords.check_password("x", passwords.PREFIX + b"junk")
    assert not passwords.check_password("", passwords.RETIRED)


# -- the claim asks twice; one error text ---------------------------------------------------------------


async def test_claim_needs_the_password_twice(auth):
    for again in ("ada-own-px", ""):
        name, error = await login(auth, "ada", "ada-own-pw", ROOM, again=again)
        assert name is None and "differ" in error
    assert auth._stored("ada") is None
    assert (await login(auth, "ada", "ada-own-pw", ROOM))[0] == "ada"
    # a login of a claimed name needs no second field
    assert (await login(auth, "ada", "ada-own-pw", again=""))[0] == "ada"


async def test_unknown_name_wrong_password_and_wrong_room_code_read_the_same(auth):
    await login(auth, "ada", "ada-own-pw", ROOM)
    errors = {(await login(auth, *attempt))[1] for attempt in
              (("ada", "guess-1234"), ("zed", "guess-1234"), ("zed", "guess-1234", "wrong-code"),
               ("ada", "guess-1234", "wrong-code"), ("ada", "guess-1234", ROOM))}
    assert errors == {REFUSED}


# -- throttling ----------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def from_address(ip, forwarded=None, users=None):
    h = Handler(users)
    h.request = SimpleNamespace(connection=SimpleNamespace(context=SimpleNamespace(address=(ip, 40000))),
                                remote_ip=ip, headers={"X-Forwarded-For": forwarded} if forwarded else {})
    return h


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr("spawner.hub.tutorial_auth.time.monotonic", c)
    return c


@pytest.fixture
def strict(tmp_path):
    for name, value in (("shared-password", ROOM), ("admin-password", ADMIN_SECRET),
                        ("proxy-token", "p" * 32), ("admin-token", "a" * 32)):
        (tmp_path / name).write_text(value)
    cfg = StackhubConfig.model_validate({"auth": {"type": "shared-password", "staffNames": ["Teach"], "loginThrottle": {
        "window": 60, "failuresPerName": 3, "failuresPerAddress": 5, "claimsPerAddressPerHour": 2}}})
    c = apply_config(Config(), cfg, HubPaths(state=tmp_path, secrets=tmp_path))
    c.TutorialAuthenticator.admin_users = {"admin"}
    c.TutorialAuthenticator.trusted_proxies = []
    return TutorialAuthenticator(config=c)


async def refused_with_429(auth, name, password, handler, code=""):
    with pytest.raises(HTTPError) as e:
        await login(auth, name, password, code, handler)
    assert e.value.status_code == 429
    return int(e.value.headers["Retry-After"])


async def test_failures_per_name_answer_429_with_retry_after_even_for_the_right_password(strict, clock):
    await login(strict, "ada", "ada-own-pw", ROOM, from_address("10.0.0.1"))
    for i in range(3):  # from three addresses: the name's count, not the address's
        assert (await login(strict, "ada", f"guess-{i}xxx", "", from_address(f"10.0.1.{i}")))[0] is None
    assert await refused_with_429(strict, "ada", "ada-own-pw", from_address("10.0.0.1")) == 60
    clock.now += 30
    assert await refused_with_429(strict, "ada", "ada-own-pw", from_address("10.0.0.1")) == 30
    # another name is not held up
    assert (await login(strict, "bob", "bob-own-pw", ROOM, from_address("10.0.0.9")))[0] == "bob"
    clock.now += 31
    assert (await login(strict, "ada", "ada-own-pw", "", from_address("10.0.0.1")))[0] == "ada"


async def test_failures_per_address_answer_429(strict, clock):
    attacker = from_address("192.0.2.7")
    for i in range(5):
        assert (await login(strict, f"name{i}", "guess-1234", "", attacker))[0] is None
    assert await refused_with_429(strict, "name9", "guess-1234", attacker) == 60
    # another client address is not held up
    assert (await login(strict, "cleo", "cleo-own-pw", ROOM, from_address("192.0.2.8")))[0] == "cleo"


async def test_claims_per_address_per_hour(strict, clock):
    room = from_address("198.51.100.1")
    for name in ("ann", "ben"):
        assert (await login(strict, name, "own-password", ROOM, room))[0] == name
    assert await refused_with_429(strict, "cat", "own-password", room, ROOM) == 3600
    assert strict._stored("cat") is None
    assert (await login(strict, "ann", "own-password", "", room))[0] == "ann"  # logins are not claims
    assert (await login(strict, "cat", "own-password", ROOM, from_address("198.51.100.2")))[0] == "cat"
    clock.now += 3600
    assert (await login(strict, "dan", "own-password", ROOM, room))[0] == "dan"


async def test_forwarded_address_is_believed_only_from_the_proxy(strict, clock):
    strict._proxies = (float("inf"), frozenset({"172.18.0.3"}))
    strict.trusted_proxies = ["proxy"]
    via_proxy = [from_address("172.18.0.3", f"1.2.3.4, 203.0.113.{i}") for i in range(6)]
    for i, h in enumerate(via_proxy[:5]):
        assert (await login(strict, f"x{i}name", "guess-1234", "", h))[0] is None
    # each attendee behind the proxy is their own address: a sixth is not held up
    assert (await login(strict, "eve", "eve-own-pw", ROOM, via_proxy[5]))[0] == "eve"
    assert await strict.client_address(via_proxy[0]) == "203.0.113.0"
    # a container that talks to the hub directly cannot pick its address
    assert await strict.client_address(from_address("172.18.0.9", "203.0.113.77")) == "172.18.0.9"


# -- staff names, retired names ---------------------------------------------------------------------------


async def test_staff_names_from_config_are_never_claimed(strict):
    for spelling in ("teach", "TEACH"):
        name, error = await login(strict, spelling, "own-password", ROOM, from_address("10.1.0.1"))
        assert name is None and "never opens with the room code" in error
    assert strict._stored("teach") is None
    await strict.store_password("teach", "admin-given-pw")  # an admin's reset gives it its password
    assert (await login(strict, "teach", "admin-given-pw", "", from_address("10.1.0.1")))[0] == "teach"


async def test_a_deleted_users_name_is_retired_until_released(auth):
    await login(auth, "ada", "ada-own-pw", ROOM)
    await auth.delete_user(SimpleNamespace(name="ada", spawners={}))
    for password, code in (("ada-own-pw", ""), ("new-comer-pw", ROOM)):
        name, error = await login(auth, "ada", password, code)
        assert name is None
    assert "not available" in (await login(auth, "ada", "new-comer-pw", ROOM))[1]
    assert auth._stored("ada") == passwords.RETIRED
    assert auth.release_name("ada") and not auth.release_name("ada")
    assert (await login(auth, "ada", "new-comer-pw", ROOM))[0] == "ada"


async def test_names_are_not_retired_when_homes_go_with_their_users(tmp_path):
    for name, value in (("shared-password", ROOM), ("admin-password", ADMIN_SECRET),
                        ("proxy-token", "p" * 32), ("admin-token", "a" * 32)):
        (tmp_path / name).write_text(value)
    cfg = StackhubConfig.model_validate({"volumes": {"deleteHomeWithUser": True}})
    a = TutorialAuthenticator(config=apply_config(Config(), cfg, HubPaths(state=tmp_path, secrets=tmp_path)))
    await login(a, "ada", "ada-own-pw", ROOM)
    await a.delete_user(SimpleNamespace(name="ada", spawners={}))
    assert a._stored("ada") is None


async def test_claimed_names_are_known_as_such(auth):
    await login(auth, "ada", "ada-own-pw", ROOM)
    assert auth.is_claimed("ada") and auth.is_claimed("ADA")
    assert not auth.is_claimed("ada", staff(groups=["instructors"]))  # already staff: nothing to take over
    assert not auth.is_claimed("bob")
    auth.forget_password("ada")
    assert not auth.is_claimed("ada")
    # a password an admin set is not an attendee's hold on the name, until its owner changes it
    await auth.store_password("ada", "admin-given-pw", by_admin=True)
    assert not auth.is_claimed("ada") and (await login(auth, "ada", "admin-given-pw"))[0] == "ada"
    assert await auth.change_password(Handler(), "ada", "admin-given-pw", "ada-own-pw2", "ada-own-pw2") is None
    assert auth.is_claimed("ada")


async def test_a_configured_admin_name_keeps_no_attendee_password(auth):
    auth._put("admin", passwords.hash_password("attendee-pw"))
    auth.add_user(SimpleNamespace(name="admin"))
    assert auth._stored("admin") is None
