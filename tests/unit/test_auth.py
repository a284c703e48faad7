"""OAuth wiring: the stackhub auth config applied to a plain traitlets Config, then loaded by the
real oauthenticator classes (no provider server is contacted; OIDC discovery is faked only where
the provider is not the point, and served by a local HTTP server where it is)."""

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from oauthenticator.cilogon import CILogonOAuthenticator
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.github import GitHubOAuthenticator
from traitlets.config import Config

from spawner.hub.auth import GroupMapper, OAuthSetupError, client_secret, discover, read_oauth_inputs, update_oauth
from spawner.core.config import ConfigError, StackhubConfig, load_config
from spawner.hub.apply import HubPaths, apply_config
from spawner.hub.oidc import NonceLoginHandler, ProviderErrorCallbackHandler, StackhubOIDCAuthenticator
from spawner.deploy.tls import ensure_local_tls

SECRET = "s3cret-value-never-logged"
ENV = {"STACKHUB_OAUTH_CLIENT_SECRET": SECRET}
ISSUER = "https://idp.example.org/realms/lsst"
DISCOVERY = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/auth",
    "token_endpoint": f"{ISSUER}/token",
    "userinfo_endpoint": f"{ISSUER}/userinfo",
    "jwks_uri": f"{ISSUER}/keys",
    "scopes_supported": ["openid", "profile", "email", "groups"],
}


def cfg(auth, **top):
    return StackhubConfig.model_validate({"auth": auth, **top})


def apply(auth, env=ENV, doc=DISCOVERY, **top):
    c = Config()
    conf = cfg(auth, **top)
    update_oauth(c, conf, read_oauth_inputs(conf, environ=env, discover=lambda a: doc))
    return c


OIDC = {"type": "oidc", "clientId": "stackhub", "issuer": ISSUER, "allowedGroups": ["lsst-tutorial"],
        "adminGroups": ["lsst-admins"], "instructorGroups": ["lsst-teachers"]}


def test_oidc_uses_generic_authenticator_with_discovered_endpoints():
    c = apply(OIDC)
    assert c.JupyterHub.authenticator_class == "spawner.hub.oidc.StackhubOIDCAuthenticator"
    g = c.GenericOAuthenticator
    assert g.client_id == "stackhub"
    assert g.client_secret == SECRET
    assert g.oauth_callback_url == "https://localhost:8443/hub/oauth_callback"
    assert (g.authorize_url, g.token_url, g.userdata_url) == (f"{ISSUER}/auth", f"{ISSUER}/token", f"{ISSUER}/userinfo")
    assert g.username_claim == "preferred_username"
    assert g.scope == ["openid", "profile", "email", "groups"]
    assert g.manage_groups is True
    assert g.allowed_groups == {"lsst-tutorial"}
    assert g.admin_groups == {"lsst-admins"}
    assert g.allowed_users == set()
    assert g.allow_all is False and g.allow_existing_users is False
    assert g.admin_users == set()  # the shared-password default "admin" is not carried over
    assert "not in a group this hub admits" in g.custom_403_message
    assert g.login_service == "idp.example.org"


def test_oidc_groups_scope_only_when_offered_and_id_token_without_userinfo():
    doc = {k: v for k, v in DISCOVERY.items() if k != "userinfo_endpoint"}
    doc["scopes_supported"] = ["openid", "profile", "email"]
    g = apply(OIDC, doc=doc).GenericOAuthenticator
    assert g.scope == ["openid", "profile", "email"]
    assert g.userdata_from_id_token is True
    g = apply({**OIDC, "scopes": ["openid", "lsst"]}).GenericOAuthenticator
    assert g.scope == ["openid", "profile", "email", "groups", "lsst"]


def test_oidc_without_scopes_supported_asks_only_standard_scopes_plus_configured():
    doc = {k: v for k, v in DISCOVERY.items() if k != "scopes_supported"}
    assert apply(OIDC, doc=doc).GenericOAuthenticator.scope == ["openid", "profile", "email"]
    g = apply({**OIDC, "scopes": ["groups"]}, doc=doc).GenericOAuthenticator
    assert g.scope == ["openid", "profile", "email", "groups"]
    # openid is always asked for, even if a provider forgets to list it
    g = apply(OIDC, doc={**DISCOVERY, "scopes_supported": ["email", "groups"]}).GenericOAuthenticator
    assert g.scope == ["openid", "email", "groups"]


