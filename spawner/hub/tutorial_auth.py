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
"""

from __future__ import annotations

import asyncio
import dbm
import json
import os
import secrets
from concurrent.futures import ThreadPoolExecutor

import bcrypt
from firstuseauthenticator import FirstUseAuthenticator
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope
from tornado import web
from traitlets import Set, Unicode, default

from spawner.core import roles, usernames
from spawner.core.names import INSTRUCTORS_GROUP
from spawner.hub.lifecycle import StopServersOnDelete

# bcrypt releases the GIL: as many threads as cores keep them busy, and no more queue up
_BCRYPT = ThreadPoolExecutor(max(1, os.cpu_count() or 1), thread_name_prefix="stackhub-bcrypt")


async def _in_bcrypt_threads(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(_BCRYPT, fn, *args)


class ResetPasswordAPIHandler(APIHandler):
    """POST /hub/api/stackhub/users/NAME/password: an admin gives NAME a new, generated password."""

    @needs_scope("admin:users")
    async def post(self, user_name):
        name = self.authenticator.normalize_username(user_name)
        if name in self.authenticator.admin_names:
            raise web.HTTPError(400, f"{name} is an admin account; its password is the admin secret "
                                     "(var/secrets/admin-password), not a tutorial password")
        why = self.authenticator.name_refusal(name)
        if why:
            raise web.HTTPError(400, why)
        password = secrets.token_urlsafe(9)
        await self.authenticator.store_password(name, password)
        self.log.info("tutorial login: %s reset the password of %s", self.current_user.name, name)
        self.write(json.dumps({"name": name, "password": password}))


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

    @default("admin_names")
    def _default_admin_names(self):
        return set(self.admin_users)

    username_pattern = Unicode(usernames.DEFAULT_PATTERN, config=True,
                               help="Regular expression every (normalised) username must match.")

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

    async def store_password(self, name: str, password: str):
        hashed = await _in_bcrypt_threads(bcrypt.hashpw, password.encode("utf8"), bcrypt.gensalt())
        with dbm.open(self.dbm_path, "c", 0o600) as db:
            db[name.encode("utf8")] = hashed

    def _is_staff(self, handler, name: str) -> bool:
        user = handler.find_user(name)
        groups = [g.name for g in user.groups] if user else []
        return bool(user and (roles.is_admin(user.admin, groups) or INSTRUCTORS_GROUP in groups))

    async def authenticate(self, handler, data):
        name = self.normalize_username(data.get("username") or "")
        password = data.get("password") or ""
        code = (data.get("otp") or "").strip()
        if name in self.admin_names:
            if self.admin_password and secrets.compare_digest(password.encode(), self.admin_password.encode()):
                # JupyterHub's admin flag only where admins hold JupyterHub's admin role (subdomain mode)
                return {"name": name, "admin": name in self.admin_users}
            return self._fail(handler, "Wrong password for this admin account.")
        why = self.name_refusal(name)
        if why:
            return self._fail(handler, why[0].upper() + why[1:] + ".")
        stored = self._stored(name)
        if stored is not None:
            ok = await _in_bcrypt_threads(bcrypt.checkpw, password.encode("utf8"), stored)
            if ok:
                return name
            return self._fail(handler, f"Wrong password for {name}. If this name is not yours, pick another "
                                       "one and enter the room code.")
        # a name nobody has claimed yet
        if not code:
            return self._fail(handler, f"{name} is a new name: to claim it, enter the room code and choose "
                                       "a password of your own.")
        if not self.room_code or not secrets.compare_digest(code.encode(), self.room_code.encode()):
            return self._fail(handler, "Wrong room code.")
        if self._is_staff(handler, name):
            return self._fail(handler, f"{name} is an instructor or admin account: it never opens with the room "
                                       "code. Ask the hub's admins for its password.")
        if not self._validate_password(password):
            return self._fail(handler, f"Choose a password of at least {self.min_password_length} characters.")
        if secrets.compare_digest(password.encode(), self.room_code.encode()):
            return self._fail(handler, "Choose a password of your own, not the room code.")
        hashed = await _in_bcrypt_threads(bcrypt.hashpw, password.encode("utf8"), bcrypt.gensalt())
        with dbm.open(self.dbm_path, "c", 0o600) as db:  # no await from the check to the claim
            if name.encode("utf8") in db:
                return self._fail(handler, f"{name} was claimed a moment ago. Pick another name.")
            db[name.encode("utf8")] = hashed
        self.log.info("tutorial login: %s claimed", name)
        return name

    def reset_password(self, username, new_password):
        """The logged-in user's own change (firstuseauthenticator's page): never the room code."""
        if self.room_code and secrets.compare_digest(new_password.encode(), self.room_code.encode()):
            return "Choose a password of your own, not the room code."
        return super().reset_password(username, new_password)

    def get_handlers(self, app):
        return [*super().get_handlers(app), (r"/api/stackhub/users/([^/]+)/password", ResetPasswordAPIHandler)]
