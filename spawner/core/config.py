"""The one typed config model of stackhub.

Everything an operator sets lives here: the hub, TLS, login, stack tags, sizes, volumes, culling.
It is read from YAML (``stackhub.yaml``, path from ``STACKHUB_CONFIG``), and every key has an
embedded default so ``make up`` works with no file at all. Keys are camelCase so the file reads like
the Helm chart's values, whose ``values.schema.json`` is generated from this model
(``stackhub schema``). Unknown keys are refused: a typo must stop the hub, not be ignored.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from spawner.core import names, usernames

from spawner.core.tags import TagError, parse_tag

CONFIG_ENV = "STACKHUB_CONFIG"
_MEMORY = re.compile(r"^\d+(\.\d+)?[KMGT]?$")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def memory_size(value: str, key: str) -> str:
    if not _MEMORY.match(value):
        raise ValueError(f"{key} {value!r} must look like 512M, 2G or 1.5G")
    return value


def memory_bytes(value: str) -> int:
    """Bytes of a size like ``512M``, ``2G``, ``1.5T`` (no unit: bytes), with binary units as Docker
    reads them. ``value`` has passed ``memory_size``."""
    unit = value[-1] if value[-1] in _UNITS else ""
    return int(float(value[: len(value) - len(unit)]) * _UNITS[unit])


class Model(BaseModel):
    """Base of every config section: camelCase keys, unknown keys refused."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class NamedServers(Model):
    enabled: bool = Field(True, description="Allow users to run several named servers; all share one home.")
    limit: int = Field(3, ge=0, description="Most named servers per user (0 = no limit).")
    total_cpu: float | None = Field(4, gt=0, description="Most CPU cores (the sum of the sizes) one user's running servers may have together; a spawn over it is refused with HTTP 400 naming the limit. None: no limit.")
    total_memory: str | None = Field("8G", description="Most memory (the sum of the sizes, e.g. 8G) one user's running servers may have together; a spawn over it is refused with HTTP 400 naming the limit. None: no limit.")

    @field_validator("total_memory")
    @classmethod
    def _total_memory(cls, v):
        return v if v is None else memory_size(v, "hub.namedServers.totalMemory")