@pytest.mark.parametrize("offered, basic", [
    (None, True),  # not listed: RFC 8414's default is client_secret_basic
    (["client_secret_basic", "client_secret_post"], True),
    (["client_secret_post", "client_secret_basic"], True),
    (["client_secret_post"], False),
    (["private_key_jwt", "client_secret_basic"], True),
])
def test_token_endpoint_auth_method_follows_discovery(offered, basic):
    doc = {**DISCOVERY, **({"token_endpoint_auth_methods_supported": offered} if offered else {})}
    assert apply(OIDC, doc=doc).GenericOAuthenticator.basic_auth is basic


def test_token_endpoint_auth_method_config_wins_and_unusable_provider_stops_the_hub():
    doc = {**DISCOVERY, "token_endpoint_auth_methods_supported": ["client_secret_basic"]}
    g = apply({**OIDC, "tokenEndpointAuthMethod": "client_secret_post"}, doc=doc).GenericOAuthenticator
    assert g.basic_auth is False
    doc = {**DISCOVERY, "token_endpoint_auth_methods_supported": ["private_key_jwt", "tls_client_auth"]}
    with pytest.raises(OAuthSetupError, match="accepts private_key_jwt, tls_client_auth.*tokenEndpointAuthMethod"):
        apply(OIDC, doc=doc)


def test_oidc_authenticator_adds_nonce_and_provider_error_handlers():
    a = StackhubOIDCAuthenticator(config=apply(OIDC))
    assert isinstance(a, GenericOAuthenticator)
    assert a.login_handler is NonceLoginHandler and a.callback_handler is ProviderErrorCallbackHandler
    assert a.basic_auth is True and a.client_secret == SECRET


def test_explicit_admin_users_and_callback_and_public_port_kept():
    c = apply({**OIDC, "callbackUrl": "https://hub.lsst.org/hub/oauth_callback"},
              hub={"adminUsers": ["alice"], "publicHost": "hub.lsst.org", "httpsPort": 443})
    assert "admin_users" not in c.GenericOAuthenticator  # hub.adminUsers (set by update_hub) applies
    assert c.GenericOAuthenticator.oauth_callback_url == "https://hub.lsst.org/hub/oauth_callback"
    c = apply(OIDC, hub={"publicHost": "hub.lsst.org", "httpsPort": 443})
    assert c.GenericOAuthenticator.oauth_callback_url == "https://hub.lsst.org/hub/oauth_callback"


def test_github_uses_organizations_and_teams():
    c = apply({"type": "github", "clientId": "Iv1.abc", "allowedGroups": ["lsst", "lsst-dm:tutorial"],
               "adminGroups": ["lsst:hub-admins"], "instructorGroups": ["lsst:teachers"],
               "allowedUsers": ["octocat"]})
    assert c.JupyterHub.authenticator_class == "spawner.hub.lifecycle.StackhubGitHubOAuthenticator"
    g = c.GitHubOAuthenticator
    assert g.client_id == "Iv1.abc" and g.client_secret == SECRET
    assert g.allowed_organizations == {"lsst", "lsst-dm:tutorial"}
    assert "allowed_groups" not in g  # GitHub orgs are checked by the GitHub API, not hub groups
    assert g.admin_groups == {"lsst:hub-admins"}
    assert g.allowed_users == {"octocat"}
    assert g.populate_teams_in_auth_state is True
    assert "read:org" in g.scope
    assert g.login_service == "GitHub"


def test_cilogon_idps_and_groups_claim():
    c = apply({"type": "cilogon", "clientId": "cilogon:/client_id/123", "clientSecretEnv": "CILOGON_SECRET",
               "allowedGroups": ["CO:COU:lsst-tutorial:members:active"],
               "idps": [{"entityId": "https://idp.ncsa.illinois.edu/idp/shibboleth", "usernameClaim": "eppn",
                         "stripDomain": "illinois.edu"},
                        {"entityId": "http://github.com/login/oauth/authorize", "usernameClaim": "oidc",
                         "allowedDomains": ["*.lsst.org"]}]},
              env={"CILOGON_SECRET": "cil-secret"})
    assert c.JupyterHub.authenticator_class == "spawner.hub.lifecycle.StackhubCILogonOAuthenticator"
    g = c.CILogonOAuthenticator
    assert g.client_secret == "cil-secret"
    assert g.idps == {
        "https://idp.ncsa.illinois.edu/idp/shibboleth": {
            "username_derivation": {"username_claim": "eppn", "action": "strip_idp_domain", "domain": "illinois.edu"}},
        "http://github.com/login/oauth/authorize": {
            "username_derivation": {"username_claim": "oidc"}, "allowed_domains": ["*.lsst.org"]},
    }
    assert g.allowed_groups == {"CO:COU:lsst-tutorial:members:active"}
    assert g.auth_state_groups_key.claim == "isMemberOf"


