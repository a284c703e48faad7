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
    assert c.JupyterHub.authenticator_class == "oauthenticator.github.GitHubOAuthenticator"
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
    assert c.JupyterHub.authenticator_class == "oauthenticator.cilogon.CILogonOAuthenticator"
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
    import jwt
    from tornado.web import HTTPError

    a = StackhubOIDCAuthenticator(config=apply(OIDC))
    handler = FakeHandler(sent)
    token_info = {"access_token": "a", "id_token": jwt.encode({"sub": "x", **claims}, "k" * 32, "HS256")}
    if status is None:
        a.check_nonce(handler, token_info)
    else:
        with pytest.raises(HTTPError) as e:
            a.check_nonce(handler, token_info)
        assert e.value.status_code == status
    assert handler.cookies == {}  # a nonce is good for one callback only


def test_token_response_without_id_token_is_a_502_naming_the_provider():
    from tornado.web import HTTPError

    a = StackhubOIDCAuthenticator(config=apply(OIDC))
    with pytest.raises(HTTPError) as e:
        a.check_nonce(FakeHandler("n"), {"access_token": "a"})
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
