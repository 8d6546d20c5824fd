"""Structured Field Values (RFC 8941): the Dictionary parser the Priority field needs.

The Priority request field (RFC 9218 §5) and the PRIORITY_UPDATE frame's value (§7) are
sf-dictionaries (RFC 8941 §3.2). ``parse_dictionary`` follows the parsing algorithm of
RFC 8941 §4.2 step by step, so that what is invalid there is invalid here: any failure
fails the whole field, and the caller then ignores it (§4.2: "fail parsing" means the
field is treated as absent). Values come back as Python values: ``int`` (sf-integer),
``float`` (sf-decimal), ``str`` (sf-string), ``Token`` (sf-token, a ``str``), ``bytes``
(sf-binary), ``bool`` (sf-boolean); an inner list is a ``list`` of ``(value, params)``.

Pure: no IO; imports nothing but the standard library.
"""

from __future__ import annotations

import base64
import binascii
import string

__all__ = ["Item", "StructuredFieldError", "Token", "parse_dictionary"]


class Token(str):
    """An sf-token (RFC 8941 §3.3.4), told apart from an sf-string by its type."""

    __slots__ = ()


BareItem = int | float | str | bytes | bool
Params = dict[str, BareItem]
InnerList = list[tuple[BareItem, Params]]
Item = tuple[BareItem | InnerList, Params]


class StructuredFieldError(ValueError):
    """The text is not a valid Structured Field (RFC 8941 §4.2: parsing fails)."""


# RFC 8941 §3.1.2: key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )
_KEY_FIRST = frozenset(string.ascii_lowercase + "*")
_KEY_REST = frozenset(string.ascii_lowercase + string.digits + "_-.*")
# RFC 9110 §5.6.2 tchar, plus ":" and "/" (RFC 8941 §3.3.4 sf-token).
_TOKEN_REST = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~:/")
_BASE64 = frozenset(string.ascii_letters + string.digits + "+/=")
_OWS = " \t"
# RFC 8941 §3.3.1, §3.3.2: at most 15 digits for an integer; 12 + 3 for a decimal.
_MAX_INTEGER_DIGITS = 15
_MAX_DECIMAL_DIGITS = 12


