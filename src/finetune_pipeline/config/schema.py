"""Typed config schema: what every key means and which type it has.

The values live once, in the YAML files under ``conf/`` (``MISSING`` here); Hydra validates
them and every command-line override against these dataclasses, so ``training.lerning_rate=1e-3``
or ``data.max_length=abc`` fails at start-up, before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Pooling(str, Enum):
    mean = "mean"  # mean of the non-padding token states (HF's ModernBERT classifier default)
    cls = "cls"  # state of the first token (<bos> for mmBERT, [CLS] for BERT)


class MixedPrecision(str, Enum):
    auto = (
        "auto"  # bf16 where supported and faster (CUDA, or a CPU where a probe says so), else fp16 on CUDA, else fp32
    )
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"  # CUDA only; uses a GradScaler


class ClassWeights(str, Enum):
    none = "none"
    balanced = "balanced"  # n_train / (n_classes * n_train_of_class), as scikit-learn's


class LrSchedule(str, Enum):
    linear = "linear"  # linear warm-up, then linear decay to 0
    cosine = "cosine"  # linear warm-up, then half a cosine down to 0
    constant = "constant"  # linear warm-up, then constant


class BestMetric(str, Enum):
    macro_f1 = "macro_f1"
    micro_f1 = "micro_f1"  # multi-label: over every (text, label) decision; single-label: equals accuracy
    accuracy = "accuracy"
    loss = "loss"  # lower is better


class Task(str, Enum):
    auto = "auto"  # multi_label when some record's label is a list of other than one label, else single_label
    single_label = "single_label"  # one class per text: softmax, cross-entropy
    multi_label = "multi_label"  # a set of labels per text (possibly empty): sigmoid per label, BCE


class SplitMode(str, Enum):
    auto = "auto"  # the parts' own split when every part's name says its split (or a HF dataset's), else stratified
    stratified = "stratified"  # scikit-learn stratified split by train_ratio / val_ratio and seed
    files = "files"  # keep the raw parts' own split: file names containing train / val|valid|dev / test
    kfold = "kfold"  # stratified k-fold: test = fold data.fold of data.folds, validation carved from the rest


class LeakagePolicy(str, Enum):
    warn = "warn"  # a WARNING and the data report's count
    error = "error"  # refuse to train
    drop = "drop"  # remove the train records whose text is also in val or test


class LongText(str, Enum):
    truncate = "truncate"  # keep the first max_length tokens of a text
    chunk = "chunk"  # overlapping windows of max_length tokens, encoded apart, pooled into one vector


class ChunkPooling(str, Enum):
    mean = "mean"
    max = "max"


class Calibration(str, Enum):
    temperature = "temperature"  # one temperature fitted on validation after training (never raises its NLL)
    none = "none"


class BackboneSource(str, Enum):
    local = "local"  # a Hugging Face model folder (downloaded from hub_id when missing and online)
    tiny = "tiny"  # a small random-init ModernBERT + tokenizer trained on the dataset (tests, smoke runs)


@dataclass
class HfSplits:
    """Our split -> the dataset's split name; null: none (data.split=stratified then splits what there is)."""

    train: str | None = MISSING
    val: str | None = MISSING
    test: str | None = MISSING


@dataclass
class HfDatasetConfig:
    """A Hugging Face dataset as the source instead of raw_dir: a folder written by ``save_to_disk``, or a Hub id."""

    path: str | None = MISSING  # null: read raw_dir; else a save_to_disk folder or a Hub id (needs the network once)
    name: str | None = MISSING  # the Hub dataset's configuration (load_dataset's name)
    revision: str | None = MISSING  # a Hub branch, tag or commit
    splits: HfSplits = field(default_factory=HfSplits)  # with all three set, the dataset's own split is kept


@dataclass
class DataConfig:
    raw_dir: str = MISSING  # .json / .jsonl / .csv / .tsv / .parquet parts of text + label records
    text_field: str = MISSING  # key or column of the text in every part (the original pipeline's "input")
    label_field: str = MISSING  # key or column of the label ("output"), or of a list of labels
    label_separator: str | None = MISSING  # a string label holding it is several labels ("sport|politics")
    task: Task = MISSING  # auto | single_label | multi_label
    hf: HfDatasetConfig = field(default_factory=HfDatasetConfig)
    cache_dir: str = MISSING  # feature cache and remembered backbone hashes (safe to delete)
    processed_dir: str = MISSING  # each source's processed folder, <processed_dir>/<name>-<hash of its location>/
    dataset_path: str | None = MISSING  # merged, output -> symbol; null: in the source's processed folder
    label_mapping_path: str | None = MISSING  # label -> symbol; null: in the source's processed folder
    split: SplitMode = MISSING
    leakage: LeakagePolicy = MISSING  # texts in train and also in val or test: warn | error | drop
    max_length: int = MISSING  # tokens per text after truncation (special tokens included)
    train_ratio: float = MISSING  # share of records for training
    val_ratio: float = MISSING  # share for validation; the rest is the test split
    seed: int = MISSING  # fixes the split (and, unless training.seed is set, the initialisation and data order)
    folds: int = MISSING  # split=kfold: K folds (scikit-learn StratifiedKFold, shuffled with data.seed)
    fold: int = MISSING  # split=kfold: the fold that is the test split, 0..K-1
    max_train_samples: int | None = MISSING  # null: all; else a stratified subset of the train split
    max_eval_samples: int | None = MISSING  # null: all; else a stratified subset of val and of test, each
    long_text: LongText = MISSING  # truncate | chunk: texts longer than max_length
    chunk_stride: int = MISSING  # chunk: tokens each window shares with the one before it
    chunk_pooling: ChunkPooling = MISSING  # chunk: a document's vector is the mean | max of its windows'


