"""A real OpenID Connect provider for the OAuth tests: Dex (dexidp.io), built by scripts/install-dex.sh.

Dex runs in a container named ``stackhub-dex`` on the stackhub network, so the hub container reaches
it by that name, and its HTTPS port is published on 127.0.0.1 at the same port number, so the
browser on the host reaches the same issuer URL once Chromium maps the name to 127.0.0.1
(``--host-resolver-rules``). Its certificate is signed by the stackhub local CA, which the hub is
given as ``auth.caFile`` and the browser trusts through its NSS database.

Users are Dex static passwords with groups (Dex >= the pinned master build); passwords are fixed
test values, the hashes bcrypt as Dex wants them.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import docker
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[2]
NAME = "stackhub-dex"
IMAGE = "stackhub/base:trixie"  # any image runs the static Dex binary; this one is always built


@dataclass(frozen=True)
class DexUser:
    username: str
    email: str
    password: str
    hash: str
    groups: tuple[str, ...]


# allowed + instructor; admin; outside every group the hub admits
ADA = DexUser("ada", "ada@stackhub.test", "ada-tutorial-pw",
              "$2b$10$19ydGdz4BZ94U/0EWhDgo.kvGJnY9.CVwo5uRZ2ot3hoILLap91Qa", ("lsst-tutorial", "lsst-teachers"))
GRACE = DexUser("grace", "grace@stackhub.test", "grace-admin-pw",
                "$2b$10$A.gXg0mctBRfYGS8h2/Q7uRv.EA46TWEi6PvfJa92tGgWnw00PsDm", ("lsst-admins",))
EVE = DexUser("eve", "eve@stackhub.test", "eve-outsider-pw",
              "$2b$10$FQ9VBQuGao0hQogWt7zl9eiADfuki/0dLgPhQYbRBN..lctXZsWGW", ("outsiders",))
USERS = (ADA, GRACE, EVE)


def install_dex() -> Path:
    """Path of the Dex binary, built once by scripts/install-dex.sh (cached under var/dex/)."""
    out = subprocess.run([str(ROOT / "scripts" / "install-dex.sh")], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/install-dex.sh failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def issue_cert(ca_dir: Path, out_dir: Path, host: str) -> tuple[Path, Path]:
    """A server certificate for ``host`` signed by the stackhub local CA in ``ca_dir``."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca-key.pem").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Python 3.13's default (strict) verification wants the issuer's key id
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / "dex.pem", out_dir / "dex-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o644)  # read by Dex in its container (uid nobody); a throwaway test key
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dex:
    issuer: str
    port: int
    client_id: str
    client_secret: str
    container: object

    def logs(self) -> bytes:
        return self.container.logs(tail=300)

    def stop(self):
        self.container.remove(force=True)


def start_dex(client: docker.DockerClient, *, workdir: Path, ca_dir: Path, network: str,
              redirect_uri: str, client_secret: str, binary: Path | None = None) -> Dex:
    """Run Dex in a container on ``network``; wait until its discovery document answers."""
    binary = binary or install_dex()
    port = free_port()
    issuer = f"https://{NAME}:{port}/dex"
    cert, key = issue_cert(ca_dir, workdir, NAME)
    config = {
        "issuer": issuer,
        "storage": {"type": "memory"},
        "web": {"https": f"0.0.0.0:{port}", "tlsCert": "/dex/dex.pem", "tlsKey": "/dex/dex-key.pem"},
        "logger": {"level": "info"},
        "oauth2": {"skipApprovalScreen": True, "responseTypes": ["code"]},
        "enablePasswordDB": True,
        "staticClients": [{"id": "stackhub", "name": "stackhub", "secretEnv": "DEX_CLIENT_SECRET",
                           "redirectURIs": [redirect_uri]}],
        "staticPasswords": [
            {"email": u.email, "hash": u.hash, "username": u.username, "preferredUsername": u.username,
             "userID": f"id-{u.username}", "groups": list(u.groups)}
            for u in USERS
        ],
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        client.containers.get(NAME).remove(force=True)
    except docker.errors.NotFound:
        pass
    container = client.containers.run(
        IMAGE, ["/dex/dex", "serve", "/dex/config.yaml"], name=NAME, detach=True,
        network=network, user="65534:65534", entrypoint=[],
        environment={"DEX_CLIENT_SECRET": client_secret},
        ports={f"{port}/tcp": ("127.0.0.1", port)},
        volumes=[f"{binary.resolve()}:/dex/dex:ro", f"{(workdir / 'config.yaml').resolve()}:/dex/config.yaml:ro",
                 f"{cert.resolve()}:/dex/dex.pem:ro", f"{key.resolve()}:/dex/dex-key.pem:ro"],
        labels={"stackhub.role": "test-idp"},
    )
    dex = Dex(issuer, port, "stackhub", client_secret, container)
    # from the host, as the browser will: the name is mapped to 127.0.0.1, the CA is the stackhub CA
    ctx = ssl.create_default_context(cafile=str(ca_dir / "ca.pem"))
    ctx.check_hostname = False  # the host has no DNS name for stackhub-dex; the SAN is checked below
    deadline, last = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/dex/.well-known/openid-configuration",
                                        context=ctx, timeout=5) as r:
                doc = json.load(r)
            assert doc["issuer"] == issuer, doc
            return dex
        except (OSError, ValueError) as e:
            last = e
            container.reload()
            if container.status == "exited":
                break
            time.sleep(0.5)
    logs = container.logs(tail=50).decode(errors="replace")
    container.remove(force=True)
    raise RuntimeError(f"Dex did not answer at {issuer} ({last}); its log:\n{logs}")
