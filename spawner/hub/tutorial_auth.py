"""The tutorial login: a room code admits new people; each name is then its owner's alone.

Built on jupyterhub-firstuseauthenticator (a name's first login sets its password, stored as a
bcrypt hash in a dbm file in the hub's state), with the gate a tutorial needs on top:

- **Claiming a name needs the room code** (JupyterHub's own second login field, ``otp``). Without
  it nobody can create an account; with it, only names nobody owns yet.
- **A claimed name opens only with its owner's password.** The room code never opens an
  existing account, and cannot be chosen as a password.
- **Admins** (``hub.adminUsers``) log in only with the admin secret (var/secrets/admin-password);
  **instructors** and admins created by an admin can never be claimed with the room code: an admin
  sets their password with ``stackhub users reset-password NAME`` (or the sessions page).
- **Names** are normalised (NFKC, lower case) before every check and must match the pattern;
  names of the deployment's own parts are reserved (spawner.core.usernames).

bcrypt runs in a thread, not on the hub's event loop: a room of 100 logging in at once would
otherwise stall every other request for the length of 100 hashes. Its threads are its own, not
asyncio's default executor: that one also resolves host names for the hub's HTTP calls (to the
proxy's API, to the servers), which queued behind 100 hashes in a load test (bench/RESULTS-load.md). The check that a name is free and
its claim happen with no ``await`` between them, so two people can't claim one name.

Accounts have a lifecycle (spawner.hub.accounts): passwords of any length (spawner.hub.passwords);
the claim asks for the password twice; the change-password page needs the old one and ends the
user's other sessions; a deleted user's name is retired while their home is kept; failed logins are
throttled per name and per client address, and new claims per address (spawner.core.throttle),
answering HTTP 429 with Retry-After. One error text covers an unknown name, a wrong password and a
wrong room code, so the login page does not tell who has an account.
"""

from __future__ import annotations

import asyncio
import dbm
import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from firstuseauthenticator import FirstUseAuthenticator
from jupyterhub.handlers import BaseHandler
from tornado import web
from traitlets import Bool, Integer, List, Set, Unicode, default

from spawner.core import usernames
from spawner.core.throttle import LoginThrottle, forwarded_client
from spawner.hub import accounts, passwords
from spawner.hub.lifecycle import StopServersOnDelete

# bcrypt releases the GIL: as many threads as cores keep them busy, and no more queue up
_BCRYPT = ThreadPoolExecutor(max(1, os.cpu_count() or 1), thread_name_prefix="stackhub-bcrypt")
TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "templates", "hub")
REFUSED = ("Wrong name, password or room code. First time here? Pick a name nobody has, enter the room "
           "code, and choose a password of your own (twice).")
PROXY_TTL = 60  # seconds the proxy's resolved addresses are trusted before they are looked up again