@dataclass
class TinyBackboneConfig:
    """Shape of the random-init ModernBERT built by ``backbone=tiny``."""

    vocab_size: int = MISSING  # tokenizer trained on the dataset's texts
    hidden_size: int = MISSING
    intermediate_size: int = MISSING
    num_hidden_layers: int = MISSING
    num_attention_heads: int = MISSING
    max_position_embeddings: int = MISSING
    local_attention: int = MISSING  # sliding-window width, as mmBERT's 128 but scaled down
    seed: int = MISSING  # weight initialisation of the tiny encoder


@dataclass
class BackboneConfig:
    name: str = MISSING
    source: BackboneSource = MISSING
    path: str = MISSING  # local folder; for source=tiny, the cache root
    hub_id: str | None = MISSING  # downloaded into `path` when weights are absent
    download: bool = MISSING  # allow the download above when online
    hidden_size: int | None = MISSING  # expected encoder width (checked); null skips the check
    max_position_embeddings: int | None = MISSING  # expected context (checked); null skips
    trust_remote_code: bool = MISSING  # never run code from a model folder unless asked
    tiny: TinyBackboneConfig | None = None  # set by backbone=tiny only


@dataclass
class ModelConfig:
    hidden_dim: int = MISSING  # width of the MLP head's hidden layer
    dropout: float = MISSING  # dropout before each of the head's linear layers
    pooling: Pooling = MISSING


class AttentionKernel(str, Enum):
    auto = "auto"  # bf16 on a CPU: plain attention for batches up to the length measured to favour it
    sdpa = "sdpa"  # the encoder's SDPA attention for every batch


@dataclass
class TrainingConfig:
    seed: int | None = MISSING  # the head's (and adapters') initialisation, dropout, data order; null: data.seed
    epochs: int = MISSING
    batch_size: int = MISSING  # texts per forward pass
    gradient_accumulation_steps: int = MISSING  # forward passes per optimizer step
    num_workers: int = MISSING  # DataLoader workers (texts are pre-tokenized; 0 is usually fastest)
    learning_rate: float = MISSING  # head
    encoder_learning_rate: float = MISSING  # encoder, used when freeze_backbone=false
    weight_decay: float = MISSING  # AdamW; never applied to biases and norm weights
    fused_optimizer: bool = MISSING  # PyTorch's fused AdamW kernel (CPU, CUDA): same update, one pass per tensor
    compile: str = MISSING  # auto | true | false: torch.compile a step's model (auto: off; training/compiled.py)
    attention: AttentionKernel = MISSING  # auto: per-batch kernel on bf16 CPUs (runtime/attention.py) | sdpa
    max_grad_norm: float = MISSING  # gradient clipping; 0 disables it
    warmup_ratio: float = MISSING  # share of optimizer steps with linear warm-up (then lr_schedule)
    lr_schedule: LrSchedule = MISSING  # linear | cosine | constant after the warm-up
    freeze_backbone: bool = MISSING  # train the head only; the encoder stays bit-identical
    freeze_embeddings: bool = MISSING  # full fine-tuning: the token embedding matrix stays as loaded
    cache_features: bool = MISSING  # frozen: encode each text once and train the head on cached features
    full_checkpoints: bool = MISSING  # frozen: write encoder + head instead of head + backbone identity
    encode_batch_size: int = MISSING  # most texts per batch of the encoding pass
    encode_max_tokens: int = MISSING  # padded tokens per batch of the encoding pass; 0 = rows only
    class_weights: ClassWeights = MISSING  # none | balanced: weigh the loss against class imbalance
    label_smoothing: float = MISSING  # cross-entropy label smoothing in [0, 1)
    best_metric: BestMetric = MISSING  # validation metric that picks best_model.pt
    calibration: Calibration = MISSING  # temperature | none: scores that mean probabilities (predict, serve, exports)
    calibration_min_texts: int = MISSING  # validation texts needed to fit a temperature or thresholds
    early_stopping_patience: int = MISSING  # stop after this many epochs without a better best_metric; 0 = off
    save_every_steps: int = (
        MISSING  # also save train_state.pt every N optimizer steps (it is saved every epoch); 0 = epochs only
    )
    log_every_steps: int = MISSING  # step record period (metrics.jsonl, trackers), in forward passes
    log_every_seconds: float = MISSING  # a step line in the log at most this often (and at each epoch's end)
    device: str = MISSING  # auto | cpu | cuda | cuda:N
    progress_bar: bool = MISSING  # tqdm bar on a terminal (never in logs or CI)