class HubSettings(Model):
    prefix: str = Field("stackhub", pattern=r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$", description="Name of this deployment on its engine: its containers are <prefix>-hub, <prefix>-proxy and <prefix>-user-<name>, and `down` stops only its own. Two deployments on one engine need different prefixes, ports, networks and volumes (the test suite runs as stackhub-test).")
    public_host: str = Field("localhost", description="Host name users type; used for the URL and the generated certificate.")
    subdomains: bool = Field(True, description="Give every user server an origin of its own, https://<user>.<serverDomain> (JupyterHub's subdomain_host): nothing an attendee serves runs on the hub's origin, so a page of theirs opened by an admin cannot act as that admin. Needs DNS for *.<serverDomain> and a wildcard certificate (the generated CA issues one; browsers resolve *.localhost by themselves). false: every server under https://<publicHost>/user/<name>/, for sites without wildcard DNS; see docs/security.md for what helpers may do then.")
    server_domain: str | None = Field(None, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$", description="Domain under which user servers get their hosts (<user>.<serverDomain>) when hub.subdomains is on. None: publicHost, or users.<publicHost> when publicHost is a single label such as localhost (browsers and OpenSSL refuse a wildcard certificate *.localhost).")
    https_port: int = Field(8443, ge=1, le=65535, description="Public HTTPS port.")
    http_port: int = Field(8080, ge=1, le=65535, description="Plain HTTP port; it only redirects to HTTPS.")
    bind_address: str = Field("0.0.0.0", description="Host address the public ports are published on.")
    image: str = Field("stackhub/hub:0.1.0", description="Image that runs the hub and the proxy.")
    network: str = Field("stackhub-users", description="Docker network the user containers live on; the hub and the proxy join it. Created with enable_icc=false: users cannot reach each other (see spawner.network and docs/security.md).")
    api_network: str = Field("stackhub-internal", description="Internal Docker network only the hub and the proxy join; the proxy's API (port 8001) listens on it alone.")
    state_volume: str = Field("stackhub-hub-state", description="Docker volume holding the hub's database and state, or an absolute host directory (bind-mounted): put it on a filesystem users' homes cannot fill (docs/disk.md).")
    admin_users: list[str] = Field(default_factory=lambda: ["admin"], description="Users who are JupyterHub admins.")
    concurrent_spawn_limit: int = Field(100, ge=0, description="Most spawns in flight at once (a tutorial burst must fit).")
    active_server_limit: int = Field(200, ge=0, description="Most servers running or starting at once on the whole hub (JupyterHub's active_server_limit); a spawn past it is refused with 'Too many users'. Size it to the room and the machine (0 = no limit).")
    request_body_limit: str = Field("1M", description="Largest request body the hub reads (login form, API calls), e.g. 1M; a larger one is refused before it is read. Course uploads go to the course service, not the hub.")
    start_timeout: int = Field(300, ge=10, description="Seconds a server may take to start before the spawn fails.")
    named_servers: NamedServers = NamedServers()
    route_check_seconds: int = Field(10, ge=1, description="Seconds between the hub's checks of the proxy's routing table (JupyterHub's last_activity_interval): a proxy restarted alone has every user's and service's route back within this long, without a hub restart.")
    mem_limit: str = Field("2G", description="Memory limit of the hub container, which also runs the hub's services (courses, sessions, disk watch, orphans, culler). It holds the hub's database cache and every user's session: raise it for thousands of users.")
    proxy_mem_limit: str = Field("1G", description="Memory limit of the proxy container (configurable-http-proxy; about a megabyte per open connection).")
    orphan_grace_seconds: int = Field(120, ge=10, description="A user container of this deployment that the hub does not know (left by a hub killed in the middle of a spawn) is removed once it has been unknown this long (the stackhub-orphans service). The home is never touched.")

    @field_validator("request_body_limit")
    @classmethod
    def _body_limit(cls, v):
        return memory_size(v, "hub.requestBodyLimit")

    @model_validator(mode="after")
    def _subdomains_need_a_name(self):
        if self.subdomains and names.is_ip_address(self.public_host):
            raise ValueError(f"hub.subdomains needs a DNS name as hub.publicHost, not the address {self.public_host} "
                             "(an address has no subdomains): give a name with wildcard DNS, or set hub.subdomains: false")
        return self

    @property
    def port_suffix(self) -> str:
        """``:<httpsPort>`` as a URL writes it; empty for 443."""
        return "" if self.https_port == 443 else f":{self.https_port}"

    @property
    def user_domain(self) -> str:
        """The domain user servers' hosts are under (``names.server_domain``)."""
        return names.server_domain(self.public_host, self.server_domain)

    @field_validator("mem_limit", "proxy_mem_limit")
    @classmethod
    def _mem_limits(cls, v, info):
        return memory_size(v, f"hub.{to_camel(info.field_name)}")

    @model_validator(mode="after")
    def _two_networks(self):
        if self.network == self.api_network:
            raise ValueError("hub.network and hub.apiNetwork must be two different networks")
        return self


class TLSSettings(Model):
    cert_file: Path | None = Field(None, description="PEM certificate (chain) for the public endpoint. None: generate a local CA and certificate.")
    key_file: Path | None = Field(None, description="PEM private key matching certFile.")
    hsts_max_age: int = Field(31536000, ge=0, description="Strict-Transport-Security max-age in seconds.")

    @model_validator(mode="after")
    def _both_or_neither(self):
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.certFile and tls.keyFile must be given together")
        return self


class LoginThrottleSettings(Model):
    """Only failed logins count, so attendees who type their own password are never slowed."""

    window: int = Field(300, ge=10, description="Seconds over which failed logins are counted.")
    failures_per_name: int = Field(10, ge=0, description="Failed logins for one name within the window; further tries of that name wait (HTTP 429, Retry-After). 0: no limit.")
    failures_per_address: int = Field(30, ge=0, description="Failed logins from one client address within the window; further tries from it wait. A room behind one NAT shares an address. 0: no limit.")
    claims_per_address_per_hour: int = Field(120, ge=0, description="New names one client address may claim per hour. A room behind one NAT shares one address: set at least the room's size. 0: no limit.")


class SharedPasswordAuth(Model):
    """The tutorial login: the room code admits new people, each name then opens only with its owner's password.

    An attendee claims a free name on first login with the room code and a password of their own;
    from then on only that password opens it. Admins (hub.adminUsers) log in with the admin secret;
    instructors' and admins' accounts never open with the room code.
    """

    type: Literal["shared-password"] = "shared-password"
    password_file: Path | None = Field(None, description="File holding the room code (the shared tutorial secret that lets new attendees claim a name). None: generated on first start.")
    min_password_length: int = Field(8, ge=6, le=128, description="Shortest password an attendee may choose for their name.")
    username_pattern: str = Field(usernames.DEFAULT_PATTERN, description="Regular expression every (normalised, lower-case) username must match.")
    staff_names: list[str] = Field(default_factory=list, description="Names kept for instructors and admins: never claimed with the room code; an admin gives each its password (`stackhub users reset-password NAME`).")
    login_throttle: LoginThrottleSettings = Field(default_factory=lambda: LoginThrottleSettings(), description="Limits on failed logins and new claims (HTTP 429 with Retry-After).")

    @field_validator("staff_names")
    @classmethod
    def _staff_names(cls, v):
        return sorted({usernames.normalize(n) for n in v})


class CILogonIdP(Model):
    """One identity provider users may pick on CILogon's page (oauthenticator's ``idps`` entry)."""

    entity_id: str = Field(description="The IdP's entity id as CILogon lists it (https://cilogon.org/idplist), e.g. https://github.com/login/oauth/authorize.")
    username_claim: str = Field("email", description="CILogon claim that becomes the JupyterHub username for users of this IdP.")
    strip_domain: str | None = Field(None, description="Domain to strip from the username (alice@uni.edu -> alice); None keeps it whole.")
    allow_all: bool = Field(False, description="Allow every user of this IdP (on top of allowedUsers/allowedGroups).")
    allowed_domains: list[str] = Field(default_factory=list, description="Allow users of this IdP whose username's domain matches one of these (wildcards allowed).")


class OAuthAuth(Model):
    """Login through an OAuth 2 / OpenID Connect provider (oauthenticator).

    Groups from the provider (GitHub ``org`` and ``org:team``, an OIDC or CILogon groups claim) decide
    who may log in (allowedGroups), who is a JupyterHub admin (adminGroups) and who joins the
    JupyterHub group ``instructors`` (instructorGroups). The hub's groups follow the provider at
    every login: a user leaves ``instructors`` when the provider no longer lists them.
    """

    type: Literal["github", "cilogon", "oidc"]
    client_id: str = Field(description="OAuth client id registered with the provider.")
    client_secret_env: str = Field("STACKHUB_OAUTH_CLIENT_SECRET", description="Environment variable holding the client secret (used when clientSecretFile is not set).")
    client_secret_file: Path | None = Field(None, description="File holding the client secret (read at start, never logged); wins over clientSecretEnv.")
    callback_url: str | None = Field(None, description="OAuth callback; default https://<publicHost>:<httpsPort>/hub/oauth_callback.")
    login_service: str | None = Field(None, description="Name on the login button ('Sign in with ...'). None: GitHub, CILogon, or the issuer's host.")
    allow_all: bool = Field(False, description="Let every account the provider authenticates log in (on GitHub: anyone with an account).")
    allowed_users: list[str] = Field(default_factory=list, description="Users allowed to log in.")
    allowed_groups: list[str] = Field(default_factory=list, description="Groups (GitHub org or org:team, OIDC/CILogon groups claim) allowed to log in.")
    admin_groups: list[str] = Field(default_factory=list, description="Groups whose members are JupyterHub admins (and may log in).")
    instructor_groups: list[str] = Field(default_factory=list, description="Groups whose members join the JupyterHub group 'instructors'.")
    issuer: str | None = Field(None, description="OIDC issuer URL (oidc only); endpoints come from its discovery document, fetched at start.")
    username_claim: str = Field("preferred_username", description="Claim used as the JupyterHub username (oidc; CILogon sets it per IdP in idps).")
    groups_claim: str | None = Field(None, description="Claim holding the user's groups. None: 'groups' (oidc), 'isMemberOf' (cilogon).")
    scopes: list[str] | None = Field(None, description="Scopes to request. oidc: requested besides the usual ones the provider advertises (openid, profile, email, groups); github/cilogon: instead of the usual ones.")
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] | None = Field(None, description="oidc: how the hub sends the client secret to the token endpoint. None: follow the discovery document's token_endpoint_auth_methods_supported (client_secret_basic where offered, the OAuth default).")
    ca_file: Path | None = Field(None, description="CA bundle to trust for the provider's TLS (a private IdP).")
    idps: list[CILogonIdP] = Field(default_factory=list, description="CILogon only: the identity providers offered on CILogon's page (at least one).")

    @model_validator(mode="after")
    def _per_type(self):
        if self.type == "oidc" and not self.issuer:
            raise ValueError("auth.issuer is required when auth.type is 'oidc'")
        if self.type != "oidc" and self.issuer:
            raise ValueError(f"auth.issuer is for auth.type 'oidc' only, not {self.type!r}")
        if self.type != "oidc" and self.token_endpoint_auth_method:
            raise ValueError(f"auth.tokenEndpointAuthMethod is for auth.type 'oidc' only, not {self.type!r}")
        if self.type == "cilogon" and not self.idps:
            raise ValueError("auth.idps needs at least one identity provider when auth.type is 'cilogon'")
        if self.type != "cilogon" and self.idps:
            raise ValueError(f"auth.idps is for auth.type 'cilogon' only, not {self.type!r}")
        idp_allows = any(i.allow_all or i.allowed_domains for i in self.idps)
        if not (self.allow_all or self.allowed_users or self.allowed_groups or self.admin_groups or idp_allows):
            raise ValueError("auth: nobody could log in; set allowedUsers, allowedGroups, adminGroups or allowAll")
        return self


AuthSettings = Annotated[SharedPasswordAuth | OAuthAuth, Field(discriminator="type")]


class Size(Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Name users pick in the form and send as user_options.size.")
    cpu: float = Field(gt=0, description="CPU limit in cores.")
    memory: str = Field(description="Memory limit, e.g. 2G.")
    description: str = ""

    @field_validator("memory")
    @classmethod
    def _memory(cls, v):
        return memory_size(v, "memory")


class StackSettings(Model):
    repository: str = Field("stackhub/lsst-stack", description="Image repository holding the stack tags.")
    recommended: str | None = Field("w_2026_43", description="Tag that 'recommended' stands for. None: the newest release.")
    registry: str | None = Field(None, description="Registry v2 base URL to list further tags from (none by default).")
    catalog_ttl: float = Field(15.0, ge=0, description="Seconds the tag catalog is cached between engine reads.")
    default_size: str = Field("small", description="Size used when a spawn names none.")

    @field_validator("recommended")
    @classmethod
    def _tag(cls, v):
        if v is not None:
            try:
                parse_tag(v)
            except TagError as e:
                raise ValueError(str(e)) from None
        return v


class Mount(Model):
    source: str = Field(description="Docker volume name, or an absolute host path for a bind mount.")
    target: str = Field(pattern=r"^/", description="Absolute path in the user's container.")
    read_only: bool = Field(True, description="Mount read-only (tutorial data is shared).")


class Volumes(Model):
    home_volume: str = Field("stackhub-home-{user}", description="Name of each user's home volume; {user} is the escaped username.")
    delete_home_with_user: bool = Field(False, description="Delete a user's home volume when an admin deletes the user (admin page or API). False keeps it, and the hub's log says so; `stackhub users delete NAME --purge` and `stackhub users prune` delete kept homes.")
    home_budget: str | None = Field("10G", description="Disk budget of each user's home, e.g. 10G. Measured by the stackhub-diskwatch service: at homeBudgetWarn a warning file appears in the home, over the budget the user's servers are stopped (docs/disk.md). None: no budget.")
    home_budget_warn: float = Field(0.9, gt=0, lt=1, description="Fraction of homeBudget at which the user is warned (a file ~/DISK-QUOTA-WARNING.txt and a note on the spawn page).")
    home_budget_check_seconds: int = Field(60, ge=1, description="Seconds between two measurements of the homes; a user may write past the budget for up to this long.")
    home_budget_grace_seconds: int = Field(1800, ge=0, description="After a stop for being over budget, the user may start again and has this long to delete files; the server is stopped again if the home grows meanwhile or is still over the budget then.")
    data: list[Mount] = Field(
        default_factory=lambda: [Mount(source="stackhub-data", target="/data")],
        description="Shared data mounted into every container.",
    )
    demo_data: bool = Field(True, description="At `up`, make a small demo Butler repository in the data mount at /data when it has none (made once, by a stack image; /data/README.md says what is in it).")

    @field_validator("home_budget")
    @classmethod
    def _home_budget(cls, v):
        if v is not None and memory_bytes(memory_size(v, "homeBudget")) <= 0:
            raise ValueError("homeBudget must be more than 0 (or null for no budget)")
        return v

    @property
    def home_budget_bytes(self) -> int | None:
        return memory_bytes(self.home_budget) if self.home_budget else None


class Logs(Model):
    """How much of its own output each container and service stackhub starts keeps on the engine's
    disk: user servers, course-check and fetch containers, the backup helpers, the hub and the proxy
    (docs/disk.md, "Logs"). A server's stdout is the user's to write: unbounded, it fills the disk
    that holds the hub's database."""

    driver: Literal["json-file", "local", "engine"] = Field("json-file", description="Docker log driver of every container and Swarm service stackhub starts. json-file (Docker's default format, `docker logs` and the log file the engine keeps, rotated at maxSize) or local (Docker's compact format, also rotated). engine: set nothing and use the engine daemon's own default (log-driver and log-opts in /etc/docker/daemon.json), which the site must then bound itself.")
    max_size: str = Field("10M", description="Size at which a container's log file is rotated, e.g. 10M (Docker's max-size).")
    max_files: int = Field(3, ge=1, le=100, description="Log files kept per container, the current one included (Docker's max-file): a container keeps at most maxSize times this.")

    @field_validator("max_size")
    @classmethod
    def _max_size(cls, v):
        if memory_bytes(memory_size(v, "logs.maxSize")) < 2**16:
            raise ValueError("logs.maxSize must be at least 64K")
        return v

    @property
    def options(self) -> dict[str, str]:
        """The driver's options (Docker's log-opts), as strings."""
        return {"max-size": self.max_size, "max-file": str(self.max_files)}


class Culler(Model):
    enabled: bool = Field(True, description="Stop servers idle for longer than timeout (jupyterhub-idle-culler).")
    timeout: int = Field(3600, ge=60, description="Idle seconds before a server is stopped.")
    every: int = Field(300, ge=10, description="Seconds between culler checks.")


class Courses(Model):
    enabled: bool = Field(True, description="Run the course service (/services/stackhub-courses/) and mount the courses into every server.")
    volume: str = Field("stackhub-courses", description="Docker volume holding the published courses (read-write in the hub, read-only in servers).")
    mount_path: str = Field("/opt/stackhub/courses", pattern=r"^/", description="Where the courses volume is mounted (read-only) in users' containers.")
    sync_on_spawn: bool = Field(True, description="Bring the published courses into ~/notebooks/<course>/ before JupyterLab starts.")
    service_port: int = Field(10102, ge=1, le=65535, description="Port the course service listens on inside the hub container.")
    keep_versions: int = Field(3, ge=1, description="Published versions kept per course (older ones are removed).")
    max_mb: int = Field(256, ge=1, description="Largest course accepted, in MiB (notebooks; put big data in a data volume).")
    git_timeout: int = Field(120, ge=5, description="Seconds a git clone of a course may take.")
    max_files: int = Field(5000, ge=1, description="Most files in one course (a source with more is refused).")
    max_clone_mb: int = Field(1024, ge=1, description="Largest git clone (history included) fetched for a course, in MiB; the clone stops there.")
    git_schemes: list[Literal["https", "http", "git", "ssh"]] = Field(
        default_factory=lambda: ["https"],
        description="URL schemes a course's git source may use. Only https by default; add http, git or ssh to open them.")
    git_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Git hosts (names) or networks (CIDR, e.g. 10.1.0.0/16) that may be private, loopback or link-local. "
                    "By default a git URL must resolve to public addresses only.")
    fetch_network: str = Field("bridge", description="Docker network of the throwaway container that clones a git URL (uploads get no network at all).")
    exec_timeout: int = Field(10, ge=1, description="Seconds the service waits for a read from a user's server (status.json).")
    sync_seconds: int = Field(60, ge=1, description="Time budget of one course sync in a server (at start-up and 'sync now'); what is left is delivered by the next sync.")
    check_concurrency: int = Field(2, ge=1, le=16, description="Stack tags checked at the same time by a course check (one throwaway container each; docs/courses.md, 'Check a course on the tags').")
    check_timeout: int = Field(300, ge=10, description="Seconds one notebook cell may run in a course check; a longer one is stopped and reported as 'timeout'.")
    check_memory: str = Field("2G", description="Memory limit of each course-check container.")
    check_home_size: str = Field("1G", description="Size of the empty home (a tmpfs) each course-check container gets.")
    check_network: str = Field("none", description="Docker network of the course-check containers: 'none' (no network) by default; a network name lets notebooks reach it.")
    shipped: list[str] = Field(default_factory=lambda: ["getting-started"], description="Courses shipped in the repository (courses/<name>/) that `stackhub up` publishes once, at the first start.")

    @field_validator("shipped")
    @classmethod
    def _shipped(cls, v):
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name) or ".." in name:
                raise ValueError(f"{name!r} is not a course name (letters, digits, '.', '_', '-')")
        return v

    @field_validator("check_memory", "check_home_size")
    @classmethod
    def _check_sizes(cls, v, info):
        return memory_size(v, info.field_name)

    @field_validator("git_allowed_hosts")
    @classmethod
    def _hosts(cls, v):
        for entry in v:
            if not re.fullmatch(r"[A-Za-z0-9.:/_-]+", entry):
                raise ValueError(f"{entry!r} is neither a host name nor a network (CIDR)")
        return v


