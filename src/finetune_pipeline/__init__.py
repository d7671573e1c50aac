"""finetune-pipeline: Hydra-configured fine-tuning of text classifiers over mmBERT encoders."""

__version__ = "0.1.0"
__all__ = ["Classifier", "TrainedRun", "train"]


def __getattr__(name: str):
    if name == "Classifier":  # imported on first use: `import finetune_pipeline` stays light
        from finetune_pipeline.export.engines import Classifier  # every engine (torch, onnxruntime)

        return Classifier
    if name in ("train", "TrainedRun"):  # finetune_pipeline.train([...]): train.py from Python
        from finetune_pipeline import api

        return getattr(api, name)
    raise AttributeError(name)
