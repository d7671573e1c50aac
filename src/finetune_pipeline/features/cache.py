"""On-disk cache of pooled features, keyed by everything that changes them.

Key = SHA-256 over the encoder's weight hash (the freeze proof's), the tokenizer files, max_length,
pooling, precision and the texts. One file per key; a file lock makes concurrent jobs of a sweep
wait for the one computing an entry instead of computing it twice. An entry records its key and the
SHA-256 of its tensors: a file copied or renamed from another key, or whose values were changed, is
deleted with a warning and computed again (entries written before these records are read as they are).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock

from finetune_pipeline.artifacts.atomic import save_torch
from finetune_pipeline.backbone.load import TOKENIZER_FILES

log = logging.getLogger(__name__)


def texts_sha256(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    return h.hexdigest()


def tokenizer_sha256(folder: Path) -> str:
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            h.update(name.encode() + b"\0" + hashlib.sha256((folder / name).read_bytes()).digest())
    return h.hexdigest()


def feature_key(**parts: str | int) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


class FeatureCache:
    def __init__(self, root: Path, rows: int):
        self.root = root
        self.rows = rows  # texts per entry: an entry of another length is not this key's

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def value(self, entry: dict):
        """What an entry holds, checked: (N, H) finite features."""
        features = entry["features"]
        if not (
            isinstance(features, torch.Tensor)
            and features.dim() == 2
            and len(features) == self.rows
            and bool(torch.isfinite(features).all())
        ):
            raise ValueError(f"not {self.rows} rows of finite features")
        return features

    def payload(self, value) -> dict:
        return {"features": value}

    def digest(self, value) -> str:
        """SHA-256 of an entry's tensors: a file is trusted for what it holds, not for its name."""
        h = hashlib.sha256()
        for tensor in self.payload(value).values():
            h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def load(self, key: str):
        """The entry's value (features); None when absent. A corrupt entry is deleted (and so rebuilt)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, weights_only=True)
            features = self.value(entry)
            if entry.get("key", key) != key:  # an entry copied or renamed from another key: not these texts' features
                raise ValueError(f"it holds the entry of key {entry['key']}")
            if "sha256" in entry and entry["sha256"] != self.digest(features):
                raise ValueError("its tensors differ from the SHA-256 recorded when it was written")
        except Exception as e:  # truncated file, foreign pickle, wrong shape, another key's entry, changed bytes
            log.warning(
                "feature cache: %s is corrupt (%s: %s); deleting it and encoding again",
                path,
                type(e).__name__,
                str(e).splitlines()[0] if str(e) else "",
            )
            path.unlink(missing_ok=True)
            return None
        return features

    def get_or_compute(self, key: str, compute: Callable[[], tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, bool]:
        """(features, hit). On a miss, ``compute`` runs under the key's lock and its result is stored."""
        features = self.load(key)
        if features is not None:
            log.info("feature cache: hit %s", self.path(key))
            return features, True
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f"{key}.lock")):
            features = self.load(key)  # another job may have finished it while we waited
            if features is not None:
                log.info("feature cache: hit %s (computed by a concurrent job)", self.path(key))
                return features, True
            log.info("feature cache: miss %s, encoding", self.path(key))
            features, meta = compute()
            save_torch(
                self.path(key), {**self.payload(features), "meta": meta, "key": key, "sha256": self.digest(features)}
            )
        return features, False


class TokenStateCache(FeatureCache):
    """Entries of token-level hidden states (adapter=top_layers): ``states`` (sum of lengths, H) in the
    cache dtype, ``lengths`` (N,) tokens per text; the value is the pair."""

    def value(self, entry: dict):
        states, lengths = entry["states"], entry["lengths"]
        if not (
            isinstance(states, torch.Tensor)
            and states.dim() == 2
            and isinstance(lengths, torch.Tensor)
            and len(lengths) == self.rows
            and int(lengths.sum()) == len(states)
            and bool(torch.isfinite(states).all())
        ):
            raise ValueError(f"not the token states of {self.rows} texts")
        return states, lengths

    def payload(self, value) -> dict:
        states, lengths = value
        return {"states": states, "lengths": lengths}
