"""Tokenized datasets and dynamic-padding batches."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase


class TokenizedTexts(Dataset):
    """Texts tokenized once up front (truncated to max_length, unpadded) with their class ids."""

    def __init__(self, texts: list[str], labels: list[int], tokenizer: PreTrainedTokenizerBase, max_length: int):
        encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.input_ids[i], self.labels[i]


class PadCollator:
    """Pads a batch to its longest text, not to max_length: no compute spent on padding."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        longest = max(len(ids) for ids, _ in items)
        input_ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(items), longest), dtype=torch.long)  # (B, T)
        for row, (ids, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        labels = torch.tensor([label for _, label in items], dtype=torch.long)  # (B,)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def make_loader(data: TokenizedTexts, batch_size: int, shuffle: bool, seed: int, num_workers: int, pad_token_id: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)  # data order depends on the seed only
    return DataLoader(
        data, batch_size=batch_size, shuffle=shuffle, generator=generator,
        num_workers=num_workers, collate_fn=PadCollator(pad_token_id),
    )
