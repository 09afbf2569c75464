"""HTTPS for the relay: browsers only grant camera and microphone to secure origins."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay.config import Config

SELF_SIGNED_DAYS = 365


def server_ssl_context(config: Config) -> ssl.SSLContext | None:
    """TLS context from configured files or a self-signed pair; None for plain HTTP."""
    server = config.server
    if server.tls_cert is not None and server.tls_key is not None:
        cert, key = server.tls_cert, server.tls_key
    elif server.self_signed:
        cert, key = ensure_self_signed(config.storage.data_dir / "tls", server.host)
    else:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def ensure_self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    """A certificate for `host` under `directory`, made once and reused across restarts."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    directory.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Ketang relay {host}")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(_alt_names(host)), critical=False)
    )
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    cert.write_bytes(
        builder.sign(private, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    return cert, key


def _alt_names(host: str) -> list[x509.GeneralName]:
    """Subject alternative names: the host as IP or DNS name, plus localhost."""
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    return names