class NetworkPolicy(Model):
    """What a user's container may reach besides the hub API (docs/security.md, "Network isolation")."""

    internet: bool = Field(True, description="Let user containers reach the internet (public addresses). False: only the hub API and allowPrivateCidrs.")
    allow_private_cidrs: list[str] = Field(default_factory=list, description="IPv4 ranges (CIDR) user containers may reach although they are private, link-local or the host's (e.g. a site's data server, 10.1.2.0/24). Never opens other users, the proxy or the hub's other ports.")
    firewall: bool = Field(True, description="Add the iptables rules (DOCKER-USER, INPUT) at `up` and remove them at `down`; needs root and iptables on the engine's host. False: only the Docker networks separate (users then reach each other, private ranges and the host; for engines whose host you cannot firewall, e.g. Docker Desktop).")

    @field_validator("allow_private_cidrs")
    @classmethod
    def _cidrs(cls, v):
        import ipaddress

        out = []
        for cidr in v:
            try:
                net = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR range like 10.1.2.0/24") from None
            if net.version != 4:
                raise ValueError(f"{cidr!r}: the users network is IPv4 only, so IPv6 ranges cannot be opened")
            out.append(str(net))
        return out


class DockerEngineCalls(Model):
    """What the backends that speak to a Docker engine (docker, swarm) share."""

    workers: int = Field(16, ge=1, description="Docker API calls that may run at once (a burst of spawns runs in parallel).")
    starting: int = Field(16, ge=0, description=(
        "User servers that may be starting at once (container started, JupyterLab not answering yet); "
        "the others wait their turn in arrival order. Starting JupyterLab is CPU-bound: in a burst on few "
        "cores, taking turns makes most people ready much sooner and the last no later. 0 = no limit."))