@pytest.mark.parametrize("auth, cls", [
    (OIDC, StackhubOIDCAuthenticator),
    ({"type": "github", "clientId": "x", "allowedGroups": ["lsst"], "adminGroups": ["lsst:admins"]},
     GitHubOAuthenticator),
    ({"type": "cilogon", "clientId": "x", "allowedGroups": ["g"],
      "idps": [{"entityId": "https://idp.example.org"}]}, CILogonOAuthenticator),
])
def test_authenticator_class_accepts_the_config(auth, cls):
    """The real class loads every trait we set (unknown or conflicting traits would fail here)."""
    a = cls(config=apply(auth))
    assert a.client_secret == SECRET
    assert a.manage_groups is True


async def test_groups_claim_decides_allowed_admin_and_instructors():
    a = StackhubOIDCAuthenticator(config=apply(OIDC))

    async def login(groups):
        model = {"name": "u", "admin": None, "auth_state": {"oauth_user": {"preferred_username": "u", "groups": groups}}}
        model = await a._apply_managed_groups(model)
        return model, await a.check_allowed("u", model)

    model, allowed = await login(["lsst-tutorial", "lsst-teachers", "unrelated"])
    assert allowed and model["groups"] == ["instructors", "lsst-teachers", "lsst-tutorial"]
    assert model["admin"] is False
    model, allowed = await login(["lsst-admins"])
    assert allowed and model["admin"] is True  # admins may log in without being in allowedGroups
    model, allowed = await login(["someone-else"])
    assert not allowed and model["groups"] == []
    model, allowed = await login([])
    assert not allowed


def test_group_mapper_github_teams_and_cilogon_string():
    m = GroupMapper("github", None, frozenset({"lsst"}), frozenset(), frozenset({"lsst:teachers"}))
    teams = [{"slug": "teachers", "organization": {"login": "lsst"}}, {"slug": "x", "organization": {"login": "other"}}]
    assert m({"teams": teams}) == ["instructors", "lsst", "lsst:teachers"]
    m = GroupMapper("cilogon", "isMemberOf", frozenset({"a", "b"}), frozenset(), frozenset())
    assert m({"cilogon_user": {"isMemberOf": "a, c,b"}}) == ["a", "b"]


def test_client_secret_from_file_wins_and_is_stripped(tmp_path):
    f = tmp_path / "secret"
    f.write_text("from-file\n")
    g = apply({**OIDC, "clientSecretFile": str(f)}).GenericOAuthenticator
    assert g.client_secret == "from-file"


def test_missing_secret_names_the_variable():
    with pytest.raises(SystemExit) as e:
        apply(OIDC, env={})
    assert "STACKHUB_OAUTH_CLIENT_SECRET" in str(e.value) and "auth.clientSecretFile" in str(e.value)


def test_missing_or_empty_secret_file_names_the_file(tmp_path):
    auth = cfg({**OIDC, "clientSecretFile": str(tmp_path / "nope")}).auth
    with pytest.raises(OAuthSetupError, match=r"auth.clientSecretFile .*nope: cannot read"):
        client_secret(auth, ENV)
    (tmp_path / "empty").write_text("\n")
    auth = cfg({**OIDC, "clientSecretFile": str(tmp_path / "empty")}).auth
    with pytest.raises(OAuthSetupError, match="is empty"):
        client_secret(auth, ENV)