class AdapterMethod(str, Enum):
    none = "none"  # training.freeze_backbone decides: the head alone, or the whole encoder too
    lora = "lora"  # low-rank adapters (peft) in a frozen encoder, trained with the head
    top_layers = "top_layers"  # the top `layers` layers train over cached states of the frozen rest


@dataclass
class LoraConfig:
    """``adapter=lora``: low-rank adapters in the frozen encoder's linear layers."""

    rank: int = MISSING  # LoRA rank r
    alpha: float = MISSING  # LoRA scaling numerator (the update is alpha / r x B A)
    dropout: float = MISSING  # dropout on the adapter's input
    target_modules: list[str] | None = MISSING  # null: ModernBERT Wqkv, Wo, Wi; BERT-style query, key, value, dense


@dataclass
class TopLayersConfig:
    """``adapter=top_layers``: the top layers train over cached token states of the frozen rest."""

    layers: int = MISSING  # how many of the encoder's top layers train
    cache_dtype: str = MISSING  # fp16 | bf16 | fp32, the cached token states' storage


@dataclass
class AdapterConfig:
    """Cheaper fine-tuning than the whole encoder (conf/adapter/): ``adapter=lora``, ``adapter=top_layers``."""

    method: AdapterMethod = MISSING
    lora: LoraConfig | None = None  # set by adapter=lora only
    top_layers: TopLayersConfig | None = None  # set by adapter=top_layers only


class TrainingPath(str, Enum):
    """What trains and how the encoder runs: decided once from the keys (``config.load.training_path``)."""

    cached_features = "cached_features"  # frozen encoder run once per text; the head trains on cached features
    frozen_encoder = "frozen_encoder"  # frozen encoder run on every batch (training.cache_features=false)
    full = "full"  # the whole encoder fine-tuned with the head (training.freeze_backbone=false)
    lora = "lora"  # adapter=lora: LoRA adapters in the frozen encoder + the head
    top_layers = "top_layers"  # adapter=top_layers: the top layers + the head over cached lower-layer states

    @property
    def head_only(self) -> bool:
        """The encoder stays whole and unchanged: only the head trains."""
        return self in (TrainingPath.cached_features, TrainingPath.frozen_encoder)


@dataclass
class PrecisionConfig:
    mixed_precision: MixedPrecision = MISSING


class WandbMode(str, Enum):
    offline = "offline"  # runs saved under the run folder; `wandb sync <run>/wandb/offline-run-*` uploads them
    online = "online"
    disabled = "disabled"


@dataclass
class MlflowConfig:
    tracking_uri: str = MISSING  # sqlite:///<file> (no server), http(s)://<server>, databricks, ...
    experiment_name: str = MISSING
    run_name: str | None = MISSING  # null: the run folder under outputs/ (a sweep job: number and overrides)
    tags: dict[str, str] = MISSING  # added to every run (and to a sweep's parent run)
    # where a new experiment keeps artifacts; null: mlartifacts/ beside a local store, else the server's default
    artifact_location: str | None = MISSING
    log_checkpoints: bool = MISSING  # also upload best/final_model.pt and classifier_head.pt
    http_timeout_seconds: int = MISSING  # per request to a tracking server
    http_retries: int = MISSING  # retries per request before the tracker is given up for this run


@dataclass
class TensorBoardConfig:
    log_dir: str = MISSING  # event files, relative to the run folder


@dataclass
class WandbConfig:
    project: str = MISSING
    entity: str | None = MISSING  # team or user; null: the logged-in user's default
    mode: WandbMode = MISSING
    run_name: str | None = MISSING  # null: as for MLflow
    tags: list[str] = MISSING


@dataclass
class LoggerConfig:
    """Trackers this run logs to; each is set by its file in conf/logger/ (logger=[mlflow,tensorboard] for several)."""

    mlflow: MlflowConfig | None = None
    tensorboard: TensorBoardConfig | None = None
    wandb: WandbConfig | None = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # where the run is tracked; changes no result
    resume: str | None = None  # a run folder: continue it, with the config stored in it
    repeats: list[int] | None = None  # data.seed values: the run trains once per seed, returns the mean


def register_configs() -> None:
    """Register the schema so ``conf/config.yaml`` can extend it (defaults entry ``base_config``)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


def init_seed(cfg: Config) -> int:
    """The seed of the model's initialisation, dropout and data order: training.seed, or data.seed
    when it is null (one seed for everything, the original pipeline's behaviour)."""
    return cfg.training.seed if cfg.training.seed is not None else cfg.data.seed
