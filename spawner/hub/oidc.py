"""Generic OpenID Connect login as providers expect it, on oauthenticator's GenericOAuthenticator.

GenericOAuthenticator speaks plain OAuth 2 with an OIDC flavour; three things real providers ask
for are added here, each where oauthenticator leaves a hook:

- **A verified ID token** (OIDC Core 3.1.3.7): its signature is checked against the provider's
  published keys (``jwks_uri`` of discovery, fetched again when a token names a key not seen yet,
  as providers rotate them), with an asymmetric algorithm the provider advertises, never ``none``
  or HMAC; then ``iss`` (the discovered issuer), ``aud`` (this hub's client id, and ``azp`` when
  there are several audiences) and ``exp``/``iat`` (a minute of clock skew). Only then is any claim
  of it trusted.
- **A nonce** (OIDC Core 3.1.2.1, 3.1.3.7): some providers refuse an authorization request without
  one. The login handler sends a fresh nonce and keeps it in an encrypted cookie; the verified ID
  token must carry the same value, or the login stops.
- **The client authentication the provider registered**: ``basic_auth`` (``client_secret_basic``)
  or the secret in the form (``client_secret_post``) is chosen in ``auth.update_oauth`` from the
  discovery document; nothing to do at request time.
- **The provider's refusals as pages that name them**: a token or userinfo request the provider
  refuses (``invalid_client``, a 5xx, a broken connection) becomes an HTTP 502 page quoting the
  provider's answer, and an ``error=`` on the callback a 400 page naming it, never a bare 500.

Before, the ID token was read unchecked, on the strength of TLS to the token endpoint (which OIDC
Core 3.1.3.7 (6) allows); the hub now checks it whole, so a token that did not come from the
provider, or not for this hub, is refused however it arrived.
"""

from __future__ import annotations

import json
import secrets
import time

import jwt
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthCallbackHandler, OAuthLoginHandler
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import Integer, List, Unicode

from spawner.hub.auth import ID_TOKEN_ALGORITHMS
from spawner.hub.lifecycle import StopServersOnDelete

NONCE_COOKIE = "stackhub-oidc-nonce"
ADMIN_HINT = "Tell the hub's administrators; the hub's log has the details."
NOT_VERIFIED = ("This login could not be verified (the ID token is not for this login attempt). "
                "Please start the login again from the hub's page.")


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

    oidc_issuer = Unicode("", config=True, help="""The issuer an ID token must name (``iss``): the
        ``issuer`` of the provider's discovery document (spawner.hub.auth sets it).""")
    oidc_jwks_uri = Unicode("", config=True, help="""The provider's JSON Web Key Set (``jwks_uri`` of
        discovery): the public keys ID tokens are signed with.""")
    oidc_algorithms = List(Unicode(), default_value=["RS256"], config=True, help="""Signature algorithms
        accepted on an ID token: those of ID_TOKEN_ALGORITHMS (asymmetric: never "none", never HMAC,
        whose key would be this hub's own client secret) the provider advertises
        (``id_token_signing_alg_values_supported``); RS256 when it says none (OIDC Core's default).""")
    id_token_leeway = Integer(60, config=True, help="Seconds of clock difference allowed on exp, iat and nbf.")
    jwks_refresh_seconds = Integer(60, config=True, help="""Seconds between two fetches of the provider's
        keys for a key id not seen yet (a provider's key rotation; not a way to make the hub fetch at will).""")

    _jwks: dict | None = None
    _jwks_fetched: float = 0.0

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
        sent = self.take_nonce(handler)  # good for this one callback, whatever follows
        self.check_nonce(sent, await self.verified_claims(token_info))
        return token_info

    async def token_to_user(self, token_info):
        try:
            return await super().token_to_user(token_info)
        except HTTPClientError as e:
            raise self._refused("user info request", e) from None

    @staticmethod
    def take_nonce(handler) -> str:
        """The nonce this browser's login sent (from its cookie, which goes: one callback only)."""
        sent = (handler.get_secure_cookie(NONCE_COOKIE) or b"").decode("utf8", "replace")
        handler.clear_cookie(NONCE_COOKIE)
        return sent

    async def provider_keys(self, refresh: bool = False) -> dict:
        """kid -> ``jwt.PyJWK`` of the provider's signing keys, fetched once and again (at most every
        jwks_refresh_seconds) when ``refresh`` asks for a key not seen yet."""
        due = time.monotonic() - self._jwks_fetched >= self.jwks_refresh_seconds
        if self._jwks is not None and not (refresh and due):
            return self._jwks
        try:
            doc = await self.httpfetch(self.oidc_jwks_uri, label="fetching the provider's keys", method="GET",
                                       headers={"Accept": "application/json"})
        except HTTPClientError as e:
            raise self._refused("request for its signing keys", e) from None
        keys = {}
        for entry in (doc.get("keys") if isinstance(doc, dict) else None) or []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                keys[str(entry.get("kid") or "")] = jwt.PyJWK(entry)
            except (jwt.PyJWTError, ValueError, TypeError) as e:
                self.log.warning("OIDC: skipping a key of %s: %s", self.oidc_jwks_uri, e)
        self._jwks, self._jwks_fetched = keys, time.monotonic()
        return keys

    async def signing_key(self, kid: str):
        """The provider's key ``kid`` (the only key, for a token that names none); None: not published."""
        for refresh in (False, True):
            keys = await self.provider_keys(refresh=refresh)
            if kid in keys or (not kid and len(keys) == 1):
                return keys[kid] if kid in keys else next(iter(keys.values()))
        return None

    async def verified_claims(self, token_info: dict) -> dict:
        """The ID token's claims, once its signature (the provider's key), ``iss``, ``aud``
        (``azp``), ``exp`` and ``iat`` have passed; 502 without one, 403 for one that fails."""
        id_token = token_info.get("id_token")
        if not id_token:
            self.log.error("OIDC: the token response has no id_token (scope openid was requested)")
            raise web.HTTPError(502, "The login provider %s returned no ID token. %s", self.login_service, ADMIN_HINT)
        try:
            header = jwt.get_unverified_header(id_token)
            alg, kid = header.get("alg"), str(header.get("kid") or "")
            if alg not in self.oidc_algorithms or alg not in ID_TOKEN_ALGORITHMS:
                raise jwt.InvalidAlgorithmError(f"signed with {alg!r}, not one of {', '.join(self.oidc_algorithms)}")
            key = await self.signing_key(kid)
            if key is None:
                raise jwt.InvalidKeyError(f"signed with key {kid!r}, which {self.oidc_jwks_uri} does not publish")
            claims = jwt.decode(id_token, key=key.key, algorithms=[alg], audience=self.client_id, issuer=self.oidc_issuer,
                                leeway=self.id_token_leeway, options={"require": ["iss", "aud", "exp", "iat"]})
            aud = claims["aud"]
            if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.client_id:
                raise jwt.InvalidAudienceError(f"several audiences and azp {claims.get('azp')!r} is not this hub")
        except jwt.PyJWTError as e:
            self.log.warning("OIDC: ID token refused: %s", e)
            raise web.HTTPError(403, NOT_VERIFIED) from None
        return claims

    def check_nonce(self, sent: str, claims: dict):
        """The verified ID token must carry the nonce this browser's login sent."""
        got = claims.get("nonce")
        if not sent or not isinstance(got, str) or not secrets.compare_digest(got, sent):
            self.log.warning("OIDC: id_token nonce does not match this login's (missing: %s)", got is None)
            raise web.HTTPError(403, NOT_VERIFIED)
