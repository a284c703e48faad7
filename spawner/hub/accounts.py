"""An account's lifecycle on the hub: ending sessions, and the admin handlers that change who owns a name.

- ``end_sessions``: the user's login cookie stops working everywhere (its id is rotated) and their
  API and OAuth tokens are deleted, except the ones named to keep (the browser that changed its
  own password, and the tokens of servers that keep running).
- ``stop_servers``: every server of the user is taken off the proxy and stopped; a server still
  starting or stopping refuses the whole change with HTTP 400 before anything changed.
- An admin's reset (``ResetPasswordAPIHandler``), a take-over (``TakeOverAPIHandler``) and a
  promotion through JupyterHub's own API or admin page (joining ``instructors``, PATCH
  ``admin: true``) stop the servers and end every session and token. A promotion is refused (409)
  for a name an attendee claimed: the admin confirms with the take-over (``stackhub users
  take-over NAME``), which also removes the attendee's password.
"""

from __future__ import annotations

import json
import secrets

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.apihandlers.groups import GroupUsersAPIHandler
from jupyterhub.apihandlers.users import UserAPIHandler
from jupyterhub.roles import assign_default_roles
from jupyterhub.scopes import needs_scope
from jupyterhub.utils import new_token
from tornado import web

from spawner.core import roles
from spawner.core.names import INSTRUCTORS_GROUP

TAKE_OVER_HINT = ("{name} is a name an attendee claimed with the room code; making it staff would hand the "
                  "attendee's sessions and servers to staff. To take the name over (its sessions, tokens, "
                  "servers and password end), run `stackhub users take-over {name}` (POST "
                  "/hub/api/stackhub/users/{name}/take-over)")


def server_token_ids(db, user) -> set[int]:
    """Ids of the tokens the user's running servers authenticate with."""
    ids = set()
    for spawner in user.spawners.values():
        token = orm.APIToken.find(db, spawner.api_token) if spawner.api_token else None
        if token is not None:
            ids.add(token.id)
    return ids


def end_sessions(db, orm_user, *, keep_session: str | None = None, keep_tokens: frozenset[int] = frozenset()) -> int:
    """Every login of ``orm_user`` ends (cookie id rotated, tokens deleted), but those kept; commits.

    Returns how many tokens were deleted. ``keep_session``: the session id of the browser that
    stays logged in (its caller sets a new login cookie).
    """
    orm_user.cookie_id = new_token()
    gone = 0
    for token in list(orm_user.api_tokens):
        if token.id in keep_tokens or (keep_session and token.session_id == keep_session):
            continue
        db.delete(token)
        gone += 1
    db.commit()
    return gone


def busy_servers(user) -> list[str]:
    return [f"{name or '(default)'} ({s.pending})" for name, s in user.spawners.items() if s.pending]


async def stop_servers(handler, user) -> list[str]:
    """Stop every running server of ``user`` through ``handler`` (proxy route removed first)."""
    stopped = []
    for name, spawner in list(user.spawners.items()):
        if spawner.active and not spawner.pending:
            await handler.stop_single_user(user, name)
            stopped.append(name or "(default)")
    return stopped


def refuse_if_busy(user) -> None:
    busy = busy_servers(user) if user is not None else []
    if busy:
        raise web.HTTPError(400, f"{user.name}'s servers are busy: {', '.join(busy)}; try again once they "
                                 "have started or stopped")


async def end_everything(handler, user) -> dict:
    """An admin's reset or take-over: servers stopped, every session and token of the name ended."""
    if user is None:
        return {"stopped": [], "tokens": 0}
    stopped = await stop_servers(handler, user)
    tokens = end_sessions(handler.db, user.orm_user)
    return {"stopped": stopped, "tokens": tokens}


class ResetPasswordAPIHandler(APIHandler):
    """POST /hub/api/stackhub/users/NAME/password: an admin gives NAME a new, generated password.

    Every session and token of NAME ends and its servers stop: whoever held the name before the
    reset holds nothing after it."""

    @needs_scope("admin:users")
    async def post(self, user_name):
        auth = self.authenticator
        name = auth.normalize_username(user_name)
        if name in auth.admin_names:
            raise web.HTTPError(400, f"{name} is an admin account; its password is the admin secret "
                                     "(var/secrets/admin-password), not a tutorial password")
        why = auth.name_refusal(name)
        if why:
            raise web.HTTPError(400, why)
        user = self.find_user(name)
        refuse_if_busy(user)
        password = secrets.token_urlsafe(9)
        await auth.store_password(name, password, by_admin=True)
        ended = await end_everything(self, user)
        self.log.info("tutorial login: %s reset the password of %s (servers stopped: %s; tokens ended: %d)",
                      self.current_user.name, name, ", ".join(ended["stopped"]) or "none", ended["tokens"])
        self.write(json.dumps({"name": name, "password": password, **ended}))


