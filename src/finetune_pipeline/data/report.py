"""The data report: what a user should know about their data before an hour of training.

Computed from the texts, labels and split alone (and the tokenizer for lengths: no model is loaded).
Every finding carries a count and up to ``EXAMPLES`` examples. ``data_report.json``:

    {"source", "records", "split",
     "classes": {"train" | "val" | "test": {label: count}, "imbalance_ratio": largest / smallest train class},
     "duplicates": {"within_split": {"count", "examples"}, "dropped_at_preprocessing": n},
     "leakage": {"cross_split": {"count", "pairs": {"train-val", "train-test", "val-test"}, "examples"},
                 "policy": warn | error | drop, "dropped_from_train": n},
     "conflicts": {"count", "examples": [{"text", "labels"}]},
     "labels": {"case_collisions": [[label, ...]], "case_collision_count",
                "suspected_typos": [[label, label]], "suspected_typo_count"},   # lists: the first 20
     "short_texts": {"count", "examples", "below_characters"},
     "lengths": {"max_length", "per_split": {split: {"mean", "p50", "p95", "max"}}, "truncated", "truncated_share",
                 "hint"},
     "scripts": {"latin", "cyrillic", "other"}}   # shares of the letters

Texts are compared exactly and normalised (Unicode NFKC, case folded, punctuation dropped,
whitespace collapsed): "Stocks rally!" and "stocks  rally" are the same text.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finetune_pipeline.artifacts.atomic import atomic_path, write_json
from finetune_pipeline.artifacts.markdown import markdown_cell, one_line
from finetune_pipeline.artifacts.names import DATA_REPORT_FILE, DATA_REPORT_MARKDOWN, DATA_REPORT_PLOT
from finetune_pipeline.config.schema import LeakagePolicy
from finetune_pipeline.data.report_plot import plot_data
from finetune_pipeline.data.split import Split
from finetune_pipeline.errors import PipelineError

EXAMPLES = 5
MAX_LISTED = 20  # label pairs listed (the counts are complete)
SHORT_CHARACTERS = 8  # a text with fewer characters (spaces aside) is listed as very short
LONG_TEXT_HINT_SHARE = 0.05  # above this share of truncated texts the report suggests data.long_text=chunk
PARTS = ("train", "val", "test")
log = logging.getLogger(__name__)
_PUNCTUATION = re.compile(r"[^\w\s]+")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")
_CYRILLIC = re.compile(r"[\u0400-\u052f]")
_LETTER = re.compile(r"[^\W\d_]")


def normalised(text: str) -> str:
    """The text as compared for near-duplicates: NFKC, case folded, no punctuation, single spaces."""
    return " ".join(_PUNCTUATION.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


@dataclass(frozen=True)
class Leakage:
    """Records of val/test whose (normalised) text is also in an earlier split."""

    count: int
    pairs: dict[str, int]  # "train-val", "train-test", "val-test" -> records of the later split
    examples: list[dict]
    train_rows: list[int]  # train records whose text is also in val or test (what data.leakage=drop removes)


def find_leakage(texts: list[str], labels: list[str], split: Split) -> Leakage:
    keys = [normalised(t) for t in texts]
    seen = {part: {keys[i] for i in rows} for part, rows in zip(PARTS, split)}
    pairs = {"train-val": 0, "train-test": 0, "val-test": 0}
    examples, leaked = [], 0
    for part, earlier in (("val", ("train",)), ("test", ("train", "val"))):
        for i in getattr(split, part):
            found = [e for e in earlier if keys[i] in seen[e]]
            for e in found:
                pairs[f"{e}-{part}"] += 1
            if found:
                leaked += 1
                if len(examples) < EXAMPLES:
                    examples.append({"text": _shown(texts[i]), "label": labels[i], "splits": [*found, part]})
    later = seen["val"] | seen["test"]
    train_rows = [int(i) for i in split.train if keys[i] in later]
    return Leakage(leaked, pairs, examples, train_rows)


@dataclass(frozen=True)
class DataReport:
    source: str
    records: int
    split: str  # how the records were split (choose_split's ``how``)
    classes: dict
    duplicates: dict
    leakage: dict
    conflicts: dict
    labels: dict
    short_texts: dict
    lengths: dict
    scripts: dict
    label_sets: dict | None = None  # multi-label: split -> label set -> records ("classes" counts single labels)

    def write(self, folder: Path) -> list[Path]:
        """data_report.json, .md and .png into ``folder`` (each replaced whole)."""
        files = [folder / DATA_REPORT_FILE, folder / DATA_REPORT_MARKDOWN, folder / DATA_REPORT_PLOT]
        write_json(files[0], dataclasses.asdict(self))
        with atomic_path(files[1]) as tmp:
            tmp.write_text(self.markdown(), encoding="utf-8")
        classes = {part: self.classes[part] for part in PARTS}
        plot_data(
            classes,
            self.lengths["histogram"],
            self.lengths["max_length"],
            files[2],
            f"{self.source}: {self.records} records, {self.split} split",
        )
        return files

    def markdown(self) -> str:
        """The report for a person (what ``inspect-data`` prints)."""
        cells = markdown_cell
        lines = [
            f"# Data report: {cells(self.source)}",
            "",
            f"{self.records} records, split: {self.split}. Imbalance (largest / smallest train class): "
            f"{self.classes['imbalance_ratio'] or 0:.1f}.",
            "",
            "## Findings",
            "",
        ]
        lines += [f"- **{w}**" for w in self.warnings()] or ["- nothing to act on"]
        lines += ["", "## Classes", "", "| label | train | val | test |", "|---|---|---|---|"]
        for label in sorted(set().union(*(self.classes[p] for p in PARTS))):
            lines.append(f"| {cells(label)} | " + " | ".join(str(self.classes[p].get(label, 0)) for p in PARTS) + " |")
        if self.label_sets is not None:  # multi-label: above, each label's records; here, the sets as they occur
            lines += ["", "## Label sets", "", "| labels | train | val | test |", "|---|---|---|---|"]
            for labels in sorted(set().union(*(self.label_sets[p] for p in PARTS))):
                counts = " | ".join(str(self.label_sets[p].get(labels, 0)) for p in PARTS)
                lines.append(f"| {cells(labels)} | {counts} |")
        cross = self.leakage["cross_split"]
        lines += [
            "",
            "## Duplicates, leakage, conflicts",
            "",
            f"- duplicates within a split (normalised text): {self.duplicates['within_split']['count']}; "
            f"exact duplicates dropped at preprocessing: {self.duplicates['dropped_at_preprocessing']}",
            f"- leakage (a val/test text also in an earlier split): {cross['count']} "
            f"(train-val {cross['pairs']['train-val']}, train-test {cross['pairs']['train-test']}, "
            f"val-test {cross['pairs']['val-test']}); "
            f"data.leakage={self.leakage['policy']}"
            + (
                f", {self.leakage['dropped_from_train']} removed from train" if self.leakage["policy"] == "drop" else ""
            ),
            f"- the same text with different labels: {self.conflicts['count']}",
            f"- labels differing only by case or spaces: {self.labels['case_collisions'] or 'none'}; "
            f"one letter apart: {self.labels['suspected_typos'] or 'none'}",
            f"- texts under {self.short_texts['below_characters']} characters: {self.short_texts['count']}",
        ]
        lines += [
            f"  - leakage: {cells(e['text'])} ({cells(e['label'])}; in {', '.join(e['splits'])})"
            for e in cross["examples"]
        ]
        lines += [
            f"  - conflict: {cells(e['text'])} ({', '.join(map(cells, e['labels']))})"
            for e in self.conflicts["examples"]
        ]
        lines += [
            f"  - duplicate: {cells(e['text'])} (as {cells(e['same_as'])})"
            for e in self.duplicates["within_split"]["examples"]
        ]
        lengths = self.lengths
        lines += [
            "",
            f"## Lengths (tokens, data.max_length={lengths['max_length']})",
            "",
            "| split | mean | median | p95 | max |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {p} | {v['mean']:.1f} | {v['p50']:.0f} | {v['p95']:.0f} | {v['max']} |"
            for p, v in lengths["per_split"].items()
        ]
        lines += [
            "",
            f"{lengths['truncated']} texts ({100 * lengths['truncated_share']:.1f}%) are longer than "
            f"data.max_length" + (f": {lengths['hint']}" if lengths["hint"] else "."),
            "",
            "Letters: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in self.scripts.items()),
            "",
        ]
        return "\n".join(lines)

    @classmethod
    def read(cls, folder: Path) -> DataReport:
        path = folder / DATA_REPORT_FILE
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as e:
            raise PipelineError(f"{path}: not a readable data report ({type(e).__name__}: {e})") from None

    def warnings(self) -> list[str]:
        """One line per finding a user should act on (logged as WARNINGs)."""
        out = []
        if self.leakage["cross_split"]["count"]:
            out.append(f"leakage: {leakage_line(self.leakage['cross_split']['pairs'])}")
        if self.conflicts["count"]:
            out.append(f"conflicts: {self.conflicts['count']} texts appear with more than one label")
        if self.labels["case_collisions"] or self.labels["suspected_typos"]:
            out.append(
                f"labels: {self.labels['case_collision_count']} groups differ only by case or spaces, "
                f"{self.labels['suspected_typo_count']} pairs are one letter apart: "
                f"{(self.labels['case_collisions'] + self.labels['suspected_typos'])[:3]}"
            )
        if self.lengths.get("hint"):
            out.append(
                f"lengths: {100 * self.lengths['truncated_share']:.1f}% of the texts are longer than "
                f"data.max_length={self.lengths['max_length']} tokens; {self.lengths['hint']}"
            )
        return out


def apply_leakage_policy(policy: LeakagePolicy, split: Split, leakage: Leakage) -> Split:
    """``data.leakage``: warn (logged; the report counts it), error (refuse to train) or drop (the
    train records whose text is also in val or test)."""
    if not leakage.count and not leakage.train_rows:
        return split
    shown = leakage.examples[0]["text"] if leakage.examples else ""
    if policy == LeakagePolicy.error:
        raise PipelineError(f"data.leakage=error: {leakage_line(leakage.pairs)} (e.g. {shown!r})")
    if policy == LeakagePolicy.drop:
        dropped = set(leakage.train_rows)
        kept = np.asarray([i for i in split.train if int(i) not in dropped], dtype=np.int64)
        log.warning(
            "data.leakage=drop: %d train records removed, their text is also in val or test%s",
            len(dropped),
            f"; {leakage.pairs['val-test']} test records still have their text in val"
            if leakage.pairs["val-test"]
            else "",
        )
        return Split(kept, split.val, split.test)
    log.warning("leakage: %s (e.g. %r)", leakage_line(leakage.pairs), shown)
    return split


def leakage_line(pairs: dict[str, int]) -> str:
    """What the cross-split duplicates are and what data.leakage can do about them."""
    in_train = pairs["train-val"] + pairs["train-test"]
    parts = []
    if in_train:
        parts.append(
            f"{in_train} val/test records have their text in train ({pairs['train-test']} test, "
            f"{pairs['train-val']} val): data.leakage=drop removes them from train, data.leakage=error "
            "refuses to train"
        )
    if pairs["val-test"]:
        parts.append(f"{pairs['val-test']} test records have their text in val (not removed by data.leakage=drop)")
    return "; ".join(parts)


def build_report(
    source: str,
    texts: list[str],
    labels: list,
    split: Split,
    split_how: str,
    tokenizer,
    max_length: int,
    policy: str,
    dropped_at_preprocessing: int = 0,
    long_text: str = "truncate",
    leakage: Leakage | None = None,
) -> DataReport:
    """``labels``: each record's label (its name, not its symbol), or (multi-label) the tuple of its
    labels' names; ``tokenizer``: for the lengths."""
    multi_label = bool(labels) and isinstance(labels[0], tuple)
    sets = [set_name(x) for x in labels] if multi_label else labels
    leakage = leakage or find_leakage(texts, sets, split)
    singles = [one for x in labels for one in x] if multi_label else labels
    return DataReport(
        source=source,
        records=len(texts),
        split=split_how,
        classes=_classes(labels, split),
        label_sets=_classes(sets, split) if multi_label else None,
        duplicates={
            "within_split": _within_split_duplicates(texts, split),
            "dropped_at_preprocessing": dropped_at_preprocessing,
        },
        leakage={
            "cross_split": {"count": leakage.count, "pairs": leakage.pairs, "examples": leakage.examples},
            "policy": policy,
            "dropped_from_train": len(leakage.train_rows) if policy == "drop" else 0,
        },
        conflicts=_conflicts(texts, sets),
        labels=_label_spellings(sorted(set(singles))),
        short_texts=_short_texts(texts),
        lengths=_lengths(texts, split, tokenizer, max_length, long_text),
        scripts=_scripts(texts),
    )