class DockerBackend(DockerEngineCalls):
    """One Docker engine runs the hub, the proxy and every user server."""

    type: Literal["docker"] = "docker"


_PLACEHOLDER = re.compile(r"{([^{}]*)}")
_CONSTRAINT = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*\s*(==|!=)\s*[^\s=!]+$")


def _check_placeholders(value: str, allowed: tuple[str, ...], key: str) -> str:
    for found in _PLACEHOLDER.findall(value):
        if found not in allowed:
            raise ValueError(f"{key}: {{{found}}} is not a placeholder; allowed: {', '.join('{' + a + '}' for a in allowed)}")
    return value


def _check_constraints(values: list[str], key: str) -> list[str]:
    for c in values:
        if not _CONSTRAINT.match(c):
            raise ValueError(f"{key}: {c!r} is not a Swarm placement constraint like 'node.labels.stackhub==users' "
                             "or 'node.role!=manager'")
    return values


class VolumeDriver(Model):
    """The Docker volume driver (and its options) that makes a named volume on whichever node a task runs.

    Swarm places a user's server on any node, so the volume must hold the same files on each: e.g.
    the ``local`` driver with NFS options ``{type: nfs, o: "addr=10.0.0.5,rw,nfsvers=4", device:
    ":/export/homes/{user}"}`` (docs/swarm.md). In option values ``{user}`` is the escaped username
    (homes only) and ``{volume}`` the volume's name.
    """

    name: str = Field("local", pattern=r"^[A-Za-z0-9][A-Za-z0-9_./:-]*$", description="Volume driver (a plugin name, or local).")
    options: dict[str, str] = Field(default_factory=dict, description="Driver options (docker volume create --opt); {user} and {volume} are filled in per volume.")

    @field_validator("options")
    @classmethod
    def _options(cls, v):
        for key, value in v.items():
            if not re.match(r"^[A-Za-z0-9_.-]+$", key):
                raise ValueError(f"volume driver option name {key!r} may hold letters, digits, '.', '_' and '-' only")
            _check_placeholders(value, ("user", "volume"), f"option {key}")
        return v


