"""What every store URL parser shares (``heron.stores._url``): boolean options, and URLs shown
in errors, logs and reprs with their credentials masked."""

from __future__ import annotations

import pytest

from heron.stores import open_store
from heron.stores._url import masked, parse_bool


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///shop.db", "sqlite:///shop.db"),  # nothing to hide: exactly as given
        ("sqlite:////var/lib/heron.db", "sqlite:////var/lib/heron.db"),
        ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
        ("https://user:s3cret@db.turso.io?bogus=1", "https://user:***@db.turso.io?bogus=1"),
        (
            "libsql://db.turso.io?authToken=eyJ.x.y&tls=0",
            "libsql://db.turso.io?authToken=***&tls=0",
        ),
        ("kv+upstash://h?tls=0&TOKEN=abc#f", "kv+upstash://h?tls=0&TOKEN=***#f"),
    ],
)
def test_a_url_is_shown_with_its_credentials_masked(url: str, shown: str) -> None:
    assert masked(url) == shown


def test_an_error_about_a_libsql_url_never_shows_its_password() -> None:
    with pytest.raises(ValueError, match="unknown libSQL URL option 'bogus'") as refused:
        open_store("https://user:SUPERSECRET@db.turso.io?bogus=1")

    assert "SUPERSECRET" not in str(refused.value) and ":***@" in str(refused.value)


@pytest.mark.parametrize(("text", "value"), [("1", True), ("Yes", True), (" off ", False)])
def test_boolean_options_take_the_usual_spellings(text: str, value: bool) -> None:
    assert parse_bool("sqlite", "auto_schema", text) is value


def test_a_boolean_option_that_is_not_one_names_the_store_and_the_option() -> None:
    with pytest.raises(ValueError, match=r"redis store URL option auto_schema='maybe'"):
        parse_bool("redis", "auto_schema", "maybe")