def set_name(labels: tuple[str, ...]) -> str:
    """A multi-label record's label set as one name: ``economy + sport``; ``(none)`` when empty."""
    return " + ".join(labels) or "(none)"


def _classes(labels: list, split: Split) -> dict:
    """Records per label and split; a multi-label record (a tuple) counts for each of its labels."""

    def each(label) -> tuple:
        return label if isinstance(label, tuple) else (label,)

    out: dict = {
        part: dict(sorted(Counter(one for i in rows for one in each(labels[i])).items()))
        for part, rows in zip(PARTS, split)
    }
    train = list(out["train"].values())
    out["imbalance_ratio"] = max(train) / min(train) if train else None
    return out


def _within_split_duplicates(texts: list[str], split: Split) -> dict:
    """Records of one split whose normalised text an earlier record of that split already has."""
    count, examples = 0, []
    for rows in split:
        first: dict[str, int] = {}
        for i in rows:
            key = normalised(texts[i])
            if key in first:
                count += 1
                if len(examples) < EXAMPLES:
                    examples.append({"text": _shown(texts[i]), "same_as": _shown(texts[first[key]])})
            else:
                first[key] = int(i)
    return {"count": count, "examples": examples}


def _conflicts(texts: list[str], labels: list[str]) -> dict:
    labels_of: dict[str, set[str]] = defaultdict(set)
    shown: dict[str, str] = {}
    for text, label in zip(texts, labels):
        key = normalised(text)
        labels_of[key].add(label)
        shown.setdefault(key, text)
    found = [key for key, seen in labels_of.items() if len(seen) > 1]
    return {
        "count": len(found),
        "examples": [{"text": _shown(shown[k]), "labels": sorted(labels_of[k])} for k in found[:EXAMPLES]],
    }


