"""Certificates and keys for the local Kubernetes control plane (devstack.kube).

One self-signed CA signs a serving certificate for 127.0.0.1 (kube-apiserver, and the controller-manager's and
scheduler's health endpoints) and one client certificate per identity; a separate key pair signs service-account
tokens. ECDSA P-256 keys keep generation to milliseconds. Existing files are reused, so a state folder that already
holds etcd data keeps a PKI that matches it.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel

# The first address of --service-cluster-ip-range: the in-cluster `kubernetes` Service points there.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
VALIDITY = datetime.timedelta(days=365)

# Client identities: file stem -> (common name = user, organization = group). The bootstrap RBAC policy of
# kube-apiserver already grants the two system components what they need; system:masters is cluster-admin.
CLIENT_IDENTITIES: dict[str, tuple[str, str | None]] = {
    "admin": ("bud-admin", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", None),
    "kube-scheduler": ("system:kube-scheduler", None),
}


class KeyPair(BaseModel):
    cert: Path
    key: Path


class ClusterPki(BaseModel):
    """Paths of every file the control plane reads."""

    ca: KeyPair
    serving: KeyPair
    clients: dict[str, KeyPair]
    service_account_key: Path
    service_account_pub: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock differences
        .not_valid_after(now + VALIDITY)
    )


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue_ca(pair: KeyPair) -> None:
    key = _new_key()
    subject = _name("bud-foundry-local-kube-ca")
    cert = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(key, pair.key)
    _write_cert(cert, pair.cert)


def _issue_leaf(ca: KeyPair, pair: KeyPair, subject: x509.Name, usage, sans: list[x509.GeneralName]) -> None:
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    key = _new_key()
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    _write_key(key, pair.key)
    _write_cert(builder.sign(ca_key, hashes.SHA256()), pair.cert)


def _serving_sans() -> list[x509.GeneralName]:
    names = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    return [x509.DNSName(n) for n in names] + [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address(KUBERNETES_SERVICE_IP)),
    ]


def ensure_pki(pki_dir: Path) -> ClusterPki:
    """Create whatever is missing under `pki_dir` and return the paths of all files."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    pki = ClusterPki(
        ca=KeyPair(cert=pki_dir / "ca.crt", key=pki_dir / "ca.key"),
        serving=KeyPair(cert=pki_dir / "serving.crt", key=pki_dir / "serving.key"),
        clients={
            stem: KeyPair(cert=pki_dir / f"{stem}.crt", key=pki_dir / f"{stem}.key") for stem in CLIENT_IDENTITIES
        },
        service_account_key=pki_dir / "service-account.key",
        service_account_pub=pki_dir / "service-account.pub",
    )
    fresh_ca = not (pki.ca.cert.exists() and pki.ca.key.exists())
    if fresh_ca:
        _issue_ca(pki.ca)
    if fresh_ca or not pki.serving.cert.exists():
        _issue_leaf(pki.ca, pki.serving, _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, _serving_sans())
    for stem, (user, group) in CLIENT_IDENTITIES.items():
        if fresh_ca or not pki.clients[stem].cert.exists():
            _issue_leaf(pki.ca, pki.clients[stem], _name(user, group), ExtendedKeyUsageOID.CLIENT_AUTH, [])
    if not (pki.service_account_key.exists() and pki.service_account_pub.exists()):
        key = _new_key()
        _write_key(key, pki.service_account_key)
        pki.service_account_pub.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    return pki