class SwarmBackend(DockerEngineCalls):
    """User servers as Docker Swarm services (dockerspawner's SwarmSpawner), hub and proxy as services too.

    ``stackhub up`` runs on a manager node; the hub and the proxy stay on that node (their state and
    secrets are its files), user servers go wherever the constraints and the size's reservation let
    the scheduler put them. docs/swarm.md says what Swarm cannot carry of the single-host hardening.
    """

    type: Literal["swarm"] = "swarm"
    home_volume_driver: VolumeDriver = Field(default_factory=VolumeDriver, description="Driver of the users' home volumes. The default local driver keeps a home on the node that first ran the user's server: fine for one node; give NFS options (or a multi-host plugin) for more.")
    shared_volume_driver: VolumeDriver | None = Field(None, description="Driver of the named data volumes and the courses volume in user servers. None: node-local volumes (one node, or data copied to each node).")
    constraints: list[str] = Field(default_factory=list, description="Placement constraints of every user server, e.g. ['node.labels.stackhub==users'].")
    size_constraints: dict[str, list[str]] = Field(default_factory=dict, description="Further constraints per size name, e.g. {large: ['node.labels.big==true']}.")
    reservation: float = Field(0.1, ge=0, le=1, description="Fraction of the size's cpu and memory each server reserves: the scheduler places a server only on a node with that much unreserved (the size itself is the limit). 1: no overbooking.")
    encrypted_network: bool = Field(False, description="Encrypt the users' overlay network between nodes (IPsec; costs CPU).")

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v):
        return _check_constraints(v, "constraints")

    @field_validator("size_constraints")
    @classmethod
    def _size_constraints(cls, v):
        for size, cons in v.items():
            _check_constraints(cons, f"sizeConstraints.{size}")
        return v


