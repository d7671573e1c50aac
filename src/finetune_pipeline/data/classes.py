"""Class ids: symbols present in the dataset, in assignment order (a=0, b=1, ...)."""

from __future__ import annotations

from dataclasses import dataclass

from finetune_pipeline.data.symbols import symbol_order


@dataclass(frozen=True)
class ClassIndex:
    symbols: list[str]  # id -> symbol
    labels: list[str]  # id -> original label

    @classmethod
    def from_dataset(cls, symbols: list[str], label_to_symbol: dict[str, str]) -> ClassIndex:
        ordered = symbol_order(symbols)
        symbol_to_label = {s: label for label, s in label_to_symbol.items()}
        return cls(ordered, [symbol_to_label[s] for s in ordered])

    def __len__(self) -> int:
        return len(self.symbols)

    def ids(self, symbols: list[str]) -> list[int]:
        lookup = {s: i for i, s in enumerate(self.symbols)}
        return [lookup[s] for s in symbols]

    def label_to_id(self) -> dict[str, int]:
        """label_to_id.json: symbol -> class id."""
        return {s: i for i, s in enumerate(self.symbols)}

    def id_to_label(self) -> dict[str, dict[str, str]]:
        """id_to_label.json: class id -> its symbol and original label."""
        return {str(i): {"symbol": s, "label": label} for i, (s, label) in enumerate(zip(self.symbols, self.labels))}

    def display_names(self) -> dict[int, str]:
        return {i: f"{label} ({s})" for i, (s, label) in enumerate(zip(self.symbols, self.labels))}
