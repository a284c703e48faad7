"""Run the test OpenID Connect provider (oidc_provider.py) for the OAuth end-to-end tests.

The provider runs on the host, as a child process of the test session, listening on the gateway
address of the hub's Docker network. That one URL is the issuer for both sides: the hub container
reaches the host there, and the browser on the host reaches its own interface. Its certificate is
signed by the stackhub local CA (an IP address SAN), which the hub is given as ``auth.caFile`` and
the browser trusts through its NSS database.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .oidc_provider import ADA, EVE, GRACE, USERS  # noqa: F401  (the tests' users)

ROOT = Path(__file__).resolve().parents[2]


def issue_cert(ca_dir: Path, out_dir: Path, host: str, name: str = "idp", also: tuple = ()) -> tuple[Path, Path]:
    """A server certificate for ``host`` (a DNS name or an IP address) and the DNS names ``also``,
    signed by the stackhub local CA."""
    try:
        san = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
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
        .add_extension(x509.SubjectAlternativeName([san, *(x509.DNSName(n) for n in also)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Python 3.13's default (strict) verification wants the key ids
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / f"{name}.pem", out_dir / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def network_gateway(client, network: str) -> str:
    cfg = client.networks.get(network).attrs["IPAM"]["Config"]
    return next(c["Gateway"] for c in cfg if c.get("Gateway"))


@dataclass
class Provider:
    issuer: str
    client_id: str
    client_secret: str
    auth_method: str
    require_nonce: bool
    process: subprocess.Popen
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_provider(client, *, workdir: Path, ca_dir: Path, network: str, redirect_uri: str,
                   client_secret: str, auth_method: str = "client_secret_basic",
                   require_nonce: bool = True) -> Provider:
    """Start the provider on the gateway of ``network``; wait until its discovery document answers."""
    host = network_gateway(client, network)
    port = free_port(host)
    issuer = f"https://{host}:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = issue_cert(ca_dir, workdir, host)
    secret_file = workdir / "client-secret"
    secret_file.touch(0o600)
    secret_file.write_text(client_secret)
    log = workdir / "provider.log"
    cmd = [sys.executable, "-m", "tests.integration.oidc_provider", "--issuer", issuer, "--host", host,
           "--port", str(port), "--cert", str(cert), "--key", str(key), "--client-secret-file", str(secret_file),
           "--redirect-uri", redirect_uri, "--auth-method", auth_method]
    if require_nonce:
        cmd.append("--require-nonce")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    provider = Provider(issuer, "stackhub", client_secret, auth_method, require_nonce, proc, log)
    ctx = ssl.create_default_context(cafile=str(ca_dir / "ca.pem"))
    deadline, last = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", context=ctx, timeout=5) as r:
                doc = json.load(r)
            assert doc["issuer"] == issuer, doc
            return provider
        except (OSError, ValueError) as e:
            last = e
            time.sleep(0.3)
    provider.stop()
    raise RuntimeError(f"the test OIDC provider did not answer at {issuer} ({last}); its log:\n{provider.logs()}")