_QUANTITY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")


class KubernetesHomes(Model):
    """Where users' homes live on Kubernetes (docs/kubernetes.md, "Homes")."""

    type: Literal["pvc", "shared"] = Field("pvc", description="pvc: one PersistentVolumeClaim per user, named by volumes.homeVolume (all of a user's named servers share it). shared: one ReadWriteMany claim (sharedClaim) for everybody, each user's home a subPath of it.")
    storage_class: str | None = Field(None, description="StorageClass of the per-user claims. None: the cluster's default class.")
    capacity: str = Field("10Gi", description="Size requested for each per-user claim (a Kubernetes quantity, e.g. 10Gi).")
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]] = Field(
        default_factory=lambda: ["ReadWriteOnce"], description="Access modes of the per-user claims.")
    shared_claim: str = Field("stackhub-homes", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="type shared: the existing ReadWriteMany claim holding every home.")
    init_chown: bool = Field(True, description="Run a tiny init container (root with CAP_CHOWN only) that gives the home to spawner.uid before the server starts. Needed where the storage ignores fsGroup (hostPath, NFS); false on storage that honours fsGroup.")

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, v):
        if not _QUANTITY.match(v):
            raise ValueError(f"capacity {v!r} must be a Kubernetes quantity like 10Gi or 500Mi")
        return v


