"""The model code every Hugging Face export folder ships as ``modeling_finetune_pipeline.py``.

Copied verbatim into the folder and named in its ``config.json`` (``auto_map``), so that plain
transformers loads the classifier the way finetune-pipeline trained it, in a process that has never
heard of finetune-pipeline:

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    classify = pipeline("text-classification", model=folder, trust_remote_code=True)

It imports torch and transformers only (no file of this package). The model is the encoder
(``AutoModel`` of the encoder config stored inside this config), pooling of its token states and
the MLP head, with the same parameter names as the project's checkpoints (``encoder.*``,
``head.*``). Texts are read as finetune-pipeline reads them: a text longer than ``max_length``
tokens is cut to its first window (``data.long_text=truncate``) or, for a run trained with
``data.long_text=chunk``, into windows of ``max_length`` tokens sharing ``stride`` tokens, pooled
by the mean or max of their vectors. So a caller may pass untruncated token ids (the
text-classification pipeline does) and still gets the run's answers.

``model_type`` is this project's own, so transformers refuses to load the folder without
``trust_remote_code`` instead of guessing an architecture and initialising random weights.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.auto.configuration_auto import CONFIG_MAPPING


class FinetunePipelineConfig(PretrainedConfig):
    """The encoder's own config (``encoder_config``), the head's shape and how texts become windows."""

    model_type = "finetune-pipeline-classifier"

    def __init__(
        self, encoder_config: dict | None = None, head: dict | None = None, windows: dict | None = None, **kwargs
    ):
        self.encoder_config = encoder_config or {}  # the encoder's config.json, model_type included
        self.head = head or {}  # in_dim, hidden_dim, pooling (mean | cls), temperature (logits / T; default 1)
        # max_length: tokens per window, special tokens included; special_before / special_after: the
        # tokenizer's special tokens around a text ([CLS] ... [SEP]: 1 and 1); stride: tokens two
        # windows share; pooling: mean | max over a text's windows, or null: its first window only
        self.windows = windows or {}
        super().__init__(**kwargs)


class FinetunePipelineForSequenceClassification(PreTrainedModel):
    """Token ids -> logits of the classes in ``config.id2label`` (softmax them for probabilities; with
    ``problem_type`` multi_label_classification, a sigmoid per label, and 0.5 is each label's threshold)."""

    config_class = FinetunePipelineConfig
    base_model_prefix = "encoder"
    _supports_sdpa = True

    def __init__(self, config: FinetunePipelineConfig):
        super().__init__(config)
        encoder = dict(config.encoder_config)
        self.encoder = AutoModel.from_config(CONFIG_MAPPING[encoder.pop("model_type")].from_dict(encoder))
        head = config.head
        self.head = nn.Sequential(  # the indices match the project's checkpoints (head.1.*, head.4.*)
            nn.Identity(),
            nn.Linear(head["in_dim"], head["hidden_dim"]),
            nn.GELU(),
            nn.Identity(),
            nn.Linear(head["hidden_dim"], config.num_labels),
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Every weight comes from the folder's model.safetensors; nothing is drawn at random."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **unused,
    ) -> SequenceClassifierOutput:  # token_type_ids and the like: the encoder ran without
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ids, mask, owner = self._windows(input_ids, attention_mask)  # (W, T), (W, T), (W,)
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (W, T, H)
        if self.config.head["pooling"] == "cls":
            vectors = hidden[:, 0]  # (W, H)
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (W, T, 1)
            vectors = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        texts = self._pool_windows(vectors, owner, input_ids.shape[0])  # (B, H)
        logits = self.head(texts.to(self.head[1].weight.dtype)).float()  # (B, C); the head in its loaded dtype
        logits = logits / float(self.config.head.get("temperature", 1.0))  # calibrated (temperature scaling)
        if self.config.head.get("threshold_logits"):  # multi-label: each label's tuned threshold becomes 0.5
            logits = logits - torch.tensor(self.config.head["threshold_logits"], device=logits.device)
        loss = None
        if labels is not None and self.config.problem_type == "multi_label_classification":
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        elif labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _windows(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Each text's tokens (its mask's ones, left or right padded) cut as the tokenizer's truncation
        and overflowing tokens cut them in training: (window ids, window mask, text of each window)."""
        w = self.config.windows
        size, before, after = w["max_length"], w["special_before"], w["special_after"]
        room = size - before - after  # text tokens per window
        step = room - (w.get("stride") or 0)
        rows, owner = [], []
        for text, (ids, keep) in enumerate(zip(input_ids.tolist(), attention_mask.tolist())):
            tokens = [t for t, k in zip(ids, keep) if k]
            if len(tokens) <= size:
                rows.append(tokens)
                owner.append(text)
                continue
            head, body, tail = tokens[:before], tokens[before : len(tokens) - after], tokens[len(tokens) - after :]
            for start in range(0, len(body), step):
                rows.append(head + body[start : start + room] + tail)
                owner.append(text)
                if start + room >= len(body) or w.get("pooling") is None:  # truncated runs read the first window
                    break
        pad = self.config.encoder_config.get("pad_token_id") or 0
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long, device=input_ids.device)
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=input_ids.device)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids, mask, torch.tensor(owner, device=input_ids.device)

    def _pool_windows(self, vectors: torch.Tensor, owner: torch.Tensor, texts: int) -> torch.Tensor:
        """(W, H) window vectors -> (texts, H): the mean or element-wise max of each text's windows."""
        index = owner.unsqueeze(1).expand_as(vectors)  # (W, H)
        if self.config.windows.get("pooling") == "max":
            out = torch.full((texts, vectors.shape[1]), float("-inf"), dtype=vectors.dtype, device=vectors.device)
            return out.scatter_reduce(0, index, vectors, reduce="amax", include_self=True)
        total = torch.zeros((texts, vectors.shape[1]), dtype=vectors.dtype, device=vectors.device)
        counts = torch.bincount(owner, minlength=texts).clamp(min=1).to(vectors.dtype).unsqueeze(1)
        return total.scatter_add(0, index, vectors) / counts
