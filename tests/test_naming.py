"""Keys, names and MIME types are normalised and checked before they touch storage."""

from __future__ import annotations

import pytest

from broker.naming import (
    InvalidKey,
    display_name,
    is_active_content,
    is_valid_mime_type,
    key_from_name,
    normalise_key,
    normalise_mime_type,
)


@pytest.mark.parametrize(
    "key",
    ["a", "a/b/c.txt", "with space/ü.png", "x" * 1024, "é" * 512, "a..b", ".hidden", "a/.b"],
)
def test_ordinary_keys_pass(key: str) -> None:
    assert normalise_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("..", "'..' segment"),
        ("../etc/passwd", "'..' segment"),
        ("a/../../b", "'..' segment"),
        ("a/.", "'.' or '..' segment"),
        ("/etc/passwd", "absolute"),
        ("a//b", "empty"),
        ("a/", "empty"),
        ("a\\..\\b", "backslash"),
        ("a\x00b", "control character"),
        ("a\x1fb", "control character"),
        ("a\x7fb", "control character"),
        ("x" * 1025, "longer than 1024 bytes"),
        ("é" * 513, "longer than 1024 bytes"),
    ],
)
def test_dangerous_keys_are_refused_with_a_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidKey, match=reason.replace(".", r"\.").replace("(", r"\(")):
        normalise_key(key)


def test_keys_are_nfc_normalised() -> None:
    assert normalise_key("e\u0301") == "\u00e9"


def test_generated_keys_keep_a_readable_name() -> None:
    assert key_from_name("01abc", "report.pdf") == "01abc/report.pdf"
    assert key_from_name("01abc", "C:\\Users\\me\\report.pdf") == "01abc/report.pdf"
    assert key_from_name("01abc", "..") == "01abc"


def test_display_name_is_the_last_component() -> None:
    assert display_name("dir/sub/file.txt") == "file.txt"
    assert display_name("dir/") == "download"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("image/png", True),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", True),
        ("text/plain; charset=utf-8", True),
        ('text/plain; charset="utf-8"', True),
        ("text", False),
        ("text/", False),
        ("text/plain\r\nX: y", False),
        ("a b/c", False),
    ],
)
def test_mime_type_syntax(value: str, valid: bool) -> None:
    assert is_valid_mime_type(value) is valid


def test_mime_type_normalisation_keeps_parameters() -> None:
    assert normalise_mime_type("Text/Plain ;  charset=UTF-8") == "text/plain; charset=UTF-8"


@pytest.mark.parametrize(
    ("mime", "active"),
    [
        ("text/html", True),
        ("TEXT/HTML; charset=utf-8", True),
        ("image/svg+xml", True),
        ("application/atom+xml", True),
        ("application/javascript", True),
        ("text/xml", True),
        ("image/png", False),
        ("application/pdf", False),
        ("text/plain", False),
    ],
)
def test_active_content(mime: str, active: bool) -> None:
    assert is_active_content(mime) is active
