import ssl
import stat

from spawner.deploy.tls import ensure_local_tls


def test_local_ca_signs_a_server_cert_and_keys_are_private(tmp_path):
    files = ensure_local_tls(tmp_path, ["hub.example.org"])
    for key in (tmp_path / "ca-key.pem", files.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ctx = ssl.create_default_context(cafile=str(files.ca))
    ctx.load_cert_chain(files.cert, files.key)  # key matches cert
    again = ensure_local_tls(tmp_path, ["hub.example.org"])
    assert again.cert.read_bytes() == files.cert.read_bytes()  # reused, not re-issued
    ca_before = files.ca.read_bytes()
    ensure_local_tls(tmp_path, ["other.example.org"])
    assert files.ca.read_bytes() == ca_before  # the CA users trust survives a new host name