def test_secret_never_in_the_error_or_repr(discovery_server, caplog):
    """The secret is read first; every later failure of the same start must not carry it."""
    c = apply(OIDC)
    assert c.GenericOAuthenticator.client_secret == SECRET  # the secret did enter this path
    assert SECRET not in repr(c.GenericOAuthenticator.auth_state_groups_key)
    assert SECRET not in repr(cfg(OIDC))
    base, docs, ca = discovery_server
    docs["/w/.well-known/openid-configuration"] = json.dumps({**DISCOVERY, "issuer": "https://elsewhere"})
    for issuer in (f"{base}/none", f"{base}/w"):  # the provider answers 404; names another issuer
        with pytest.raises(SystemExit) as e:
            read_oauth_inputs(cfg({**OIDC, "issuer": issuer, "caFile": str(ca)}), environ=ENV)
        assert issuer in str(e.value) and SECRET not in str(e.value)
    assert SECRET not in caplog.text


def test_unreachable_issuer_names_the_url():
    # a port nobody listens on (bound, then closed)
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    auth = cfg({**OIDC, "issuer": f"https://127.0.0.1:{port}/dex"}).auth
    with pytest.raises(OAuthSetupError) as e:
        discover(auth, timeout=3)
    assert f"https://127.0.0.1:{port}/dex/.well-known/openid-configuration" in str(e.value)
    assert "auth.issuer" in str(e.value)


@pytest.fixture
def discovery_server(tmp_path):
    """A local HTTPS server for discovery documents, with a certificate from a stackhub-style CA."""
    tls = ensure_local_tls(tmp_path / "tls", ["127.0.0.1"])
    docs = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = docs.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls.cert, tls.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{srv.server_address[1]}", docs, tls.ca
    srv.shutdown()


def test_discovery_with_private_ca(discovery_server):
    base, docs, ca = discovery_server
    issuer = f"{base}/dex"
    docs["/dex/.well-known/openid-configuration"] = json.dumps(
        {**DISCOVERY, "issuer": issuer, "authorization_endpoint": f"{issuer}/auth"})
    auth = cfg({**OIDC, "issuer": issuer, "caFile": str(ca)}).auth
    assert discover(auth)["authorization_endpoint"] == f"{issuer}/auth"
    # without the CA the certificate is not trusted: the error names the URL
    with pytest.raises(OAuthSetupError, match="CERTIFICATE_VERIFY_FAILED"):
        discover(cfg({**OIDC, "issuer": issuer}).auth)
    # a wrong issuer path answers 404
    with pytest.raises(OAuthSetupError, match="HTTP 404"):
        discover(cfg({**OIDC, "issuer": f"{base}/other", "caFile": str(ca)}).auth)
    # a document naming another issuer is refused
    docs["/x/.well-known/openid-configuration"] = json.dumps(DISCOVERY)
    with pytest.raises(OAuthSetupError, match="names the issuer"):
        discover(cfg({**OIDC, "issuer": f"{base}/x", "caFile": str(ca)}).auth)