class DaskGateway(Model):
    """dask-gateway on Kubernetes (docs/dask.md): clusters bigger than one server, as daskhub runs them.

    The gateway (dask-gateway-server's KubeBackend), its controller and Traefik run in the hub's
    namespace; the gateway is the JupyterHub service ``dask-gateway`` and knows users by their
    JupyterHub token. Schedulers and workers run the user's own stack image (the spawned server's,
    passed as the cluster option ``image``; the gateway refuses images outside stack.repository).
    The chart (helm/stackhub) renders all of it; the hub registers the service and gives servers
    the ``DASK_GATEWAY__*`` settings.
    """

    enabled: bool = Field(False, description="Run dask-gateway with the hub (Helm chart only; Docker and Swarm have none, docs/dask.md).")
    image: str = Field("stackhub/dask-gateway:2026.3.0", min_length=1, description="Image of the gateway API server and its controller (dask-gateway-server[kubernetes]; `make gateway-image` builds it, with a traefik binary).")
    traefik_image: str | None = Field(None, min_length=1, description="Image of the Traefik proxy (its entrypoint must be traefik, or it must carry /usr/local/bin/traefik). None: image, which carries one.")
    max_clusters: int = Field(2, ge=1, description="Clusters one user may run at once; a further new_cluster() is refused (HTTP 422) until one stops.")
    max_cores: float = Field(3, gt=0, description="Cores of one cluster, scheduler and workers together (c.ClusterConfig.cluster_max_cores); a user's total is at most maxClusters times this.")
    max_memory: str = Field("6G", description="Memory of one cluster, scheduler and workers together, e.g. 6G (c.ClusterConfig.cluster_max_memory).")
    max_workers: int = Field(4, ge=1, description="Workers of one cluster at most (c.ClusterConfig.cluster_max_workers).")
    worker_cores: float = Field(1, gt=0, description="Default cores of a worker (limit; the request is spawner.backend.guaranteeFraction of it). Users choose up to maxWorkerCores.")
    max_worker_cores: float = Field(2, gt=0, description="Most cores a user may give a worker (cluster option worker_cores).")
    worker_memory: str = Field("2G", description="Default memory of a worker (limit). Users choose up to maxWorkerMemory.")
    max_worker_memory: str = Field("4G", description="Most memory a user may give a worker (cluster option worker_memory).")
    scheduler_cores: float = Field(1, gt=0, description="Cores of a cluster's scheduler (limit).")
    scheduler_memory: str = Field("1G", description="Memory of a cluster's scheduler (limit).")
    idle_timeout: int = Field(1800, ge=0, description="Seconds a cluster may sit idle (no client, no tasks) before the gateway stops it; 0: never.")

    @field_validator("max_memory", "worker_memory", "max_worker_memory", "scheduler_memory")
    @classmethod
    def _memory(cls, v, info):
        return memory_size(v, to_camel(info.field_name))

    @model_validator(mode="after")
    def _defaults_within_limits(self):
        if self.worker_cores > self.max_worker_cores:
            raise ValueError(f"daskGateway.workerCores {self.worker_cores:g} is above maxWorkerCores {self.max_worker_cores:g}")
        if memory_bytes(self.worker_memory) > memory_bytes(self.max_worker_memory):
            raise ValueError(f"daskGateway.workerMemory {self.worker_memory} is above maxWorkerMemory {self.max_worker_memory}")
        return self


class KubernetesBackend(Model):
    """User servers as Kubernetes pods through kubespawner's KubeSpawner (the Helm chart in helm/stackhub).

    Data mounts (volumes.data) and the courses volume name PersistentVolumeClaims here (an absolute
    source is a hostPath); the tag catalog is the ConfigMap ``<prefix>-stack-catalog`` that
    ``stackhub images catalog`` writes, plus stack.registry's v2 API when one is set.
    """

    type: Literal["kubernetes"] = "kubernetes"
    namespace: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Namespace of the user pods. None: the hub's own namespace (the Helm release's).")
    homes: KubernetesHomes = KubernetesHomes()
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field("IfNotPresent", description="Pull policy of the user pods' image.")
    guarantee_fraction: float = Field(0.1, gt=0, le=1, description="Requests as a fraction of the size's limits (cpu and memory). 1: every server is guaranteed its whole size (Guaranteed QoS); less lets a tutorial's mostly idle servers share nodes.")
    dask_gateway: DaskGateway = Field(default_factory=DaskGateway, description="dask-gateway for clusters bigger than one server (off by default; docs/dask.md).")


Backend = Annotated[DockerBackend | SwarmBackend | KubernetesBackend, Field(discriminator="type")]


class SpawnerSettings(Model):
    backend: Backend = Field(default_factory=DockerBackend, description="Where user servers run, with that engine's own settings: {type: docker|swarm|kubernetes, ...}. A bare name (docker) means {type: docker}.")
    uid: int = Field(1000, description="User id the stack image runs as.")
    pids_limit: int = Field(2048, ge=64, description="Most processes and threads one user server may run (a fork bomb stops there, not the host).")
    nofile: int = Field(8192, ge=256, description="Open files one process in a user server may hold (soft and hard ulimit).")
    read_only_root: bool = Field(True, description="Mount the image's root filesystem read-only; the home, /tmp (tmpfs) and the data mounts stay as they are.")
    tmp_size: str = Field("1G", description="Size of the tmpfs at /tmp (counts against the server's memory).")

    network: NetworkPolicy = NetworkPolicy()

    @field_validator("backend", mode="before")
    @classmethod
    def _backend_by_name(cls, v):
        return {"type": v} if isinstance(v, str) else v

    @field_validator("tmp_size")
    @classmethod
    def _tmp_size(cls, v):
        return memory_size(v, "tmpSize")


