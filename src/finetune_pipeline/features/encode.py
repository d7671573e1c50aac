"""The encoding pass of a frozen encoder: one forward per text, length-sorted, pooled features out."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from finetune_pipeline.config.schema import Pooling
from finetune_pipeline.data.batches import Chunking, TokenizedTexts, eval_loader
from finetune_pipeline.model.classifier import text_vectors
from finetune_pipeline.model.prepacked import packed_for_a_pass
from finetune_pipeline.runtime.precision import Precision
from finetune_pipeline.runtime.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class EncodeStats:
    texts: int
    real_tokens: int  # non-padding tokens the encoder processed
    padded_tokens: int  # all token positions processed (real + padding)
    seconds: float
    windows: int = 0  # encoder rows: the texts, or with data.long_text=chunk all their windows

    @property
    def padding_share(self) -> float:
        return 1 - self.real_tokens / max(1, self.padded_tokens)

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "texts_per_second": self.texts / max(self.seconds, 1e-9),
            "padding_share": self.padding_share,
        }


@torch.inference_mode()
def encode(
    encoder: nn.Module,
    data: TokenizedTexts,
    pooling: Pooling,
    precision: Precision,
    device: torch.device,
    batch_size: int,
    max_tokens: int,
    pad_token_id: int,
    chunking: Chunking | None = None,
) -> tuple[torch.Tensor, EncodeStats]:
    """(N, H) float32 features on the CPU, in the dataset's order (a chunked text's: its windows' pooled)."""
    encoder.eval()
    loader = eval_loader(data, batch_size, num_workers=0, pad_token_id=pad_token_id, max_tokens=max_tokens)
    features = torch.empty(len(data), encoder.config.hidden_size)
    stats = EncodeStats(len(data), 0, 0, 0.0)
    started, next_report, done = time.perf_counter(), 0.25, 0
    bar = progress_bar(len(data), "encoding")
    with packed_for_a_pass(encoder, precision):
        for n, batch in enumerate(loader, start=1):
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)  # (B, T)
            with precision.autocast():
                hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
            vectors = text_vectors(
                hidden,
                {**batch, "attention_mask": mask, "window_doc": batch["window_doc"].to(device)}
                if "window_doc" in batch
                else {"attention_mask": mask},
                pooling,
                chunking,
            )
            features[batch["index"]] = vectors.float().cpu()  # back to dataset order
            stats.real_tokens += int(mask.sum())
            stats.padded_tokens += mask.numel()
            stats.windows += len(ids)
            done += len(batch["index"])
            bar.update(len(batch["index"]))
            if n / len(loader) >= next_report and n < len(loader):  # the log: every quarter
                elapsed = time.perf_counter() - started
                log.info("encoding: %d/%d texts, %.1f texts/s", done, len(data), done / elapsed)
                next_report += 0.25
    bar.close()
    stats.seconds = time.perf_counter() - started
    return features, stats
