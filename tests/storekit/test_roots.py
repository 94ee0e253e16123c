"""The bundled Apple root: exactly Apple Root CA - G3, byte-identical to Apple's published one."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from stateless.storekit.verifier import load_root_certificates
from tests.peers.apple_ca import TestAppleCA

G3_SHA256 = "63:34:3A:BF:B8:9A:6A:03:EB:B5:7E:9B:3F:5F:A7:BE:7C:4F:5C:75:6F:30:17:B3:A8:C4:88:C3:65:3E:91:79"


def fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def test_bundled_files_are_apple_root_ca_g3() -> None:
    folder = resources.files("stateless").joinpath("apple_roots")
    names = sorted(entry.name for entry in folder.iterdir())
    assert names == ["AppleRootCA-G3.cer", "AppleRootCA-G3.pem", "README.md"]
    der = folder.joinpath("AppleRootCA-G3.cer").read_bytes()
    assert fingerprint(der) == G3_SHA256
    pem = x509.load_pem_x509_certificate(folder.joinpath("AppleRootCA-G3.pem").read_bytes())
    assert fingerprint(pem.public_bytes(Encoding.DER)) == G3_SHA256
    cert = x509.load_der_x509_certificate(der)
    assert (
        cert.subject.rfc4514_string()
        == "C=US,O=Apple Inc.,OU=Apple Certification Authority,CN=Apple Root CA - G3"
    )


def test_only_g3_is_trusted_by_default() -> None:
    roots = load_root_certificates(None)
    assert [fingerprint(der) for der in roots] == [G3_SHA256]


def test_extra_roots_are_added_from_pem_and_der(tmp_path: Path) -> None:
    first, second = TestAppleCA(), TestAppleCA(name="Second Test Root")
    (tmp_path / "a.pem").write_bytes(first.root_pem())
    (tmp_path / "b.cer").write_bytes(second.root.public_bytes(Encoding.DER))
    (tmp_path / "notes.txt").write_text("ignored")
    roots = load_root_certificates(tmp_path)
    assert len(roots) == 3
    assert roots[0] == load_root_certificates(None)[0]
    assert first.root.public_bytes(Encoding.DER) in roots
    assert second.root.public_bytes(Encoding.DER) in roots