class StackhubConfig(Model):
    hub: HubSettings = HubSettings()
    tls: TLSSettings = TLSSettings()
    auth: AuthSettings = SharedPasswordAuth()
    stack: StackSettings = StackSettings()
    sizes: list[Size] = Field(
        default_factory=lambda: [
            Size(name="small", cpu=1, memory="2G", description="1 core, 2 GB"),
            Size(name="medium", cpu=2, memory="4G", description="2 cores, 4 GB"),
            Size(name="large", cpu=4, memory="8G", description="4 cores, 8 GB"),
        ]
    )
    volumes: Volumes = Volumes()
    logs: Logs = Logs()
    culler: Culler = Culler()
    courses: Courses = Courses()
    spawner: SpawnerSettings = SpawnerSettings()

    @model_validator(mode="after")
    def _default_size_exists(self):
        names = [s.name for s in self.sizes]
        if len(set(names)) != len(names):
            raise ValueError(f"size names must be unique, got {names}")
        if self.stack.default_size not in names:
            raise ValueError(f"stack.defaultSize {self.stack.default_size!r} is not one of the sizes: {', '.join(names)}")
        backend = self.spawner.backend
        if backend.type == "swarm":
            unknown = sorted(set(backend.size_constraints) - set(names))
            if unknown:
                raise ValueError(f"spawner.backend.sizeConstraints names sizes that do not exist: {', '.join(unknown)}; "
                                 f"sizes: {', '.join(names)}")
        return self


    @model_validator(mode="after")
    def _fallback_admins_by_group(self):
        """On the shared origin, admins are members of a hub group (core.roles); OAuth logins reset a
        user's groups to the provider's, so there only the provider's admin groups can name admins."""
        if (not self.hub.subdomains and self.auth.type != "shared-password"
                and "admin_users" in self.hub.model_fields_set and self.hub.admin_users):
            raise ValueError("hub.subdomains false with an OAuth login: name admins with auth.adminGroups, "
                             "not hub.adminUsers (each login resets a user's groups to the provider's)")
        return self


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key."""


def load_config(path: str | os.PathLike | None = None) -> StackhubConfig:
    """Load the YAML config at ``path`` (or $STACKHUB_CONFIG); no file means all defaults."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return StackhubConfig()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    try:
        cfg = StackhubConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"])
            problems.append(f"  {key}: {err['msg']}")
        raise ConfigError(f"{path}: invalid config\n" + "\n".join(problems)) from None
    return cfg


CONFIG_JSON_ENV = "STACKHUB_CONFIG_JSON"


def services_json(cfg: StackhubConfig) -> str:
    """The config as the hub hands it to its services: serialised once, in the YAML's own keys."""
    return cfg.model_dump_json(by_alias=True)


def config_from_env(environ=os.environ) -> StackhubConfig:
    """The config a hub-managed service runs with: the hub's own (``STACKHUB_CONFIG_JSON``, set by
    spawner.hub.apply), so a service never reads the YAML again or takes settings as flags."""
    text = environ.get(CONFIG_JSON_ENV)
    if text is None:
        raise ConfigError(f"{CONFIG_JSON_ENV} is not set: this program is started by the hub as a service")
    return StackhubConfig.model_validate_json(text)




@dataclass(frozen=True)
class HostCapacity:
    """What the engine's host has (Docker's ``info``: NCPU, MemTotal)."""

    cpus: float
    memory: int  # bytes

    def describe(self) -> str:
        return f"{self.cpus:g} cores and {self.memory / 1024**3:.1f} GiB of memory"


def sizes_too_large(sizes: list[Size], host: HostCapacity) -> list[str]:
    """Why each size that cannot run on ``host`` cannot (empty: all fit). Equal to the host fits."""
    problems = []
    for s in sizes:
        why = []
        if s.cpu > host.cpus:
            why.append(f"cpu {s.cpu:g} > {host.cpus:g} cores")
        if memory_bytes(s.memory) > host.memory:
            why.append(f"memory {s.memory} > {host.memory / 1024**3:.1f} GiB")
        if why:
            problems.append(f"size {s.name!r} ({', '.join(why)})")
    return problems


def fit_sizes_to_host(cfg: StackhubConfig, host: HostCapacity) -> tuple[StackhubConfig, list[str]]:
    """Refuse sizes larger than the host (pure; the host's capacity comes from the engine at the edge).

    Sizes the operator wrote in ``sizes`` must all fit: one that does not is a ConfigError naming it
    and the host's capacity, so the hub does not start with a size no server could get. The
    embedded default sizes (small, medium, large) are meant for any host, so those that do not fit
    are dropped instead; the second value says which (for the log). The default size must remain.
    """
    problems = sizes_too_large(cfg.sizes, host)
    if not problems:
        return cfg, []
    if "sizes" in cfg.model_fields_set:
        raise ConfigError(f"sizes larger than this host ({host.describe()}): {'; '.join(problems)}. "
                          "Make them smaller in stackhub.yaml or remove them")
    too_large = set(n.name for n in cfg.sizes if sizes_too_large([n], host))
    if cfg.stack.default_size in too_large:
        raise ConfigError(f"the default size {cfg.stack.default_size!r} is larger than this host "
                          f"({host.describe()}): {'; '.join(problems)}. Set smaller sizes in stackhub.yaml")
    kept = [s for s in cfg.sizes if s.name not in too_large]
    return cfg.model_copy(update={"sizes": kept}), problems


def json_schema() -> dict:
    """JSON schema of the config (the Helm chart's values.schema.json), camelCase keys."""
    return StackhubConfig.model_json_schema(by_alias=True)
