"""DKIM (RFC 6376): per sender domain signing keys, the DNS record to publish, a DNS
check, and the signer applied to every letter.

Signing is per recipient (every letter differs), so it is the costliest step of a send.
The canonicalisation (relaxed/relaxed) and hashing are done here, and the signature by
`cryptography` (OpenSSL): an RSA-2048 signature costs about 0.3 ms there, where dkimpy's
pure-Python RSA takes about 7 ms. dkimpy stays the independent verifier in the tests.
Ed25519 (RFC 8463) keys can sign beside the RSA one: receivers that know it check it,
the others ignore it and check the RSA signature.

Private keys are stored sealed (mailing/secretbox.py), unsealed only to sign, and never
shown, logged or put in an error message.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import dns.exception
import dns.resolver
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from flask_babel import gettext as _

from .addresses import wire_address
from .extensions import db
from .models import DkimKey, Sender
from .secretbox import seal, unseal
from .sending.letter import LetterError

RSA = "rsa-sha256"
ED25519 = "ed25519-sha256"
ALGORITHMS = (RSA, ED25519)
_KEY_TYPE = {RSA: "rsa", ED25519: "ed25519"}  # the record's k= tag
_SELECTOR_PREFIX = {RSA: "outbox-rsa-", ED25519: "outbox-ed-"}

# What every letter's signature covers, in this order, when the letter has them: the
# identity and content headers a receiver shows or acts on, and the MIME structure.
SIGNED_HEADERS = ("from", "to", "subject", "date", "message-id", "reply-to", "list-unsubscribe",
                  "list-unsubscribe-post", "mime-version", "content-type", "content-transfer-encoding")
# Named once more than they occur ("oversigned", RFC 6376 8.15): a second From, To or
# Subject added in transit breaks the signature instead of being shown to the reader.
OVERSIGNED = ("from", "to", "subject")

DNS_TIMEOUT = 3.0  # seconds for the whole DNS check: an admin waits for the page


class DkimError(LetterError):
    """A key cannot be made or used; the message is for the admin and names no secret. A
    LetterError, so a run, a preview or a test letter stops with it in words."""


# --- keys --------------------------------------------------------------------------

def domain_of(email: str) -> str:
    """The domain a sender's letters are signed for: lowercase, as its IDNA A-label."""
    return wire_address(email).rsplit("@", 1)[-1].lower()


def sender_domains() -> list[str]:
    """Every domain a sender sends from, the ones a key can be made for."""
    return sorted({domain_of(e) for e in db.session.scalars(sa.select(Sender.email))})


def _new_selector(domain: str, algorithm: str) -> str:
    """`outbox-rsa-20261123` (or `outbox-ed-…`): the date says which key is newer, the
    suffix `-2`, `-3` keeps a second key made the same day apart."""
    base = _SELECTOR_PREFIX[algorithm] + datetime.now(UTC).strftime("%Y%m%d")
    taken = set(db.session.scalars(sa.select(DkimKey.selector).where(
        DkimKey.domain == domain, DkimKey.selector.like(base + "%"))))
    selector, n = base, 1
    while selector in taken:
        n += 1
        selector = f"{base}-{n}"
    return selector


def _generate_pair(algorithm: str) -> tuple[str, str]:
    """(private key PEM, public key base64 as the record's p= carries it)."""
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == RSA:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
    return pem, base64.b64encode(public).decode("ascii")


def generate(domain: str, algorithm: str = RSA) -> DkimKey:
    """A new key for the domain (the caller commits). The domain's first key of an
    algorithm is active at once; a later one waits inactive, so letters keep their
    working signature until its record is published and `activate` switches to it."""
    if algorithm not in ALGORITHMS:
        raise DkimError(_("Unknown algorithm."))
    domain = domain.strip().lower()
    if domain not in sender_domains():
        raise DkimError(_("No sender sends from %(domain)s.", domain=domain))
    pem, public = _generate_pair(algorithm)
    has_active = db.session.scalar(sa.select(sa.func.count()).select_from(DkimKey).where(
        DkimKey.domain == domain, DkimKey.algorithm == algorithm, DkimKey.active)) or 0
    key = DkimKey(domain=domain, selector=_new_selector(domain, algorithm), algorithm=algorithm,
                  private_key_sealed=seal(pem), public_key=public, active=not has_active)
    db.session.add(key)
    db.session.flush()
    return key


