"""A real OpenID Connect provider for the OAuth end-to-end tests, built on Authlib's server.

Why this and not Dex: the Go module proxy serves no Dex build with groups on static passwords
today (Dex's api/v2 module at the matching commit is refused with 403), and the e2e flow needs
group claims. Authlib (https://authlib.org) is the OAuth/OIDC server library Python projects
trust; it implements the protocol (code grant, client authentication, nonce, ID tokens). This
file only chooses its settings and holds the three test users, like a Dex config would.

Two settings are what sites run into and what the hub must cope with, each a command-line option:

- ``--auth-method client_secret_basic|client_secret_post``: the only token endpoint
  authentication the client is registered for; discovery advertises just that one;
- ``--require-nonce``: an authorization request without ``nonce`` is refused
  (Authlib's ``OpenIDCode(require_nonce=True)``).

Run as ``python -m tests.integration.oidc_provider --issuer URL --port N ...``; it serves HTTPS on
``--host:--port`` until killed. The login page has ``#login``, ``#password`` and ``#submit-login``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from dataclasses import dataclass, field
from html import escape

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify, request
from joserfc.jwk import RSAKey

SCOPES = ["openid", "profile", "email", "groups"]


@dataclass(frozen=True)
class TestUser:
    username: str
    email: str
    password: str
    groups: tuple[str, ...]


# allowed + instructor; admin; outside every group the hub admits
ADA = TestUser("ada", "ada@stackhub.test", "ada-tutorial-pw", ("lsst-tutorial", "lsst-teachers"))
GRACE = TestUser("grace", "grace@stackhub.test", "grace-admin-pw", ("lsst-admins",))
EVE = TestUser("eve", "eve@stackhub.test", "eve-outsider-pw", ("outsiders",))
USERS = {u.email: u for u in (ADA, GRACE, EVE)}


@dataclass
class Client:
    """One registered client, accepting exactly one token endpoint authentication method."""

    client_id: str
    client_secret: str
    redirect_uri: str
    auth_method: str

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uri

    def get_allowed_scope(self, scope):
        return " ".join(s for s in scope.split() if s in SCOPES)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return endpoint != "token" or method == self.auth_method

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type == "authorization_code"


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: TestUser
    nonce: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return self.auth_time

    def get_acr(self):
        return None

    def get_amr(self):
        return None


@dataclass
class Token:
    access_token: str
    client_id: str
    scope: str
    user: TestUser
    issued_at: int
    expires_in: int

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def is_expired(self):
        return time.time() > self.issued_at + self.expires_in

    def is_revoked(self):
        return False

    def get_user(self):
        return self.user


def user_claims(user: TestUser, scope: str) -> dict:
    claims = {"sub": f"id-{user.username}"}
    scopes = scope.split()
    if "profile" in scopes:
        claims.update(preferred_username=user.username, name=user.username)
    if "email" in scopes:
        claims.update(email=user.email, email_verified=True)
    if "groups" in scopes:
        claims["groups"] = list(user.groups)
    return claims


LOGIN_PAGE = """<!doctype html><html><head><title>Test OIDC provider</title></head><body>
<h1>Log in to the test provider</h1>{error}
<form method="post"><label>Email <input id="login" name="login" autocomplete="username"></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="submit-login" type="submit">Login</button></form></body></html>"""


def make_app(issuer: str, client: Client, require_nonce: bool) -> Flask:
    app = Flask(__name__)
    key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
    codes: dict[str, Code] = {}
    tokens: dict[str, Token] = {}

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = [client.auth_method]

        def save_authorization_code(self, code, req):
            codes[code] = Code(code, req.client.get_client_id(), req.payload.redirect_uri, req.payload.scope,
                               req.user, req.payload.data.get("nonce"))

        def query_authorization_code(self, code, cl):
            item = codes.get(code)
            return item if item and item.client_id == cl.get_client_id() else None

        def delete_authorization_code(self, authorization_code):
            codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code):
            return authorization_code.user

    class IDToken(OpenIDCode):
        def exists_nonce(self, nonce, req):
            return any(c.nonce == nonce for c in codes.values())

        def resolve_client_private_key(self, cl):
            return key

        def get_client_algorithm(self, cl):
            return "RS256"

        def get_encode_header(self, cl):
            return {"alg": "RS256", "kid": "test-key"}

        def get_client_claims(self, cl):
            return {"iss": issuer, "aud": [cl.get_client_id()]}

        def generate_user_info(self, user, scope):
            return UserInfo(user_claims(user, scope))

    def save_token(token, req):
        tokens[token["access_token"]] = Token(token["access_token"], req.client.get_client_id(), token["scope"],
                                              req.user, int(time.time()), token["expires_in"])

    server = AuthorizationServer(app, query_client=lambda cid: client if cid == client.client_id else None,
                                 save_token=save_token)
    server.register_grant(CodeGrant, [IDToken(require_nonce=require_nonce)])

    class Bearer(BearerTokenValidator):
        def authenticate_token(self, token_string):
            return tokens.get(token_string)

    protect = ResourceProtector()
    protect.register_token_validator(Bearer())

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return jsonify({
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/auth",
            "token_endpoint": f"{issuer}/token",
            "userinfo_endpoint": f"{issuer}/userinfo",
            "jwks_uri": f"{issuer}/keys",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": SCOPES,
            "token_endpoint_auth_methods_supported": [client.auth_method],
            "claims_supported": ["sub", "preferred_username", "name", "email", "email_verified", "groups"],
        })

    @app.get("/keys")
    def keys():
        return jsonify({"keys": [key.as_dict(private=False)]})

    @app.route("/auth", methods=["GET", "POST"])
    def authorize():
        try:
            server.get_consent_grant(end_user=None)  # a bad request is refused before any login
        except Exception as error:  # OAuth2Error: back to the client with error=..., or a 400
            return server.handle_error_response(request, error)
        if request.method == "GET":
            return LOGIN_PAGE.format(error="")
        user = USERS.get(request.form.get("login", ""))
        if user is None or not secrets.compare_digest(user.password, request.form.get("password", "")):
            return LOGIN_PAGE.format(error=f"<p id='error'>Invalid email or password for "
                                           f"{escape(request.form.get('login', ''))}</p>"), 401
        return server.create_authorization_response(grant_user=user)

    @app.post("/token")
    def token():
        return server.create_token_response()

    @app.get("/userinfo")
    @protect("openid")
    def userinfo():
        from authlib.integrations.flask_oauth2 import current_token
        return jsonify(user_claims(current_token.user, current_token.scope))

    return app


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--client-id", default="stackhub")
    ap.add_argument("--client-secret-file", required=True)
    ap.add_argument("--redirect-uri", required=True)
    ap.add_argument("--auth-method", choices=["client_secret_basic", "client_secret_post"],
                    default="client_secret_basic")
    ap.add_argument("--require-nonce", action="store_true")
    args = ap.parse_args(argv)
    with open(args.client_secret_file) as f:
        secret = f.read().strip()
    client = Client(args.client_id, secret, args.redirect_uri, args.auth_method)
    app = make_app(args.issuer.rstrip("/"), client, args.require_nonce)
    print(json.dumps({"issuer": args.issuer, "auth_method": args.auth_method,
                      "require_nonce": args.require_nonce}), flush=True)
    app.run(host=args.host, port=args.port, ssl_context=(args.cert, args.key), threaded=True)


if __name__ == "__main__":
    main()