def test_ca_file_passed_to_oauthenticator_requests(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    g = apply({**OIDC, "caFile": str(ca)}).GenericOAuthenticator
    assert g.http_request_kwargs == {"ca_certs": str(ca)}


def test_apply_config_routes_oauth_to_update_oauth(tmp_path, monkeypatch, discovery_server):
    base, docs, ca = discovery_server
    issuer = f"{base}/dex"
    docs["/dex/.well-known/openid-configuration"] = json.dumps({**DISCOVERY, "issuer": issuer})
    for name in ("proxy-token", "admin-token", "shared-password", "admin-password"):
        (tmp_path / name).write_text("v\n")
    monkeypatch.setenv("STACKHUB_OAUTH_CLIENT_SECRET", SECRET)
    c = apply_config(Config(), cfg({**OIDC, "issuer": issuer, "caFile": str(ca)}), HubPaths(tmp_path, tmp_path))
    assert c.JupyterHub.authenticator_class.endswith("StackhubOIDCAuthenticator")
    assert c.GenericOAuthenticator.client_secret == SECRET


@pytest.mark.parametrize("auth, message", [
    ({"type": "oidc", "clientId": "x", "allowedGroups": ["g"]}, "auth.issuer is required"),
    ({"type": "github", "clientId": "x"}, "nobody could log in"),
    ({"type": "github", "clientId": "x", "allowAll": True, "issuer": ISSUER}, "for auth.type 'oidc' only"),
    ({"type": "cilogon", "clientId": "x", "allowedGroups": ["g"]}, "at least one identity provider"),
    ({"type": "github", "clientId": "x", "allowAll": True, "tokenEndpointAuthMethod": "client_secret_post"},
     "tokenEndpointAuthMethod is for auth.type 'oidc' only"),
    ({"type": "oidc", "clientId": "x", "issuer": ISSUER, "allowAll": True, "tokenEndpointAuthMethod": "none"},
     "tokenEndpointAuthMethod"),
    ({"type": "oidc", "clientId": "x", "issuer": ISSUER, "allowedGroups": ["g"], "clientSecret": "inline"},
     "clientSecret"),
])
def test_bad_oauth_config_refused(tmp_path, auth, message):
    import yaml

    f = tmp_path / "stackhub.yaml"
    f.write_text(yaml.safe_dump({"auth": auth}))
    with pytest.raises(ConfigError, match=message):
        load_config(f)


def test_hub_environment_forwards_the_secret_variable_only(tmp_path):
    from spawner.hub.auth import hub_environment

    assert hub_environment(StackhubConfig(), ENV) == {}
    assert hub_environment(cfg(OIDC), {**ENV, "OTHER": "x"}) == ENV
    f = tmp_path / "secret"
    f.write_text("from-file")
    assert hub_environment(cfg({**OIDC, "clientSecretFile": str(f)}), {}) == {}  # mounted, not in the env
    with pytest.raises(SystemExit, match="STACKHUB_OAUTH_CLIENT_SECRET"):
        hub_environment(cfg(OIDC), {})


class FakeHandler:
    def __init__(self, nonce):
        self.cookies = {"stackhub-oidc-nonce": nonce}

    def get_secure_cookie(self, name):
        value = self.cookies.get(name)
        return value.encode() if value else None

    def clear_cookie(self, name):
        self.cookies.pop(name, None)


@pytest.mark.parametrize("sent, claims, status", [
    ("n-1", {"nonce": "n-1"}, None),
    ("n-1", {"nonce": "n-2"}, 403),   # a token for another login attempt
    ("n-1", {}, 403),                 # the provider ignored the nonce
    (None, {"nonce": "n-1"}, 403),    # no login started in this browser
    ("n-1", {"nonce": 7}, 403),
])
def test_id_token_must_carry_this_logins_nonce(sent, claims, status):
    from tornado.web import HTTPError

    a = StackhubOIDCAuthenticator(config=apply(OIDC))
    handler = FakeHandler(sent)
    taken = a.take_nonce(handler)
    assert handler.cookies == {}  # a nonce is good for one callback only
    if status is None:
        a.check_nonce(taken, claims)
    else:
        with pytest.raises(HTTPError) as e:
            a.check_nonce(taken, claims)
        assert e.value.status_code == status


# --- the ID token is verified before any claim of it is trusted ------------------------------------


def rsa_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


PROVIDER_KEY, FORGER_KEY = rsa_key(), rsa_key()


def jwks(*keys):
    import json as json_

    from jwt.algorithms import RSAAlgorithm

    return {"keys": [{**json_.loads(RSAAlgorithm.to_jwk(k.public_key())), "kid": kid, "use": "sig", "alg": "RS256"}
                     for kid, k in keys]}


def id_token(key=PROVIDER_KEY, kid="k1", alg="RS256", **changes):
    import time as time_

    import jwt

    now = int(time_.time())
    claims = {"iss": ISSUER, "aud": "stackhub", "sub": "ada", "iat": now, "exp": now + 300, "nonce": "n-1", **changes}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, alg, headers={"kid": kid} if kid else None)


def verifier(keys=(("k1", PROVIDER_KEY),)):
    a = StackhubOIDCAuthenticator(config=apply(OIDC))
    a.fetched = []

    async def httpfetch(url, **kw):
        a.fetched.append(url)
        return jwks(*keys)
    a.httpfetch = httpfetch
    return a


def verify(a, token):
    import asyncio

    return asyncio.run(a.verified_claims({"access_token": "a", "id_token": token}))


def test_the_discovered_issuer_keys_and_algorithms_are_what_the_token_is_checked_against():
    a = StackhubOIDCAuthenticator(config=apply(OIDC))
    assert (a.oidc_issuer, a.oidc_jwks_uri, a.oidc_algorithms) == (ISSUER, f"{ISSUER}/keys", ["RS256"])
    doc = {**DISCOVERY, "id_token_signing_alg_values_supported": ["HS256", "ES256", "none", "RS256"]}
    assert StackhubOIDCAuthenticator(config=apply(OIDC, doc=doc)).oidc_algorithms == ["RS256", "ES256"]
    with pytest.raises(OAuthSetupError, match="HS256"):
        apply(OIDC, doc={**DISCOVERY, "id_token_signing_alg_values_supported": ["HS256"]})