def activate(key: DkimKey) -> None:
    """Sign with this key from now on; the domain's other key of the algorithm stops
    signing but stays listed (its record must stay published for letters still in
    transit) until an admin deletes it. The caller commits."""
    db.session.execute(sa.update(DkimKey).where(
        DkimKey.domain == key.domain, DkimKey.algorithm == key.algorithm, DkimKey.id != key.id)
        .values(active=False))
    key.active = True


# --- the DNS record -----------------------------------------------------------------

def record_name(key: DkimKey) -> str:
    return f"{key.selector}._domainkey.{key.domain}"


def record_value(key: DkimKey) -> str:
    return f"v=DKIM1; k={_KEY_TYPE[key.algorithm]}; p={key.public_key}"


def zone_line(key: DkimKey) -> str:
    """The record as a zone file line. A TXT string holds at most 255 octets and an
    RSA-2048 record is longer, so it is written as several strings, which DNS joins."""
    value = record_value(key)
    strings = " ".join(f'"{value[i:i + 250]}"' for i in range(0, len(value), 250))
    return f"{record_name(key)}. IN TXT ( {strings} )"


@dataclass(frozen=True)
class DnsCheck:
    state: str  # published | different | missing | unreachable
    message: str

    @property
    def ok(self) -> bool:
        return self.state == "published"


def _tags(text: str) -> dict[str, str]:
    tags = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags[name.strip()] = re.sub(r"\s+", "", value)
    return tags


def check_dns(key: DkimKey, nameservers: list[str] | None = None, timeout: float = DNS_TIMEOUT) -> DnsCheck:
    """Whether the key's record is published, asked of the system's resolver (or of
    `nameservers`, "host" or "host:port"). Every failure is an answer in words: no
    network, no record, or a record with another key."""
    name = record_name(key)
    try:
        resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            resolver.nameservers = [n.rpartition(":")[0] if n.count(":") == 1 else n for n in nameservers]
            ports = {n.rpartition(":")[2] for n in nameservers if n.count(":") == 1}
            if ports:
                resolver.port = int(ports.pop())
        resolver.lifetime = timeout
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return DnsCheck("missing", _("No TXT record at %(name)s yet. Publish it; DNS changes can "
                                     "take up to the record's TTL to show.", name=name))
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration,
            OSError, ValueError):
        return DnsCheck("unreachable", _("Could not reach a DNS server (no network?), so %(name)s "
                                         "was not checked. Try again later.", name=name))
    except dns.exception.DNSException as exc:
        return DnsCheck("unreachable", _("The DNS lookup of %(name)s failed: %(error)s",
                                         name=name, error=type(exc).__name__))
    found = [_tags(b"".join(r.strings).decode("ascii", "replace")) for r in answer]
    for tags in found:
        if tags.get("v", "DKIM1") == "DKIM1" and tags.get("p") == key.public_key:
            return DnsCheck("published", _("Published: %(name)s carries this key.", name=name))
    if any("p" in tags and not tags["p"] for tags in found):
        return DnsCheck("different", _("%(name)s says the key is revoked (empty p=).", name=name))
    return DnsCheck("different", _("%(name)s has a TXT record, but not with this key. Replace it "
                                   "with the value shown.", name=name))


# --- signing ------------------------------------------------------------------------

_WSP = re.compile(rb"[ \t]+")
# Only what relaxed canonicalisation changes: a tab, or a space followed by more
# whitespace. Matching every single space made a 6 KB body cost 0.2 ms.
_WSP_RUN = re.compile(rb"\t[ \t]*| [ \t]+")
_WSP_EOL = re.compile(rb"[ \t]+\r\n")


def _relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: trailing whitespace dropped, runs of it made one space, empty
    lines at the end dropped."""
    if b"\t" in body or b"  " in body or b" \r\n" in body:
        body = _WSP_RUN.sub(b" ", _WSP_EOL.sub(b"\r\n", body))
    while body.endswith(b"\r\n\r\n"):
        body = body[:-2]
    if body == b"\r\n":
        return b""
    return body.rstrip(b" ") + (b"" if body.endswith(b"\r\n") or not body else b"\r\n")


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2: name lowercased, value unfolded, whitespace runs made one space."""
    return name.strip().lower() + b":" + _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip(b" \t") + b"\r\n"


def _header_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """(name, raw value with its folding) for each header field, in order."""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif line:
            name, _colon, value = line.partition(b":")
            fields.append((name, value))
    return fields


def _fold_tags(tags: list[bytes]) -> bytes:
    """`DKIM-Signature: tag; tag; …` with lines broken (CRLF SP) before 78 octets."""
    lines = [b"DKIM-Signature:"]
    for tag in tags:
        if len(lines[-1]) + 1 + len(tag) > 78 and len(lines[-1]) > 1:
            lines.append(b"")
        lines[-1] += b" " + tag
    return b"\r\n".join(lines)


