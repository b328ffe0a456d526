"""storage/redaction.py: every form a secret takes in a message is masked, and the CLI, stored configs and shown
URLs go through it."""

from __future__ import annotations

import json

import pytest

from instructzero.storage.redaction import redact_secrets
from instructzero.storage.session import display_url

SECRET = "s3cr3tValue"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"postgresql://iz:{SECRET}@db-host:5432/x", "postgresql://iz:***@db-host:5432/x"),
        (
            f"postgresql+psycopg://iz:{SECRET}@127.0.0.1:notaport/db",
            "postgresql+psycopg://iz:***@127.0.0.1:notaport/db",
        ),
        (f"host=127.0.0.1 user=iz password='{SECRET}' dbname=x", "host=127.0.0.1 user=iz password=*** dbname=x"),
        (f"dbname=x password={SECRET} user=iz", "dbname=x password=*** user=iz"),
        (
            f"postgresql://u@host/db?password={SECRET}&sslmode=require",
            "postgresql://u@host/db?password=***&sslmode=require",
        ),
        (f"http://user:{SECRET}@host/v1", "http://user:***@host/v1"),
        (f"https://h/v1?api_key={SECRET}&x=1", "https://h/v1?api_key=***&x=1"),
        (f"https://h/v1?access_token={SECRET}", "https://h/v1?access_token=***"),
        (f"PGPASSWORD={SECRET} client_secret={SECRET}", "PGPASSWORD=*** client_secret=***"),
        (f'{{"password": "{SECRET}", "user": "iz"}}', '{"password": "***", "user": "iz"}'),
        (f"Authorization: Bearer {SECRET}", "Authorization: Bearer ***"),
        ("key sk-abcdefghijklmnopqrstuvwx in a message", "key sk-*** in a message"),
    ],
)
def test_every_form_is_masked(text: str, expected: str) -> None:
    assert redact_secrets(text) == expected and SECRET not in redact_secrets(text)


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:///x.db",
        "user=iz dbname=x port=5432",
        "monkey=3",
        "http://host:8000/v1",
        "invalid setting budget.max_total_tokens='lots'",
        "tokens=12 passwords_tried=3",
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact_secrets(text) == text


def test_display_url_masks_query_passwords_and_unparsable_urls() -> None:
    assert SECRET not in display_url(f"postgresql://u@h/db?password={SECRET}")
    assert display_url(f"postgresql://iz:{SECRET}@127.0.0.1:notaport/db") == "postgresql://iz:***@127.0.0.1:notaport/db"


def test_stored_config_json_carries_no_black_box_credentials() -> None:
    from instructzero.flows.params import build_config

    config = build_config(
        black_box={"base_url": f"http://user:{SECRET}@127.0.0.1:1/v1?api_key={SECRET}"},
        store_url=f"postgresql://iz@db/x?password={SECRET}",
    )
    dumped = config.model_dump_json()
    assert SECRET not in dumped
    assert json.loads(dumped)["black_box"]["base_url"] == "http://user:***@127.0.0.1:1/v1?api_key=***"
    assert config.black_box.base_url.startswith(f"http://user:{SECRET}@")  # the live object keeps what it needs


def test_cli_errors_are_redacted(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from instructzero.flows.cli import EXIT_USER_ERROR, main

    # a PostgreSQL store nobody listens on: the error names the store, never its password
    code = main(["sql", "SELECT 1", "--store", f"postgresql://iz:{SECRET}@127.0.0.1:9/db"])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR and err.startswith("error: ") and SECRET not in err
    code = main(["runs", "--store", f"postgresql://iz:{SECRET}@127.0.0.1:9/db?password={SECRET}"])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR and SECRET not in err


def test_duckdb_connection_errors_are_redacted_at_the_source() -> None:
    """The analytics layer's own error (what a library user sees) already hides DuckDB's libpq string."""
    from instructzero.storage.analytics import Analytics
    from instructzero.storage.errors import StoreError

    with pytest.raises(StoreError) as err:
        Analytics(f"postgresql://iz:{SECRET}@127.0.0.1:9/db")
    assert SECRET not in str(err.value) and "password=***" in str(err.value)


# ---------------------------------------------------------------- terminal output
HOSTILE = "a\x1b]0;pwned\x07b\x00c\u202edef"


def test_printable_escapes_controls_and_bidi_overrides() -> None:
    from instructzero.storage.redaction import printable

    assert printable(HOSTILE) == "a\\x1b]0;pwned\\x07b\\x00c\\u202edef"
    assert printable("café 日本\tok") == "café 日本\tok"  # ordinary text and tabs untouched


def test_runs_and_sql_tables_print_no_raw_control_characters(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from instructzero.flows.cli import main
    from instructzero.storage.repository import RunStore
    from tests.storage.test_repository import new_run

    url = f"sqlite:///{tmp_path / 's.db'}"
    with RunStore(url) as store:
        new_run(store, name=HOSTILE)
    assert main(["runs", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "\\x1b]0;pwned\\x07" in out and not any(ch in out for ch in "\x1b\x07\x00\u202e")
    assert main(["sql", "SELECT name FROM store.runs", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "\\x1b]0;pwned\\x07" in out and not any(ch in out for ch in "\x1b\x07\x00\u202e")