class _Input:
    """The text being parsed and the position in it (RFC 8941 §4.2's input_string)."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        self.pos += 1
        return char

    def skip(self, chars: str) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in chars:
            pos += 1
        self.pos = pos

    def at_end(self) -> bool:
        return self.pos >= len(self.text)


def parse_dictionary(value: bytes | str) -> dict[str, Item]:
    """Parse an sf-dictionary (RFC 8941 §4.2, §4.2.2); raises ``StructuredFieldError``.

    Bytes are taken as ASCII: any other octet fails the parse, as no rule admits it.
    A key given twice keeps its last value (§4.2.2).
    """
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    src = _Input(value)
    src.skip(" ")  # §4.2 step 2: leading SP is discarded (OWS is trimmed by HTTP itself)
    members: dict[str, Item] = {}
    while not src.at_end():
        key = _key(src)
        if src.peek() == "=":
            src.take()
            members[key] = _item_or_inner_list(src)
        else:
            members[key] = (True, _parameters(src))  # §4.2.2: a bare key is Boolean true
        src.skip(_OWS)
        if src.at_end():
            break
        if src.take() != ",":
            raise StructuredFieldError("expected ',' between dictionary members")
        src.skip(_OWS)
        if src.at_end():
            raise StructuredFieldError("trailing ',' in a dictionary")
    return members


def _key(src: _Input) -> str:
    """RFC 8941 §4.2.3.3."""
    if src.peek() not in _KEY_FIRST:
        raise StructuredFieldError("a key must start with a lowercase letter or '*'")
    start = src.pos
    src.take()
    while not src.at_end() and src.peek() in _KEY_REST:
        src.take()
    return src.text[start : src.pos]


def _item_or_inner_list(src: _Input) -> Item:
    """RFC 8941 §4.2.1.1."""
    if src.peek() == "(":
        return _inner_list(src)
    return _bare_item(src), _parameters(src)


def _inner_list(src: _Input) -> Item:
    """RFC 8941 §4.2.1.2: items separated by SP, in parentheses, then parameters."""
    src.take()  # "("
    items: InnerList = []
    while not src.at_end():
        src.skip(" ")
        if src.peek() == ")":
            src.take()
            return items, _parameters(src)
        items.append((_bare_item(src), _parameters(src)))
        if src.peek() not in (" ", ")"):
            raise StructuredFieldError("inner-list items must be separated by SP")
    raise StructuredFieldError("inner list without ')'")


def _parameters(src: _Input) -> Params:
    """RFC 8941 §4.2.3.2: ``;key[=value]`` repeated; a bare key is Boolean true."""
    params: Params = {}
    while src.peek() == ";":
        src.take()
        src.skip(" ")
        key = _key(src)
        value: BareItem = True
        if src.peek() == "=":
            src.take()
            value = _bare_item(src)
        params[key] = value
    return params


def _bare_item(src: _Input) -> BareItem:
    """RFC 8941 §4.2.3.1: the first character says which kind of item follows."""
    char = src.peek()
    if char == "-" or (char.isdigit() and char.isascii()):
        return _number(src)
    if char == '"':
        return _string(src)
    if char == "*" or (char.isascii() and char.isalpha()):
        return _token(src)
    if char == ":":
        return _binary(src)
    if char == "?":
        return _boolean(src)
    raise StructuredFieldError(f"unexpected {char!r} where an item starts")


def _number(src: _Input) -> int | float:
    """RFC 8941 §4.2.4: an sf-integer, or an sf-decimal when a '.' follows digits."""
    sign = 1
    if src.peek() == "-":
        src.take()
        sign = -1
    start = src.pos
    dot = -1
    while not src.at_end():
        char = src.peek()
        if "0" <= char <= "9":
            src.take()
        elif char == "." and dot < 0:
            dot = src.pos
            if dot - start > _MAX_DECIMAL_DIGITS:
                raise StructuredFieldError("too many integer digits in a decimal")
            src.take()
        else:
            break
        if dot < 0 and src.pos - start > _MAX_INTEGER_DIGITS:
            raise StructuredFieldError("an integer has at most 15 digits")
        if dot >= 0 and src.pos - start > 16:
            raise StructuredFieldError("a decimal has at most 16 characters")
    text = src.text[start : src.pos]
    if not text or text[0] == ".":
        raise StructuredFieldError("a number needs a digit")
    if dot < 0:
        return sign * int(text)
    fraction = src.pos - dot - 1
    if not 1 <= fraction <= 3:
        raise StructuredFieldError("a decimal has one to three fractional digits")
    return sign * float(text)


def _string(src: _Input) -> str:
    """RFC 8941 §4.2.5: printable ASCII in quotes; only '\\"' and '\\\\' are escapes."""
    src.take()  # the opening quote
    out: list[str] = []
    while not src.at_end():
        char = src.take()
        if char == "\\":
            escaped = src.take()
            if escaped not in ('"', "\\"):
                raise StructuredFieldError("bad escape in a string")
            out.append(escaped)
        elif char == '"':
            return "".join(out)
        elif not " " <= char <= "~":
            raise StructuredFieldError("a string holds printable ASCII only")
        else:
            out.append(char)
    raise StructuredFieldError("string without its closing quote")


def _token(src: _Input) -> Token:
    """RFC 8941 §4.2.6."""
    start = src.pos
    src.take()
    while not src.at_end() and src.peek() in _TOKEN_REST:
        src.take()
    return Token(src.text[start : src.pos])


def _binary(src: _Input) -> bytes:
    """RFC 8941 §4.2.7: base64 between colons."""
    src.take()
    start = src.pos
    while not src.at_end() and src.peek() != ":":
        if src.take() not in _BASE64:
            raise StructuredFieldError("a byte sequence holds base64 only")
    if src.at_end():
        raise StructuredFieldError("byte sequence without its closing ':'")
    text = src.text[start : src.pos].rstrip("=")
    src.take()
    if "=" in text:
        raise StructuredFieldError("'=' inside a byte sequence")
    try:
        # §4.2.7: parsers SHOULD NOT fail when the "=" padding is missing.
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise StructuredFieldError("not base64") from exc


def _boolean(src: _Input) -> bool:
    """RFC 8941 §4.2.8: ``?0`` or ``?1``."""
    src.take()
    char = src.take()
    if char == "1":
        return True
    if char == "0":
        return False
    raise StructuredFieldError("a boolean is ?0 or ?1")
