"""Bytes to text the way senders meant them: MIME charset labels, body decoding, RFC 2047.

Mail's charset labels are often wrong or unknown to Python, so `_codec` maps them to what
senders really used (GB2312 → GB18030, ISO-8859-1 → windows-1252, …) and refuses codecs that
are not charsets at all (punycode, idna, unicode-escape); `decode_text` falls back to UTF-8,
ISO-2022-JP or windows-1252 and never raises. `decode_words` decodes RFC 2047 encoded-words in
unstructured header text, and `_b64decode` is the lenient base64 shared by encoded-words and
base64 bodies (bad padding and junk are repaired, not refused).
"""

from __future__ import annotations

import binascii
import codecs
import re

# -- charsets ----------------------------------------------------------------------------------

# Labels seen in real mail that Python does not know, or knows as a narrower charset than the
# senders actually used (GB2312 mail is GBK/GB18030 in practice; ISO-8859-1 mail is windows-1252,
# as every browser assumes).
_CHARSET_ALIASES = {
    "iso-gb2312": "gb18030", "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
    "gb_2312-80": "gb18030", "euc-cn": "gb18030", "cn-gb": "gb18030",
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "ks_c_5601-1989": "cp949", "euc-kr": "cp949",
    "unicode-1-1-utf-7": "utf-7", "x-unicode-1-1-utf-7": "utf-7", "unicode-2-0-utf-7": "utf-7",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "iso_8859-1": "cp1252",
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932",
    "iso-2022-jp": "iso2022_jp_2", "tis-620": "cp874", "windows-874": "cp874",
    "utf8": "utf-8", "unicode": "utf-8",
}
# Labels that mean "we do not know": decide from the bytes instead.
_UNKNOWN_LABELS = {"us-ascii", "ascii", "ansi_x3.4-1968", "x-unknown", "unknown", "unknown-8bit",
                   "x-user-defined", "default", "charset", "none", "7bit", "8bit"}
# Text codecs that must never see mail: quadratic (punycode, idna) or not charsets at all.
_REFUSED_CODECS = {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined",
                   "unicode-internal", "mbcs", "oem"}
_JIS_ESCAPES = (b"\x1b$B", b"\x1b$@", b"\x1b(J", b"\x1b$(D")


def _codec(label: str | None) -> str | None:
    """Python codec name for a MIME charset label, or None when the label is unusable."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    if not name or name in _UNKNOWN_LABELS:
        return None
    name = _CHARSET_ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if info.name in _REFUSED_CODECS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def decode_text(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode body or header bytes; returns (text, defect or None). Never raises."""
    codec = _codec(charset)
    defect = None
    if charset and codec is None and charset.strip().strip("\"'").lower() not in _UNKNOWN_LABELS:
        defect = f"unknown charset {charset[:40]!r}"
    if codec is not None:
        try:
            return data.decode(codec, "replace"), defect
        except Exception:  # noqa: BLE001 - e.g. a codec that rejects the error handler
            defect = f"charset {(charset or '')[:40]!r} failed"
    if any(esc in data for esc in _JIS_ESCAPES):
        try:
            return data.decode("iso2022_jp_2", "replace"), defect
        except Exception:  # noqa: BLE001
            pass
    try:
        return data.decode("utf-8"), defect
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace"), defect


# -- RFC 2047 encoded-words --------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,60})\?([QqBb])\?([^?]{0,2000}?)\?=")
_B64_CLEAN = re.compile(rb"[^A-Za-z0-9+/]")


def _b64decode(data: bytes | memoryview) -> tuple[bytes, bool]:
    """Lenient base64; returns (bytes, repaired?) — bad padding and junk are tolerated."""
    try:
        return binascii.a2b_base64(data), False
    except (binascii.Error, ValueError):
        clean = _B64_CLEAN.sub(b"", bytes(data))
        clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
        clean += b"=" * (-len(clean) % 4)
        try:
            return binascii.a2b_base64(clean), True
        except (binascii.Error, ValueError):
            return b"", True


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words in unstructured text; unknown charsets never raise.

    Adjacent words in the same charset are decoded together, so a multi-byte character split
    across two words survives; whitespace between two encoded-words is dropped (RFC 2047 §6.2).
    """
    if "=?" not in value:
        return value
    pieces: list[str | tuple[str, bytearray]] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos:match.start()]
        follows_word = bool(pieces) and isinstance(pieces[-1], tuple)
        if between and not (follows_word and between.isspace()):
            pieces.append(between)
        charset = match.group(1).split("*", 1)[0].lower()
        payload = match.group(3).encode("utf-8", "replace")
        if match.group(2) in "Qq":
            data = binascii.a2b_qp(payload, header=True)
        else:
            data, _ = _b64decode(payload + b"=" * (-len(payload) % 4))
        last = pieces[-1] if pieces else None
        if isinstance(last, tuple) and last[0] == charset and not between.strip():
            last[1].extend(data)
        else:
            pieces.append((charset, bytearray(data)))
        pos = match.end()
    pieces.append(value[pos:])
    return "".join(p if isinstance(p, str) else decode_text(bytes(p[1]), p[0])[0] for p in pieces)
