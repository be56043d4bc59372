"""The `.lpatch` file: one JSON document carrying a patch manifest and its Ed25519 signature.

    {
      "format": "lpatch",
      "format_version": 1,
      "manifest": <PatchSpec.to_dict()>,            # has its own "format_version" (model.FORMAT_VERSION)
                                                     # and "compiled": the new code (patch/compiled.py)
      "signature": {"algorithm": "ed25519", "key_id": "<16 hex>", "value": "<base64>"} | null
    }

The signature covers `canonical_bytes(manifest)`: the manifest as JSON with sorted keys, no whitespace,
ASCII only (`json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`, UTF-8). So the file
may be re-indented or its top-level keys reordered without breaking the signature, but any change to the
manifest's content does.

Limits (livepatch.patch.limits): a file larger than MAX_FILE_BYTES (16 MiB) is refused before it is parsed;
JSON nested deeper than MAX_JSON_DEPTH or with an integer longer than MAX_JSON_INT_DIGITS is refused. Every
malformed input (truncated, not JSON, wrong version, missing or mistyped fields) raises PatchFileError with a
message that says what is wrong; nothing here executes code from the file. docs/patch-format.md documents all of this.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livepatch.errors import LivepatchError, PatchRefused
from livepatch.patch import compiled
from livepatch.patch.limits import MAX_FILE_BYTES, JSONLimitError, loads_json
from livepatch.patch.model import FORMAT_VERSION as MANIFEST_FORMAT_VERSION
from livepatch.patch.model import PatchSpec
from livepatch.patch.signing import PrivateKey, PublicKey

FILE_FORMAT = "lpatch"
FILE_FORMAT_VERSION = 1
SIGNATURE_ALGORITHM = "ed25519"
_ED25519_SIGNATURE_BYTES = 64


class PatchFileError(LivepatchError):
    """A patch file is malformed, truncated, too large or of an unsupported version."""

    outcome = PatchRefused.outcome


@dataclass(frozen=True)
class Signature:
    key_id: str
    value: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": SIGNATURE_ALGORITHM,
            "key_id": self.key_id,
            "value": base64.b64encode(self.value).decode("ascii"),
        }


@dataclass(frozen=True)
class PatchFile:
    """A parsed patch file. `spec` is built from `manifest`; the signature is NOT verified yet."""

    spec: PatchSpec
    manifest: dict[str, Any]
    signature: Signature | None

    @property
    def signed(self) -> bool:
        return self.signature is not None

    def to_document(self) -> dict[str, Any]:
        return {
            "format": FILE_FORMAT,
            "format_version": FILE_FORMAT_VERSION,
            "manifest": self.manifest,
            "signature": self.signature.to_dict() if self.signature else None,
        }

    def verify(
        self,
        trusted: Iterable[PublicKey],
        *,
        allow_unsigned: bool = False,
        between: Callable[[], None] | None = None,
    ) -> str | None:
        """Check the signature against the trusted keys; return the signer's key id (None: unsigned).

        Raises PatchRefused saying why: unsigned (and not allowed), unknown key, or a signature that does
        not match the manifest (tampered manifest, tampered signature, or signed by another key).
        `between`: as canonical_bytes'.
        """
        if self.signature is None:
            if allow_unsigned:
                return None
            raise PatchRefused(
                "the patch is not signed and this agent only accepts signed patches "
                "(sign it: livepatch diff ... --key livepatch.key)"
            )
        keys = {k.key_id: k for k in trusted}
        key = keys.get(self.signature.key_id)
        if key is None:
            known = ", ".join(sorted(keys)) or "none"
            raise PatchRefused(
                f"the patch is signed by key {self.signature.key_id}, which this agent does not trust "
                f"(trusted key ids: {known})"
            )
        if not key.verify(self.signature.value, canonical_bytes(self.manifest, between)):
            raise PatchRefused(
                f"bad signature: the manifest does not match the signature of key {key.key_id} "
                "(the file was modified after signing)"
            )
        return key.key_id

    def verified_spec(
        self,
        trusted: Iterable[PublicKey],
        *,
        allow_unsigned: bool = False,
        between: Callable[[], None] | None = None,
    ) -> tuple[PatchSpec, str | None]:
        """verify(), then the spec to apply and the signer's key id (None: unsigned).

        A signed patch's spec carries the compiled code it brings for this interpreter (decoded only now
        that the signature covering it has verified: marshal is not safe on untrusted bytes); staging then
        compiles nothing. An unsigned patch's compiled code is never decoded: staging compiles its source.
        Raises PatchRefused like verify(), and PatchFileError when a signed patch's compiled code is
        malformed. `between` (if given) is called between the pieces of the check and before the
        decoding (the agent's runtime.pacing.Pacer).
        """
        signer = self.verify(trusted, allow_unsigned=allow_unsigned, between=between)
        if signer is None:
            return self.spec, None
        if between is not None:
            between()
        try:
            return compiled.attach(self.spec, self.manifest.get("compiled")), signer
        except ValueError as exc:
            raise PatchFileError(f"the patch's compiled code is malformed: {exc}") from exc


def canonical_bytes(manifest: dict[str, Any], between: Callable[[], None] | None = None) -> bytes:
    """What the signature covers (see the top of this file). With `between`, encoded in pieces (each
    top-level field, each module) with `between` called after each: the same bytes, without holding
    the GIL for the whole encoding (~0.3 ms for 115 kB) in one C call."""
    if between is None:
        return _canonical(manifest).encode("utf-8")
    parts: list[str] = []
    for key in sorted(manifest):
        value = manifest[key]
        if isinstance(value, list):
            items: list[str] = []
            for item in value:
                items.append(_canonical(item))
                between()
            encoded = "[" + ",".join(items) + "]"
        else:
            encoded = _canonical(value)
            between()
        parts.append(_canonical(key) + ":" + encoded)
    return ("{" + ",".join(parts) + "}").encode("utf-8")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def build(spec: PatchSpec, key: PrivateKey | None = None) -> PatchFile:
    manifest = spec.to_dict()
    section = compiled.build_section(spec)  # the new code, compiled here once (patch/compiled.py)
    if section is not None:
        manifest["compiled"] = section
    signature = Signature(key.key_id, key.sign(canonical_bytes(manifest))) if key else None
    return PatchFile(spec, manifest, signature)


def dumps(patch: PatchFile) -> bytes:
    """The file's bytes (indented for people; the signature does not depend on the layout)."""
    data = json.dumps(patch.to_document(), indent=1, sort_keys=True).encode("utf-8") + b"\n"
    if len(data) > MAX_FILE_BYTES:
        raise PatchFileError(
            f"the patch would be {len(data)} bytes, over the limit of {MAX_FILE_BYTES} bytes"
        )
    return data


def write(path: Path, patch: PatchFile) -> None:
    data = dumps(patch)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # never leave a half-written patch under the final name


def read(path: Path) -> PatchFile:
    try:
        size = os.stat(path).st_size
        if size > MAX_FILE_BYTES:
            raise PatchFileError(
                f"{path} is {size} bytes, over the limit of {MAX_FILE_BYTES} bytes for a patch file"
            )
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PatchFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return loads(data, source=str(path))


def loads(data: bytes, *, source: str = "patch") -> PatchFile:
    """Parse and validate a patch file's bytes (size, JSON, versions, fields). No signature check."""
    if len(data) > MAX_FILE_BYTES:
        raise PatchFileError(
            f"{source} is over the limit of {MAX_FILE_BYTES} bytes for a patch file"
        )
    try:
        doc = loads_json(data)
    except JSONLimitError as exc:
        raise PatchFileError(f"{source} is not a valid patch file: {exc}") from exc
    return from_document(doc, source=source)


def from_document(doc: Any, *, source: str = "patch") -> PatchFile:
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
        raise PatchFileError(f'{source} is not a patch file (no "format": "lpatch" field)')
    version = doc.get("format_version")
    if version != FILE_FORMAT_VERSION:
        raise PatchFileError(
            f"{source} has file format version {version!r}; this livepatch reads version "
            f"{FILE_FORMAT_VERSION} (use a matching livepatch to build or apply it)"
        )
    manifest = doc.get("manifest")
    if not isinstance(manifest, dict):
        raise PatchFileError(f'{source}: "manifest" is missing or not an object')
    if manifest.get("format_version") != MANIFEST_FORMAT_VERSION:
        raise PatchFileError(
            f"{source}: manifest format version {manifest.get('format_version')!r} is not supported "
            f"(this livepatch reads {MANIFEST_FORMAT_VERSION})"
        )
    try:
        spec = PatchSpec.from_dict(manifest)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise PatchFileError(f"{source}: malformed manifest: {what}") from exc
    return PatchFile(spec, manifest, _signature_from(doc.get("signature"), source))


def _signature_from(raw: Any, source: str) -> Signature | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise PatchFileError(f'{source}: "signature" must be an object or null')
    if raw.get("algorithm") != SIGNATURE_ALGORITHM:
        raise PatchFileError(
            f"{source}: unsupported signature algorithm {raw.get('algorithm')!r} "
            f"(expected {SIGNATURE_ALGORITHM!r})"
        )
    key_id, value = raw.get("key_id"), raw.get("value")
    if not isinstance(key_id, str) or not isinstance(value, str):
        raise PatchFileError(f'{source}: signature needs string fields "key_id" and "value"')
    try:
        sig = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise PatchFileError(f"{source}: signature value is not valid base64") from exc
    if len(sig) != _ED25519_SIGNATURE_BYTES:
        raise PatchFileError(
            f"{source}: signature is {len(sig)} bytes, an Ed25519 signature has {_ED25519_SIGNATURE_BYTES}"
        )
    return Signature(key_id, sig)
