"""The names of what a run folder holds: the one place they are spelled.

<run>/
  best_model.pt, final_model.pt    checkpoints (artifacts/checkpoints)
  classifier_head.pt               the head's state_dict alone
  label_to_id.json, id_to_label.json
  tokenizer/                       the run's tokenizer (truncates at data.max_length)
  metrics.json                     artifacts/metrics_record.RunMetrics
  metrics.jsonl                    the step log (training/step_record)
  freeze_proof.json                artifacts/freeze_proof.FreezeProof
  data_report.json, .md, .png      data/report.DataReport: classes, duplicates, leakage, lengths
  train.log
  train_state.pt                   while the run can be resumed (training/state)
  failed.json                      a run that did not finish (artifacts/failure_record)
  tracking.json                    where its trackers logged it (tracking/trackers)
  evaluation/<name>/               report, predictions.jsonl, errors (evaluation/report)
  .hydra/                          config.yaml, hydra.yaml, overrides.yaml
  .lock                            held by the one process writing the folder
"""

BEST_MODEL_FILE = "best_model.pt"
FINAL_MODEL_FILE = "final_model.pt"
HEAD_FILE = "classifier_head.pt"
LABEL_TO_ID_FILE = "label_to_id.json"
ID_TO_LABEL_FILE = "id_to_label.json"
TOKENIZER_DIR = "tokenizer"
METRICS_FILE = "metrics.json"
STEP_LOG_FILE = "metrics.jsonl"
FREEZE_PROOF_FILE = "freeze_proof.json"
DATA_REPORT_FILE = "data_report.json"
DATA_REPORT_MARKDOWN = "data_report.md"
DATA_REPORT_PLOT = "data_report.png"
TRAIN_LOG_FILE = "train.log"
STATE_FILE = "train_state.pt"
FAILURE_FILE = "failed.json"
TRACKING_FILE = "tracking.json"
EVALUATION_DIR = "evaluation"
PREDICTIONS_FILE = "predictions.jsonl"
CONFIG_DIR = ".hydra"
LOCK_FILE = ".lock"