def _label_spellings(labels: list[str]) -> dict:
    """Labels equal once case and spaces are folded; pairs one letter apart (suspected typos: a
    letter changed, added or dropped; "label 1" / "label 2" or "A1" / "A2" are codes, not typos)."""
    folded: dict[str, list[str]] = defaultdict(list)
    for label in labels:
        folded[" ".join(label.casefold().split())].append(label)
    collisions = [group for group in folded.values() if len(group) > 1]
    by_key: dict[str, set[str]] = defaultdict(set)  # a label under itself and each one-character deletion
    for label in labels:
        if len(label) >= 4:
            for key in {label} | {label[:k] + label[k + 1 :] for k in range(len(label))}:
                by_key[key].add(label)
    candidates = {(a, b) for group in by_key.values() for a in group for b in group if a < b}
    typos = sorted([a, b] for a, b in candidates if _one_letter_apart(a, b) and a.casefold() != b.casefold())
    return {
        "case_collisions": collisions[:MAX_LISTED],
        "case_collision_count": len(collisions),
        "suspected_typos": typos[:MAX_LISTED],
        "suspected_typo_count": len(typos),
    }


def _one_letter_apart(a: str, b: str) -> bool:
    """One letter substituted, inserted or deleted (a digit or a sign that differs is no typo)."""
    if len(a) == len(b):
        diff = [(x, y) for x, y in zip(a, b) if x != y]
        return len(diff) == 1 and diff[0][0].isalpha() and diff[0][1].isalpha()
    short, long = sorted((a, b), key=len)
    if len(long) - len(short) != 1:
        return False
    return any(long[k].isalpha() and long[:k] + long[k + 1 :] == short for k in range(len(long)))


