"""Generic OpenID Connect login as providers expect it, on oauthenticator's GenericOAuthenticator.

GenericOAuthenticator speaks plain OAuth 2 with an OIDC flavour; three things real providers ask
for are added here, each where oauthenticator leaves a hook:

- **A nonce** (OIDC Core 3.1.2.1, 3.1.3.7): some providers refuse an authorization request without
  one. The login handler sends a fresh nonce and keeps it in an encrypted cookie; the ID token that
  comes back from the token endpoint must carry the same value, or the login stops.
- **The client authentication the provider registered**: ``basic_auth`` (``client_secret_basic``)
  or the secret in the form (``client_secret_post``) is chosen in ``auth.update_oauth`` from the
  discovery document; nothing to do at request time.
- **The provider's refusals as pages that name them**: a token or userinfo request the provider
  refuses (``invalid_client``, a 5xx, a broken connection) becomes an HTTP 502 page quoting the
  provider's answer, and an ``error=`` on the callback a 400 page naming it, never a bare 500.

The ID token is read without checking its signature: it comes straight from the token endpoint
over TLS, which OIDC Core 3.1.3.7 (6) allows in place of the signature check; oauthenticator
reads it the same way.
"""

from __future__ import annotations

import json
import secrets

import jwt
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthCallbackHandler, OAuthLoginHandler
from tornado import web
from tornado.httpclient import HTTPClientError

from spawner.hub.lifecycle import StopServersOnDelete

NONCE_COOKIE = "stackhub-oidc-nonce"
ADMIN_HINT = "Tell the hub's administrators; the hub's log has the details."


class NonceLoginHandler(OAuthLoginHandler):
    """OAuthLoginHandler that adds a fresh ``nonce`` to the authorization request."""

    def get(self):
        self._stackhub_nonce = secrets.token_urlsafe(32)
        self._set_cookie(NONCE_COOKIE, self._stackhub_nonce, expires_days=1, httponly=True)
        return super().get()

    def authorize_redirect(self, *args, **kwargs):
        kwargs["extra_params"] = {**(kwargs.get("extra_params") or {}), "nonce": self._stackhub_nonce}
        return super().authorize_redirect(*args, **kwargs)


class ProviderErrorCallbackHandler(OAuthCallbackHandler):
    """An ``error=`` from the provider on the callback: a 400 page that names the provider's answer."""

    def check_error(self):
        error = self.get_argument("error", "")
        if error:
            detail = self.get_argument("error_description", "")
            service = self.authenticator.login_service
            raise web.HTTPError(400, "The login provider %s refused the login: %s%s. %s",
                                service, error, f" ({detail})" if detail else "", ADMIN_HINT)


def provider_answer(e: HTTPClientError) -> str:
    """A short, loggable summary of a provider's error response (OAuth ``error`` fields if JSON)."""
    if e.response is None:
        return str(e)
    body = (e.response.body or b"")[:2000].decode("utf8", "replace")
    try:
        doc = json.loads(body)
    except ValueError:
        return f"HTTP {e.code}: {body.strip()[:300]}" if body.strip() else f"HTTP {e.code}"
    if isinstance(doc, dict) and doc.get("error"):
        desc = doc.get("error_description")
        return f"HTTP {e.code} {doc['error']}" + (f": {desc}" if desc else "")
    return f"HTTP {e.code}"


class StackhubOIDCAuthenticator(StopServersOnDelete, GenericOAuthenticator):
    """GenericOAuthenticator with a nonce and clear pages for provider errors (see the module doc)."""

    login_handler = NonceLoginHandler
    callback_handler = ProviderErrorCallbackHandler

    def _refused(self, what: str, e: HTTPClientError) -> web.HTTPError:
        answer = provider_answer(e)
        self.log.error("OIDC: the provider refused the %s: %s", what, answer)
        return web.HTTPError(502, "The login provider %s refused the hub's %s (%s). %s",
                             self.login_service, what, answer, ADMIN_HINT)

    async def get_token_info(self, handler, params):
        try:
            token_info = await super().get_token_info(handler, params)
        except HTTPClientError as e:
            raise self._refused("token request", e) from None
        self.check_nonce(handler, token_info)
        return token_info

    async def token_to_user(self, token_info):
        try:
            return await super().token_to_user(token_info)
        except HTTPClientError as e:
            raise self._refused("user info request", e) from None

    def check_nonce(self, handler, token_info: dict):
        """The ID token must carry the nonce this browser's login sent (and only once)."""
        sent = (handler.get_secure_cookie(NONCE_COOKIE) or b"").decode("utf8", "replace")
        handler.clear_cookie(NONCE_COOKIE)
        id_token = token_info.get("id_token")
        if not id_token:
            self.log.error("OIDC: the token response has no id_token (scope openid was requested)")
            raise web.HTTPError(502, "The login provider %s returned no ID token. %s", self.login_service, ADMIN_HINT)
        try:
            claims = jwt.decode(id_token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            self.log.error("OIDC: unreadable id_token: %s", e)
            raise web.HTTPError(502, "The login provider %s returned an unreadable ID token. %s",
                                self.login_service, ADMIN_HINT) from None
        got = claims.get("nonce")
        if not sent or not isinstance(got, str) or not secrets.compare_digest(got, sent):
            self.log.warning("OIDC: id_token nonce does not match this login's (missing: %s)", got is None)
            raise web.HTTPError(403, "This login could not be verified (the ID token is not for this login "
                                     "attempt). Please start the login again from the hub's page.")
