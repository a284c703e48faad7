"""OAuth login: the stackhub ``auth`` config applied to oauthenticator's authenticators.

``update_oauth`` is one of ``hubconfig``'s ``update_*`` steps: it only *sets* traits, on the
authenticator class the config names (GitHub, CILogon, or generic OpenID Connect), using
oauthenticator's own settings (``allowed_users``, ``allowed_groups`` / ``allowed_organizations``,
``admin_groups``, ``manage_groups``, ``auth_state_groups_key`` ...).

Groups: with ``manage_groups`` the hub's groups follow the provider at every login. ``GroupMapper``
turns what the provider says (a groups claim, or GitHub teams) into the JupyterHub groups: the
provider groups the config names (allowed, admin and instructor groups), plus ``instructors`` for
members of an instructor group. oauthenticator then checks ``allowed_groups`` and ``admin_groups``
against that same list.

Start-up checks, each a ``SystemExit`` naming the setting or URL (the hub never starts
half-configured): the client secret must be set, and an OIDC provider's discovery document must be
reachable and name the configured issuer. The secret is never logged.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from spawner.core.config import OAuthAuth, StackhubConfig
from spawner.core import roles
from spawner.core.names import INSTRUCTORS_GROUP


AUTHENTICATORS = {
    "github": "spawner.hub.lifecycle.StackhubGitHubOAuthenticator",
    "cilogon": "spawner.hub.lifecycle.StackhubCILogonOAuthenticator",
    "oidc": "spawner.hub.oidc.StackhubOIDCAuthenticator",  # GenericOAuthenticator + nonce, clear provider errors
}
# the config section of each authenticator class (traitlets config is keyed by class name; a
# subclass such as StackhubOIDCAuthenticator reads its parent's section). Each stackhub class mixes
# in spawner.hub.lifecycle.StopServersOnDelete.
SECTIONS = {"github": "GitHubOAuthenticator", "cilogon": "CILogonOAuthenticator", "oidc": "GenericOAuthenticator"}
DEFAULT_GROUPS_CLAIM = {"oidc": "groups", "cilogon": "isMemberOf"}
# where each authenticator keeps the provider's user info in auth_state
USER_INFO_KEY = {"oidc": "oauth_user", "cilogon": "cilogon_user"}

REFUSED_MESSAGE = (
    "Your {service} account is not allowed to use this hub: it is not in a group this hub admits. "
    "If you think it should be, ask the organisers of your tutorial to add you."
)


class OAuthSetupError(SystemExit):
    """The OAuth settings cannot work; the message names the setting or URL. Stops the hub."""

    def __init__(self, message: str):
        super().__init__(f"stackhub: {message}")


def client_secret(auth: OAuthAuth, environ=os.environ) -> str:
    """The client secret, from auth.clientSecretFile if set, else the auth.clientSecretEnv variable."""
    if auth.client_secret_file:
        path = auth.client_secret_file
        try:
            value = Path(path).read_text().strip()
        except OSError as e:
            raise OAuthSetupError(f"auth.clientSecretFile {path}: cannot read the OAuth client secret ({e.strerror})") from None
        if not value:
            raise OAuthSetupError(f"auth.clientSecretFile {path} is empty: it must hold the OAuth client secret")
        return value
    value = environ.get(auth.client_secret_env, "").strip()
    if not value and environ.get(f"{auth.client_secret_env}_FILE"):
        # how `stackhub up` hands the hub a secret from the operator's environment (deploy.secret_environment)
        try:
            value = Path(environ[f"{auth.client_secret_env}_FILE"]).read_text().strip()
        except OSError as e:
            raise OAuthSetupError(f"{auth.client_secret_env}_FILE: cannot read the OAuth client secret ({e.strerror})") from None
    if not value:
        raise OAuthSetupError(
            f"the OAuth client secret is missing: set the environment variable {auth.client_secret_env} "
            "(auth.clientSecretEnv) or name a file in auth.clientSecretFile"
        )
    return value


def hub_environment(cfg: StackhubConfig, environ=os.environ) -> dict[str, str]:
    """Variables the hub container takes from the operator's environment: the OAuth client secret.

    Checked on the host by ``stackhub up`` before any container starts, so a missing secret is
    reported there. A secret given as auth.clientSecretFile is mounted instead (it then does not
    show in ``docker inspect``, which an environment variable does).
    """
    auth = cfg.auth
    if not isinstance(auth, OAuthAuth):
        return {}
    value = client_secret(auth, environ)
    return {} if auth.client_secret_file else {auth.client_secret_env: value}


def ssl_context(auth: OAuthAuth) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(auth.ca_file) if auth.ca_file else None)


def discover(auth: OAuthAuth, timeout: float = 10, opener=urllib.request.urlopen) -> dict:
    """Fetch and check the OIDC discovery document of auth.issuer."""
    issuer = auth.issuer.rstrip("/")
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        with opener(url, context=ssl_context(auth), timeout=timeout) as resp:
            doc = json.load(resp)
    except urllib.error.HTTPError as e:
        raise OAuthSetupError(f"auth.issuer: the OIDC discovery document {url} answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise OAuthSetupError(f"auth.issuer: cannot fetch the OIDC discovery document {url}: {reason}") from None
    except ValueError:
        raise OAuthSetupError(f"auth.issuer: {url} did not return a JSON discovery document") from None
    if not isinstance(doc, dict):
        raise OAuthSetupError(f"auth.issuer: {url} did not return a JSON discovery document")
    if doc.get("issuer", "").rstrip("/") != issuer:
        raise OAuthSetupError(f"auth.issuer is {auth.issuer} but {url} names the issuer {doc.get('issuer')!r}")
    missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not doc.get(k)]
    if missing:
        raise OAuthSetupError(f"auth.issuer: {url} has no {', '.join(missing)}")
    return doc


AUTH_METHODS = ("client_secret_basic", "client_secret_post")  # what oauthenticator can send
ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


def id_token_algorithms(doc: dict) -> list[str]:
    """The asymmetric signature algorithms the provider says it signs ID tokens with; RS256 (OIDC
    Core's default, which every provider must support) when it says none. Never ``none`` or HMAC."""
    offered = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
    chosen = [a for a in ID_TOKEN_ALGORITHMS if a in offered]
    if not chosen:
        raise OAuthSetupError(f"auth.issuer: the provider signs ID tokens with {', '.join(map(str, offered))}; the hub "
                              f"verifies only {', '.join(ID_TOKEN_ALGORITHMS)}")
    return chosen
USUAL_SCOPES = ("openid", "profile", "email", "groups")
STANDARD_SCOPES = ("openid", "profile", "email")  # defined by OIDC Core itself


def token_endpoint_auth_method(auth: OAuthAuth, doc: dict) -> str:
    """How the hub authenticates at the token endpoint: the config's choice, else discovery's.

    ``client_secret_basic`` wherever it is offered: it is the default of RFC 6749 and RFC 7591 (and
    what a provider that lists no methods means). A provider that offers neither method that a
    client with a secret can use stops the hub with a message that names what it offers.
    """
    if auth.token_endpoint_auth_method:
        return auth.token_endpoint_auth_method
    offered = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    for method in AUTH_METHODS:
        if method in offered:
            return method
    raise OAuthSetupError(
        f"auth.issuer: the provider's token endpoint accepts {', '.join(map(str, offered))}; the hub can use "
        f"{' or '.join(AUTH_METHODS)} (set auth.tokenEndpointAuthMethod if the provider accepts one anyway)"
    )


def oidc_scopes(doc: dict, configured: list[str]) -> list[str]:
    """Scopes to request: the usual ones that discovery advertises, plus those the config names.

    ``openid`` always (it makes the request OIDC). When discovery lists no ``scopes_supported``
    (it is only RECOMMENDED), only OIDC Core's own standard scopes are asked for, never ``groups``
    on a guess: a site whose provider has one names it in auth.scopes.
    """
    offered = doc.get("scopes_supported")
    if isinstance(offered, list):
        usual = [s for s in USUAL_SCOPES if s == "openid" or s in offered]
    else:
        usual = list(STANDARD_SCOPES)
    return usual + [s for s in configured if s not in usual]


@dataclass(frozen=True)
class GroupMapper:
    """``auth_state_groups_key``: the provider's groups -> the user's JupyterHub groups.

    Keeps the provider groups the config names (so ``allowed_groups`` and ``admin_groups`` can be
    checked) and adds ``instructors`` for members of an instructor group.
    """

    type: str
    claim: str | None
    allowed: frozenset[str]
    admin: frozenset[str]
    instructor: frozenset[str]
    admins_group: str | None = None  # the shared-origin fallback: admin groups' members join it (core.roles)

    def provider_groups(self, auth_state: dict) -> set[str]:
        if self.type == "github":
            groups = set()
            for team in auth_state.get("teams") or []:
                org = (team.get("organization") or {}).get("login")
                if org:
                    groups |= {org, f"{org}:{team.get('slug')}"}
            return groups
        info = auth_state.get(USER_INFO_KEY[self.type]) or {}
        value = info.get(self.claim) or []
        if isinstance(value, str):  # CILogon's isMemberOf may be one comma-separated string
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        return {str(g) for g in value}

    def __call__(self, auth_state: dict) -> list[str]:
        mine = self.provider_groups(auth_state)
        groups = mine & (self.allowed | self.admin | self.instructor)
        if mine & self.instructor:
            groups.add(INSTRUCTORS_GROUP)
        if self.admins_group and mine & self.admin:
            groups.add(self.admins_group)
        return sorted(groups)


def _login_service(auth: OAuthAuth) -> str:
    if auth.login_service:
        return auth.login_service
    return {"github": "GitHub", "cilogon": "CILogon"}.get(auth.type) or urlparse(auth.issuer).hostname


@dataclass(frozen=True)
class OAuthInputs:
    """What ``update_oauth`` needs from outside the config, read before any trait is set."""

    client_secret: str = field(repr=False)
    discovery: dict | None = None  # the OIDC provider's discovery document (oidc only)


def read_oauth_inputs(cfg: StackhubConfig, *, environ=os.environ, discover=discover) -> OAuthInputs:
    """The client secret (file or environment) and, for OIDC, the checked discovery document."""
    auth: OAuthAuth = cfg.auth
    return OAuthInputs(client_secret=client_secret(auth, environ),
                       discovery=discover(auth) if auth.type == "oidc" else None)


def update_oauth(c, cfg: StackhubConfig, inputs: OAuthInputs):
    """Set the authenticator for an OAuth ``auth`` config (github, cilogon or oidc). Only sets
    traits: the secret and the discovery document were read before (``read_oauth_inputs``)."""
    auth: OAuthAuth = cfg.auth
    hub = cfg.hub
    section = c[SECTIONS[auth.type]]
    c.JupyterHub.authenticator_class = AUTHENTICATORS[auth.type]

    section.client_id = auth.client_id
    section.client_secret = inputs.client_secret
    section.oauth_callback_url = auth.callback_url or f"https://{hub.public_host}{hub.port_suffix}/hub/oauth_callback"
    service = _login_service(auth)
    section.login_service = service
    section.custom_403_message = REFUSED_MESSAGE.format(service=service)
    section.allow_all = auth.allow_all
    section.allowed_users = set(auth.allowed_users)
    if "admin_users" not in hub.model_fields_set:
        # the default admin name is for the shared-password login; on a provider "admin" is a
        # stranger's account. Admins come from adminGroups (or hub.adminUsers set explicitly).
        section.admin_users = set()
    # oauthenticator 17 defaults to False; said here so a change of default cannot open the hub
    section.allow_existing_users = False
    if auth.ca_file:
        section.http_request_kwargs = {"ca_certs": str(auth.ca_file)}

    section.manage_groups = True
    section.auth_state_groups_key = GroupMapper(
        type=auth.type,
        claim=auth.groups_claim or DEFAULT_GROUPS_CLAIM.get(auth.type),
        allowed=frozenset(auth.allowed_groups),
        admin=frozenset(auth.admin_groups),
        instructor=frozenset(auth.instructor_groups),
        admins_group=None if hub.subdomains else roles.ADMINS_GROUP,
    )
    if auth.admin_groups:
        section.admin_groups = set(auth.admin_groups)

    if auth.type == "github":
        # org membership is checked through GitHub's API; teams feed admin and instructor groups
        if auth.allowed_groups:
            section.allowed_organizations = set(auth.allowed_groups)
        section.populate_teams_in_auth_state = True
        section.scope = auth.scopes or ["read:user", "read:org"]
    else:
        if auth.allowed_groups:
            section.allowed_groups = set(auth.allowed_groups)

    if auth.type == "cilogon":
        section.idps = {
            idp.entity_id: {
                "username_derivation": {"username_claim": idp.username_claim,
                                        **({"action": "strip_idp_domain", "domain": idp.strip_domain}
                                           if idp.strip_domain else {})},
                **({"allow_all": True} if idp.allow_all else {}),
                **({"allowed_domains": list(idp.allowed_domains)} if idp.allowed_domains else {}),
            }
            for idp in auth.idps
        }
        if auth.scopes:
            section.scope = auth.scopes

    if auth.type == "oidc":
        doc = inputs.discovery
        section.authorize_url = doc["authorization_endpoint"]
        section.token_url = doc["token_endpoint"]
        if doc.get("userinfo_endpoint"):
            section.userdata_url = doc["userinfo_endpoint"]
        else:
            section.userdata_from_id_token = True
        section.username_claim = auth.username_claim
        # the ID token is verified against these before any of its claims is trusted (spawner.hub.oidc)
        section.oidc_issuer = doc["issuer"]
        section.oidc_jwks_uri = doc["jwks_uri"]
        section.oidc_algorithms = id_token_algorithms(doc)
        section.basic_auth = token_endpoint_auth_method(auth, doc) == "client_secret_basic"
        section.scope = oidc_scopes(doc, auth.scopes or [])
    return c