def _short_texts(texts: list[str]) -> dict:
    short = [t for t in texts if len("".join(t.split())) < SHORT_CHARACTERS]
    return {
        "count": len(short),
        "examples": [_shown(t) for t in short[:EXAMPLES]],
        "below_characters": SHORT_CHARACTERS,
    }


def _lengths(texts: list[str], split: Split, tokenizer, max_length: int, long_text: str) -> dict:
    """Tokens per text (special tokens included, untruncated) per split; the share cut at max_length."""
    tokens = np.asarray(
        [len(ids) for ids in tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]]
    )
    per_split = {}
    for part, rows in zip(PARTS, split):
        part_tokens = tokens[rows] if len(rows) else np.zeros(1, dtype=int)
        per_split[part] = {
            "mean": float(part_tokens.mean()),
            "p50": float(np.percentile(part_tokens, 50)),
            "p95": float(np.percentile(part_tokens, 95)),
            "max": int(part_tokens.max()),
        }
    truncated = int((tokens > max_length).sum())
    share = truncated / max(1, len(tokens))
    hint = (
        "data.long_text=chunk reads whole texts (overlapping windows), or raise data.max_length"
        if share > LONG_TEXT_HINT_SHARE and long_text == "truncate"
        else None
    )
    histogram, edges = np.histogram(tokens, bins=min(50, max(1, int(tokens.max()) if len(tokens) else 1)))
    return {
        "max_length": max_length,
        "per_split": per_split,
        "truncated": truncated,
        "truncated_share": share,
        "hint": hint,
        "histogram": {"counts": histogram.tolist(), "edges": edges.tolist()},
    }


def _scripts(texts: list[str]) -> dict:
    latin = cyrillic = letters = 0
    for text in texts:
        latin += len(_LATIN.findall(text))
        cyrillic += len(_CYRILLIC.findall(text))
        letters += len(_LETTER.findall(text))
    total = max(1, letters)
    return {"latin": latin / total, "cyrillic": cyrillic / total, "other": max(0, letters - latin - cyrillic) / total}


def _shown(text: str) -> str:
    return one_line(text, 120)
