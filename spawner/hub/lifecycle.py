"""What happens to a user's servers when an admin deletes the user (admin page or REST API).

JupyterHub's ``DELETE /hub/api/users/NAME`` stops only the default server; a running named server
then makes the deletion fail with HTTP 500 ("Spawner ... is active and cannot be deleted") after
the account is half gone, and its container runs on with nobody to stop it. ``StopServersOnDelete``
is mixed into every stackhub authenticator: its ``delete_user`` (which JupyterHub calls before it
deletes the spawners) takes each of the user's servers off the proxy and stops it, and refuses with
HTTP 400 while one is still starting or stopping, before anything is deleted.

The user's home is the spawner's business (``delete_forever`` of the default server), kept unless
``volumes.deleteHomeWithUser`` says otherwise; either way the hub's log says which.
"""

from __future__ import annotations

from jupyterhub.utils import maybe_future
from oauthenticator.cilogon import CILogonOAuthenticator
from oauthenticator.github import GitHubOAuthenticator
from tornado import web


class StopServersOnDelete:
    """Stop all of a user's servers before the user is deleted (see the module docstring)."""

    async def delete_user(self, user):
        busy = [(name, s.pending) for name, s in user.spawners.items() if s.pending]
        if busy:
            which = ", ".join(f"{name or '(default)'} ({state})" for name, state in busy)
            raise web.HTTPError(400, f"{user.name}'s servers are busy: {which}; delete the user once they "
                                     "have started or stopped")
        proxy = self.parent.proxy if self.parent is not None else None
        for name, spawner in list(user.spawners.items()):
            if not spawner.active:
                continue
            self.log.info("stackhub: stopping %s's server %r: the user is being deleted", user.name, name)
            if proxy is not None:
                await proxy.delete_user(user, name)
            await user.stop(name)
        return await maybe_future(super().delete_user(user))


class StackhubGitHubOAuthenticator(StopServersOnDelete, GitHubOAuthenticator):
    """GitHubOAuthenticator (configured in its own section) that stops a deleted user's servers."""


class StackhubCILogonOAuthenticator(StopServersOnDelete, CILogonOAuthenticator):
    """CILogonOAuthenticator (configured in its own section) that stops a deleted user's servers."""