@dataclass
class _Key:
    domain: bytes
    selector: bytes
    algorithm: str
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class Signer:
    """Signs whole letters (bytes) with a domain's active keys: one DKIM-Signature per key."""

    def __init__(self, keys: list[_Key]):
        self.keys = keys

    def __call__(self, message: bytes) -> bytes:
        split = message.find(b"\r\n\r\n")
        head, body = (message, b"") if split < 0 else (message[:split + 2], message[split + 4:])
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest())
        # The fields to sign, taken from the bottom up as RFC 6376 5.4.2 says.
        present: dict[bytes, list[bytes]] = {}
        for name, value in _header_fields(head):
            lowered = name.strip().lower()
            if lowered.decode("ascii", "replace") in SIGNED_HEADERS:
                present.setdefault(lowered, []).append(_relaxed_header(name, value))
        names: list[bytes] = []
        hashed: list[bytes] = []
        for wanted in SIGNED_HEADERS:
            lines = present.get(wanted.encode(), [])
            for line in reversed(lines):
                names.append(wanted.encode())
                hashed.append(line)
            if wanted in OVERSIGNED:
                names.append(wanted.encode())  # an absent instance hashes as nothing
        signed = b"".join(hashed)
        stamp = str(int(time.time())).encode()
        out = []
        for key in self.keys:
            h_tags = [b"h=" + names[0]] + [b":" + n for n in names[1:]]
            h_tag = b""
            tags = [b"v=1;", b"a=" + key.algorithm.encode() + b";", b"c=relaxed/relaxed;",
                    b"d=" + key.domain + b";", b"s=" + key.selector + b";", b"t=" + stamp + b";"]
            # h= may break after any colon (FWS is allowed there), which keeps lines short.
            for piece in h_tags:
                if len(h_tag) + len(piece) > 70:
                    tags.append(h_tag)
                    h_tag = b""
                h_tag += piece
            tags += [h_tag + b";", b"bh=" + body_hash + b";", b"b="]
            header = _fold_tags(tags)
            name, _colon, value = header.partition(b":")
            data = signed + _relaxed_header(name, value)[:-2]  # the signature's own field, b= empty
            digest = hashlib.sha256(data).digest()
            if isinstance(key.private, rsa.RSAPrivateKey):
                raw = key.private.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
            else:
                raw = key.private.sign(digest)  # RFC 8463: Ed25519 over the SHA-256 digest
            # b= folds anywhere (verifiers drop its whitespace): fill the last line, then 76.
            b64 = base64.b64encode(raw)
            first = max(78 - (len(header) - header.rfind(b"\n") - 1), 0)
            rest = b64[first:]
            chunks = [b64[:first], *(rest[i:i + 76] for i in range(0, len(rest), 76))]
            out.append(header + b"\r\n ".join(c for c in chunks if c) + b"\r\n")
        return b"".join(out) + message


def _load(pem: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    # The PEM was made by `generate` and sealed under an authenticated cipher, so
    # OpenSSL's RSA consistency check (about 40 ms a load) would find nothing new.
    private = serialization.load_pem_private_key(pem.encode("ascii"), None, unsafe_skip_rsa_key_validation=True)
    if not isinstance(private, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise DkimError("unsupported key type")
    return private


def signer_for(domain: str) -> Callable[[bytes], bytes] | None:
    """The signer for letters from `domain` (RSA first, then Ed25519), None when the
    domain has no active key. A key sealed under another SECRET_KEY is a DkimError:
    sending unsigned instead would fail DMARC at receivers without anyone noticing."""
    domain = domain.lower()
    rows = db.session.scalars(sa.select(DkimKey).where(DkimKey.domain == domain, DkimKey.active)
                              .order_by(DkimKey.algorithm.desc(), DkimKey.id.desc())).all()
    keys: list[_Key] = []
    for row in rows:
        if any(k.algorithm == row.algorithm for k in keys):
            continue  # one key per algorithm signs, the newest active one
        try:
            private = _load(unseal(row.private_key_sealed))
        except ValueError:
            raise DkimError(_("The DKIM key %(selector)s of %(domain)s cannot be read: was SECRET_KEY "
                              "changed? Generate a new key.", selector=row.selector, domain=domain)) from None
        keys.append(_Key(domain.encode("ascii"), row.selector.encode("ascii"), row.algorithm, private))
    return Signer(keys) if keys else None