def test_a_token_signed_by_the_providers_key_passes_with_its_claims():
    a = verifier()
    assert verify(a, id_token())["nonce"] == "n-1"
    assert a.fetched == [f"{ISSUER}/keys"]
    verify(a, id_token(nonce="n-2"))
    assert len(a.fetched) == 1  # the keys are kept between logins


@pytest.mark.parametrize("forged", [
    pytest.param(lambda: id_token(key=FORGER_KEY), id="signed-by-another-key-same-kid"),
    pytest.param(lambda: id_token(key=FORGER_KEY, kid="k9"), id="a-key-the-provider-does-not-publish"),
    pytest.param(lambda: id_token(aud="another-client"), id="for-another-client"),
    pytest.param(lambda: id_token(aud=["stackhub", "other"], azp="other"), id="several-audiences-azp-not-us"),
    pytest.param(lambda: id_token(iss="https://evil.example.org"), id="another-issuer"),
    pytest.param(lambda: id_token(exp=1_000_000_000, iat=999_999_000), id="expired"),
    pytest.param(lambda: id_token(exp=None), id="no-expiry"),
    pytest.param(lambda: id_token(iat=None), id="no-issued-at"),
    pytest.param(lambda: id_token(key="", alg="none"), id="alg-none"),
    pytest.param(lambda: id_token(key="the-client-secret-or-anything-else", alg="HS256"), id="hmac"),
    pytest.param(lambda: id_token()[:-8] + "AAAAAAAA", id="tampered-signature"),
    pytest.param(lambda: "not.a.jwt", id="garbage"),
])
def test_a_forged_or_foreign_id_token_is_refused_before_its_nonce_is_read(forged, caplog):
    from tornado.web import HTTPError

    a = verifier()
    with pytest.raises(HTTPError) as e:
        verify(a, forged())
    assert e.value.status_code == 403
    assert "could not be verified" in e.value.log_message


def test_a_rotated_key_is_fetched_once_but_an_unknown_one_does_not_make_the_hub_fetch_at_will():
    a = verifier(keys=(("k1", PROVIDER_KEY),))
    verify(a, id_token())
    new = rsa_key()

    async def rotated(url, **kw):
        a.fetched.append(url)
        return jwks(("k1", PROVIDER_KEY), ("k2", new))
    a.httpfetch = rotated
    a._jwks_fetched -= 3600  # the last fetch was long ago
    assert verify(a, id_token(key=new, kid="k2"))["sub"] == "ada"
    assert len(a.fetched) == 2
    from tornado.web import HTTPError

    for _ in range(3):  # unknown keys right after a fetch: refused from what is known
        with pytest.raises(HTTPError):
            verify(a, id_token(key=FORGER_KEY, kid="k7"))
    assert len(a.fetched) == 2


def test_token_response_without_id_token_is_a_502_naming_the_provider():
    import asyncio

    from tornado.web import HTTPError

    a = StackhubOIDCAuthenticator(config=apply(OIDC))
    with pytest.raises(HTTPError) as e:
        asyncio.run(a.verified_claims({"access_token": "a"}))
    assert e.value.status_code == 502
    assert "idp.example.org" in e.value.log_message % e.value.args


def test_provider_answer_quotes_oauth_error_fields_only():
    from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse
    import io

    from spawner.hub.oidc import provider_answer

    def err(code, body):
        resp = HTTPResponse(HTTPRequest("https://idp/token"), code, buffer=io.BytesIO(body))
        return HTTPClientError(code, response=resp)

    body = b'{"error": "invalid_client", "error_description": "bad secret", "secret": "x"}'
    assert provider_answer(err(401, body)) == "HTTP 401 invalid_client: bad secret"
    assert provider_answer(err(503, b"down for maintenance")) == "HTTP 503: down for maintenance"
    assert provider_answer(err(500, b"")) == "HTTP 500"
    assert provider_answer(HTTPClientError(599, "Connection refused")).startswith("HTTP 599")
