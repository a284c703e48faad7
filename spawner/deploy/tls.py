"""A local CA and server certificate for the public HTTPS endpoint, when none is configured.

Generated once (first ``make up``) and reused: the CA file is what browsers and curl are told to
trust. Keys are written 0600 and never leave the state directory; only the server certificate and
its key are mounted into the proxy.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TLSFiles:
    ca: Path | None
    cert: Path
    key: Path


def write_private(path: Path, data: bytes):
    """Write a file readable by its owner only, created that way (no window of wider mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    out = []
    for h in dict.fromkeys(hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def ensure_local_tls(directory: Path, hosts: list[str]) -> TLSFiles:
    """Create (once) a CA and a server certificate for ``hosts`` under ``directory``.

    The server certificate is re-issued when the host list changes; the CA is kept so browsers
    that already trust it keep working.
    """
    ca_cert_path, ca_key_path = directory / "ca.pem", directory / "ca-key.pem"
    cert_path, key_path = directory / "server.pem", directory / "server-key.pem"
    hosts = list(dict.fromkeys(hosts + ["localhost", "127.0.0.1"]))
    now = dt.datetime.now(dt.timezone.utc)

    if ca_cert_path.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stackhub local CA")])
        ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        write_private(ca_key_path, _key_pem(ca_key))
        ca_cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        if cert_path.exists():
            cert_path.unlink()

    if cert_path.exists() and key_path.exists():
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if set(sans) == set(_names(hosts)) and current.not_valid_after_utc > now + dt.timedelta(days=30):
            return TLSFiles(ca_cert_path, cert_path, key_path)

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return TLSFiles(ca_cert_path, cert_path, key_path)


def certificate_names(cert_path: Path) -> list[str]:
    """The DNS names a PEM certificate (the first of a chain) is valid for."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in sans.get_values_for_type(x509.DNSName)]


def covers(names: list[str], host: str) -> bool:
    """Whether a certificate holding ``names`` is valid for ``host``, as browsers match: exactly,
    or by a wildcard standing for the whole first label only (``*.a.b`` matches ``x.a.b``, never
    ``a.b`` or ``y.x.a.b``)."""
    host = host.lower().rstrip(".")
    first, _, rest = host.partition(".")
    return any(n == host or (n.startswith("*.") and rest and n[2:] == rest) for n in names)


def check_own_certificate(cert_path: Path, hosts: list[str]):
    """An operator's certificate must hold every name users reach (the hub's host, and in
    subdomain mode a user server's): refused at ``up``, before anything starts, with what is missing."""
    held = certificate_names(cert_path)
    missing = [h for h in hosts if not covers(held, h.replace("*.", "user.", 1))]
    if missing:
        raise RuntimeError(f"tls.certFile {cert_path} is not valid for {', '.join(missing)} (it holds "
                           f"{', '.join(held) or 'no DNS names'}); in subdomain mode it needs a wildcard name "
                           "for the user servers' domain (docs/security.md), or set hub.subdomains: false")