async def _in_bcrypt_threads(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(_BCRYPT, fn, *args)


def too_many(seconds: int, what: str) -> web.HTTPError:
    """HTTP 429 with Retry-After (JupyterHub's error page sets the exception's headers)."""
    err = web.HTTPError(429, f"Too many {what}. Try again in {seconds} s.")
    err.headers = {"Retry-After": str(seconds)}
    return err


class ChangePasswordHandler(BaseHandler):
    """/hub/auth/change-password: the old password, the new one twice; other sessions end."""

    async def _page(self, message="", ok=False, status=200):
        self.set_status(status)
        html = await self.render_template("change_password.html", message=message, ok=ok,
                                          min_length=self.authenticator.min_password_length)
        self.finish(html)

    @web.authenticated
    async def get(self):
        await self._page()

    @web.authenticated
    async def post(self):
        user = self.current_user
        old = self.get_body_argument("old_password", "", strip=False)
        new = self.get_body_argument("password", "", strip=False)
        again = self.get_body_argument("password2", "", strip=False)
        why = await self.authenticator.change_password(self, user.name, old, new, again)
        if why:
            return await self._page(why, status=400)
        kept = accounts.server_token_ids(self.db, user)
        ended = accounts.end_sessions(self.db, user.orm_user, keep_session=self.get_session_cookie(),
                                      keep_tokens=frozenset(kept))
        self.set_login_cookie(user)  # this browser stays in, with the new cookie id
        self.log.info("tutorial login: %s changed their password; %d other tokens ended", user.name, ended)
        await self._page("Your password has been changed. Your other sessions have ended.", ok=True)


class TutorialAuthenticator(StopServersOnDelete, FirstUseAuthenticator):
    """First-use passwords, gated by the room code (see the module docstring)."""

    room_code = Unicode(
        config=True,
        help="The room code handed out at the tutorial. It lets a new attendee claim a free name "
             "(with a password of their own); it never opens an existing account.",
    )
    admin_password = Unicode(
        config=True,
        help="The secret of the hub's admin accounts (hub.adminUsers): the only way they log in.",
    )
    admin_names = Set(Unicode(), config=True, help=(
        "Names that log in with the admin secret and are reserved for it (hub.adminUsers). Default: "
        "Authenticator.admin_users. On the shared origin those are empty (nobody holds JupyterHub's admin "
        "role) and these names are the stackhub-admins group's (spawner.core.roles)."))
    admins_group = Unicode("", config=True, help=(
        "Where a take-over makes a name an admin: empty = JupyterHub's admin flag (subdomain mode); "
        "otherwise this group (stackhub-admins, on the shared origin)."))

    @default("admin_names")
    def _default_admin_names(self):
        return set(self.admin_users)
    username_pattern = Unicode(usernames.DEFAULT_PATTERN, config=True,
                               help="Regular expression every (normalised) username must match.")
    staff_names = Set(Unicode(), config=True,
                      help="Names kept for staff (auth.staffNames): never claimed with the room code; an admin "
                           "gives them a password (stackhub users reset-password).")
    retire_deleted_names = Bool(True, config=True,
                                help="A deleted user's name cannot be claimed again (its home is kept, and a "
                                     "new account of that name would get it) until an admin releases it.")
    failures_per_name = Integer(10, config=True, help="Failed logins per name within login_window before 429.")
    failures_per_address = Integer(30, config=True,
                                   help="Failed logins per client address within login_window before 429.")
    login_window = Integer(300, config=True, help="Seconds over which failed logins are counted.")
    claims_per_address_per_hour = Integer(120, config=True, help="New names one client address may claim per hour.")
    trusted_proxies = List(Unicode(), config=True,
                           help="Host names or addresses of the proxy in front of the hub: only a request from "
                                "one of them has its X-Forwarded-For (last entry) taken as the client address.")

    @default("request_otp")
    def _default_request_otp(self):
        return True

    @default("otp_prompt")
    def _default_otp_prompt(self):
        return "Room code (only the first time you use a name):"

    @default("min_password_length")
    def _default_min_password_length(self):
        return 8

    @default("allow_all")
    def _default_allow_all(self):
        return True

    # -- throttling ------------------------------------------------------------------------------

    def _throttle(self) -> LoginThrottle:
        if not hasattr(self, "_login_throttle"):
            self._login_throttle = LoginThrottle.from_limits(
                failures_per_name=self.failures_per_name, failures_per_address=self.failures_per_address,
                window=self.login_window, claims_per_address_per_hour=self.claims_per_address_per_hour)
        return self._login_throttle

    async def _proxy_addresses(self) -> frozenset[str]:
        now = time.monotonic()
        cached = getattr(self, "_proxies", None)
        if cached and cached[0] > now:
            return cached[1]
        loop = asyncio.get_running_loop()
        found = set()
        for host in self.trusted_proxies:
            try:
                for *_, sockaddr in await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM):
                    found.add(sockaddr[0])
            except OSError:
                continue  # not there (yet): its requests are taken at their own address
        self._proxies = (now + PROXY_TTL, frozenset(found))
        return self._proxies[1]

    async def client_address(self, handler) -> str:
        """The client as the proxy saw it; a request that did not come through the proxy: its peer."""
        request = getattr(handler, "request", None)
        if request is None:
            return "unknown"
        address = getattr(getattr(request, "connection", None), "context", None)
        address = getattr(address, "address", None)
        peer = address[0] if isinstance(address, tuple) and address else request.remote_ip
        trusted = await self._proxy_addresses() if self.trusted_proxies else frozenset()
        return forwarded_client(peer, request.headers.get("X-Forwarded-For"), trusted)

    # -- names and the password store -------------------------------------------------------------

    def normalize_username(self, username):
        name = usernames.normalize(username)
        return self.username_map.get(name, name)

    def name_refusal(self, name: str) -> str | None:
        return usernames.refusal(name, pattern=self.username_pattern, allowed_reserved=self.admin_names)

    def validate_username(self, name):
        """Also for users an admin creates through the API: only names in their normal form, so
        the account is the one its owner's login (which normalises) reaches."""
        return name in self.admin_names or (name == self.normalize_username(name) and self.name_refusal(name) is None)

    def _fail(self, handler, message: str):
        handler.custom_login_error = message
        self.log.info("tutorial login refused: %s", message)
        return None

    def _stored(self, name: str) -> bytes | None:
        with dbm.open(self.dbm_path, "c", 0o600) as db:
            return db.get(name.encode("utf8"))

    def _put(self, name: str, value: bytes | None):
        with dbm.open(self.dbm_path, "c", 0o600) as db:
            if value is None:
                _delete(db, name)
            else:
                db[name.encode("utf8")] = value

    async def store_password(self, name: str, password: str, *, by_admin: bool = False):
        self._put(name, await _in_bcrypt_threads(partial(passwords.hash_password, by_admin=by_admin), password))

    def forget_password(self, name: str):
        """The name keeps no tutorial password (a take-over; an admin then resets it)."""
        self._put(name, None)

    def release_name(self, name: str) -> bool:
        """A retired name may be claimed again (its home is gone); False if it was not retired."""
        if self._stored(name) != passwords.RETIRED:
            return False
        self._put(name, None)
        return True

    def is_claimed(self, name: str, user=None) -> bool:
        """Whether ``name`` is an attendee's: its holder chose its password, and it is not staff yet."""
        name = self.normalize_username(name)
        if name in self.admin_names or not passwords.owner_chosen(self._stored(name)):
            return False
        return not (user is not None and accounts.is_staff(user))

    def _is_staff(self, handler, name: str) -> bool:
        if name in self.staff_names:
            return True
        user = handler.find_user(name)
        return bool(user and accounts.is_staff(user))

    def _password_problem(self, password: str, again: str) -> str | None:
        if not self._validate_password(password):
            return f"Choose a password of at least {self.min_password_length} characters."
        if self.room_code and secrets.compare_digest(password.encode(), self.room_code.encode()):
            return "Choose a password of your own, not the room code."
        if not secrets.compare_digest(password.encode(), again.encode()):
            return "The two passwords differ: type the same password twice."
        return None

    # -- login -----------------------------------------------------------------------------------

    async def authenticate(self, handler, data):
        name = self.normalize_username(data.get("username") or "")
        password = data.get("password") or ""
        code = (data.get("otp") or "").strip()
        address = await self.client_address(handler)
        throttle, now = self._throttle(), time.monotonic()
        wait = throttle.login_wait(name, address, now)
        if wait:
            self.log.warning("tutorial login throttled: %s from %s for %d s", name[:32], address, wait)
            raise too_many(wait, "failed logins for this name or from this address")
        if name in self.admin_names:
            if self.admin_password and secrets.compare_digest(password.encode(), self.admin_password.encode()):
                # JupyterHub's admin flag only where admins hold JupyterHub's admin role (subdomain mode)
                return {"name": name, "admin": name in self.admin_users}
            throttle.failed(name, address, now)
            return self._fail(handler, "Wrong password for this admin account.")
        why = self.name_refusal(name)
        if why:
            return self._fail(handler, why[0].upper() + why[1:] + ".")
        stored = self._stored(name)
        if stored is not None and stored != passwords.RETIRED:
            if await _in_bcrypt_threads(passwords.check_password, password, stored):
                if passwords.needs_rehash(stored):  # an old plain-bcrypt hash: store the new form
                    await self.store_password(name, password)
                return name
            throttle.failed(name, address, now)
            return self._fail(handler, REFUSED)
        # a name nobody holds (or a retired one)
        if not code or not self.room_code or not secrets.compare_digest(code.encode(), self.room_code.encode()):
            throttle.failed(name, address, now)
            return self._fail(handler, REFUSED)
        if stored == passwords.RETIRED:
            return self._fail(handler, f"The name {name} is not available: it belonged to an account whose "
                                       "files are kept. Pick another name.")
        if self._is_staff(handler, name):
            return self._fail(handler, f"{name} is an instructor or admin account: it never opens with the room "
                                       "code. Ask the hub's admins for its password.")
        problem = self._password_problem(password, data.get("password2") or "")
        if problem:
            return self._fail(handler, problem)
        wait = throttle.claim_wait(address, now)
        if wait:
            self.log.warning("tutorial login: claims from %s throttled for %d s", address, wait)
            raise too_many(wait, "new names claimed from this address")
        hashed = await _in_bcrypt_threads(passwords.hash_password, password)
        with dbm.open(self.dbm_path, "c", 0o600) as db:  # no await from the check to the claim
            if name.encode("utf8") in db:
                return self._fail(handler, f"{name} was claimed a moment ago. Pick another name.")
            db[name.encode("utf8")] = hashed
        throttle.claimed(address, now)
        self.log.info("tutorial login: %s claimed from %s", name, address)
        return name

    async def change_password(self, handler, name: str, old: str, new: str, again: str) -> str | None:
        """The user's own change: the old password first (throttled like a login); None when done."""
        address = await self.client_address(handler)
        throttle, now = self._throttle(), time.monotonic()
        wait = throttle.login_wait(name, address, now)
        if wait:
            raise too_many(wait, "wrong passwords for this name or from this address")
        if name in self.admin_names:
            return "An admin account's password is the admin secret (var/secrets/admin-password); it is changed there."
        stored = self._stored(name)
        if stored is None or not await _in_bcrypt_threads(passwords.check_password, old, stored):
            throttle.failed(name, address, now)
            return "Your current password is wrong."
        problem = self._password_problem(new, again)
        if problem:
            return problem
        await self.store_password(name, new)
        return None

    def reset_password(self, username, new_password):
        """firstuseauthenticator's unchecked change: never used (the change-password page needs the
        old password, see ``change_password``)."""
        raise web.HTTPError(400, "change a password at /hub/auth/change-password, with the current one")

    async def delete_user(self, user):
        """Servers stop (StopServersOnDelete) and the password goes; while homes are kept, the name
        is retired so that nobody else claims it and gets the home."""
        await super().delete_user(user)
        if self.retire_deleted_names:
            self._put(user.name, passwords.RETIRED)
            self.log.warning("tutorial login: the name %s is retired (its home is kept); "
                             "`stackhub users delete %s --purge` deletes the home and frees the name", user.name, user.name)

    def add_user(self, user):
        """At start and on creation: a configured admin name an attendee had claimed keeps no
        attendee password, session or token (the admin secret is its only key)."""
        if user.name in self.admin_names and passwords.owner_chosen(self._stored(user.name)):
            from sqlalchemy import inspect
            from sqlalchemy.exc import NoInspectionAvailable

            orm_user = getattr(user, "orm_user", user)
            try:
                db = inspect(orm_user).session
            except NoInspectionAvailable:  # not a database user (a stand-in)
                db = None
            if db is not None:
                accounts.end_sessions(db, orm_user)
            self.forget_password(user.name)
            self.log.warning("tutorial login: %s is in hub.adminUsers; the attendee password it had and every "
                             "session and token of it are ended", user.name)
        return super().add_user(user)

    def get_handlers(self, app):
        from firstuseauthenticator.firstuseauthenticator import CustomLoginHandler

        return [
            (r"/login", CustomLoginHandler),
            (r"/auth/change-password", ChangePasswordHandler),
            (r"/api/stackhub/users/([^/]+)/password", accounts.ResetPasswordAPIHandler),
            (r"/api/stackhub/users/([^/]+)/take-over", accounts.TakeOverAPIHandler),
            (r"/api/stackhub/users/([^/]+)/release", accounts.ReleaseNameAPIHandler),
            (r"/api/groups/([^/]+)/users", accounts.GuardedGroupUsersAPIHandler),
            (r"/api/users/([^/]+)", accounts.GuardedUserAPIHandler),
        ]


def _delete(db, name: str):
    try:
        del db[name.encode("utf8")]
    except KeyError:
        pass