class TakeOverAPIHandler(APIHandler):
    """POST /hub/api/stackhub/users/NAME/take-over {"instructor": bool, "admin": bool}.

    The admin's confirmation that a claimed name becomes staff: its servers stop, every session and
    token ends, the attendee's password is removed (``stackhub users reset-password`` gives the name
    its staff password), then it joins ``instructors`` and/or becomes an admin."""

    @needs_scope("admin:users")
    @needs_scope("groups")
    async def post(self, user_name):
        auth = self.authenticator
        name = auth.normalize_username(user_name)
        user = self.find_user(name)
        if user is None:
            raise web.HTTPError(404, f"no user {name}")
        body = self.get_json_body() or {}
        instructor, admin = bool(body.get("instructor", not body.get("admin"))), bool(body.get("admin"))
        refuse_if_busy(user)
        ended = await end_everything(self, user)
        auth.forget_password(name)
        if instructor:
            group = orm.Group.find(self.db, INSTRUCTORS_GROUP) or orm.Group(name=INSTRUCTORS_GROUP)
            if user.orm_user not in group.users:
                group.users.append(user.orm_user)
            self.db.add(group)
        if admin and auth.admins_group:  # the shared origin: the group's role, never JupyterHub's admin
            group = orm.Group.find(self.db, auth.admins_group) or orm.Group(name=auth.admins_group)
            if user.orm_user not in group.users:
                group.users.append(user.orm_user)
            self.db.add(group)
        elif admin:
            user.admin = True
            assign_default_roles(self.db, entity=user)  # what JupyterHub's own PATCH does: the admin role
        self.db.commit()
        self.log.warning("stackhub: %s took over the name %s (instructor=%s, admin=%s; servers stopped: %s)",
                         self.current_user.name, name, instructor, admin, ", ".join(ended["stopped"]) or "none")
        self.write(json.dumps({"name": name, "instructor": instructor, "admin": admin, **ended}))


class ReleaseNameAPIHandler(APIHandler):
    """POST /hub/api/stackhub/users/NAME/release: a deleted user's retired name may be claimed again
    (``stackhub users delete NAME --purge`` calls it once the home is gone)."""

    @needs_scope("admin:users")
    async def post(self, user_name):
        name = self.authenticator.normalize_username(user_name)
        if self.find_user(name) is not None:
            raise web.HTTPError(400, f"{name} is a user of the hub; only a deleted user's name is released")
        released = self.authenticator.release_name(name)
        self.log.info("tutorial login: %s released the name %s (%s)", self.current_user.name, name,
                      "it was retired" if released else "it was not retired")
        self.write(json.dumps({"name": name, "released": released}))


def is_staff(user) -> bool:
    groups = [g.name for g in user.groups]
    return roles.is_admin(user.admin, groups) or INSTRUCTORS_GROUP in groups


async def promote(handler, users, do) -> None:
    """Promote ``users`` (not staff yet) with ``do()`` (JupyterHub's own handler); then every
    session and token of theirs ends and their servers stop, so that nothing opened before the
    promotion carries it. A name an attendee claimed is refused (409) before anything changed."""
    for user in users:
        if handler.authenticator.is_claimed(user.name, user):
            raise web.HTTPError(409, TAKE_OVER_HINT.format(name=user.name))
        refuse_if_busy(user)
    result = do()
    if result is not None:
        await result
    for user in users:
        ended = await end_everything(handler, user)
        handler.log.info("stackhub: %s promoted %s; servers stopped: %s; tokens ended: %d", handler.current_user.name,
                         user.name, ", ".join(ended["stopped"]) or "none", ended["tokens"])


class GuardedGroupUsersAPIHandler(GroupUsersAPIHandler):
    """JupyterHub's POST /groups/NAME/users; joining ``instructors`` is a promotion (``promote``)."""

    @needs_scope("groups")
    async def post(self, group_name):
        users = []
        if group_name == INSTRUCTORS_GROUP:
            names = (self.get_json_body() or {}).get("users") or []
            found = (self.find_user(n) for n in names if isinstance(n, str))
            users = [u for u in found if u is not None and not is_staff(u)]
        await promote(self, users, lambda: super(GuardedGroupUsersAPIHandler, self).post(group_name))


class GuardedUserAPIHandler(UserAPIHandler):
    """JupyterHub's PATCH /users/NAME; ``admin: true`` is a promotion (``promote``)."""

    @needs_scope("admin:users")
    async def patch(self, user_name):
        data = self.get_json_body() or {}
        user = self.find_user(user_name)
        users = [user] if data.get("admin") and user is not None and not user.admin else []
        await promote(self, users, lambda: super(GuardedUserAPIHandler, self).patch(user_name))
