"""finetune-pipeline: Hydra-configured fine-tuning of text classifiers over mmBERT encoders."""

__version__ = "0.1.0"
