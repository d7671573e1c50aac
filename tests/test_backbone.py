import shutil

import huggingface_hub
import pytest
from transformers import AutoConfig

from finetune_pipeline.backbone.load import load_encoder, load_tokenizer, locate_backbone
from finetune_pipeline.backbone.tiny import NOT_PRETRAINED_MARKER, tiny_backbone_folder
from finetune_pipeline.errors import PipelineError
from helpers import compose_config

TEXTS = ["The match ended in a draw", "Центробанк повысил ставку", "New exoplanet found"] * 20


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    shape = compose_config(["backbone=tiny"]).backbone.tiny
    return tiny_backbone_folder(tmp_path_factory.mktemp("tiny"), shape, TEXTS, "fingerprint")


def local_cfg(path, *overrides):
    return compose_config(["backbone=mmbert_base", f"backbone.path={path}", *overrides]).backbone


def test_tiny_backbone_is_cached_and_marked_not_pretrained(tiny_folder, tmp_path):
    assert (tiny_folder / NOT_PRETRAINED_MARKER).is_file()
    shape = compose_config(["backbone=tiny"]).backbone.tiny
    again = tiny_backbone_folder(tiny_folder.parent, shape, TEXTS, "fingerprint")
    assert again == tiny_folder
    assert tiny_backbone_folder(tiny_folder.parent, shape, TEXTS, "other data") != tiny_folder
    config = AutoConfig.from_pretrained(tiny_folder)
    # mmBERT's RoPE theta for local (sliding-window) layers too, not transformers' 10000 default
    assert config.rope_parameters["sliding_attention"]["rope_theta"] == 160000.0


def test_missing_weights_are_downloaded_when_online(tiny_folder, tmp_path, monkeypatch):
    calls = []

    def fake_download(repo_id, local_dir):
        calls.append(repo_id)
        shutil.copytree(tiny_folder, local_dir, dirs_exist_ok=True)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    cfg = local_cfg(tmp_path / "mmBERT-base", "backbone.hidden_size=64", "backbone.max_position_embeddings=512")
    backbone = locate_backbone(cfg, max_length=128, texts=[], data_fingerprint="")
    assert calls == ["jhu-clsp/mmBERT-base"] and backbone.folder == tmp_path / "mmBERT-base"
    assert backbone.pretrained is False  # the marker travelled with the copy
    encoder = load_encoder(backbone, cfg)
    assert encoder.config.hidden_size == 64 and len(load_tokenizer(backbone, cfg)) <= encoder.config.vocab_size


def test_download_disabled_explains_how_to_get_the_model(tmp_path):
    cfg = local_cfg(tmp_path / "absent", "backbone.download=false")
    with pytest.raises(PipelineError, match=r"absent: no model weights .*hf download jhu-clsp/mmBERT-base --local-dir"):
        locate_backbone(cfg, 128, [], "")


def test_a_backbone_without_a_hub_id_never_suggests_downloading_none(tmp_path):
    cfg = compose_config(["backbone=local", f"backbone.path={tmp_path / 'empty'}"]).backbone
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match=r"backbone.hub_id is not set") as error:
        locate_backbone(cfg, 128, [], "")
    assert "None" not in str(error.value) and "hf download" not in str(error.value)


def test_shape_mismatch_names_the_config_file(tiny_folder):
    with pytest.raises(
        PipelineError, match=r"config.json: hidden_size=64, but backbone.hidden_size=768 for mmBERT-base"
    ):
        locate_backbone(local_cfg(tiny_folder), 128, [], "")


def test_max_length_is_checked_against_the_folders_positions(tiny_folder):
    cfg = compose_config(["backbone=local", f"backbone.path={tiny_folder}"]).backbone
    with pytest.raises(PipelineError, match=r"data.max_length=1000 exceeds local's max_position_embeddings=512"):
        locate_backbone(cfg, 1000, [], "")


def test_tokenizer_larger_than_the_embedding_is_rejected(tiny_folder, tmp_path):
    folder = tmp_path / "mismatch"
    shutil.copytree(tiny_folder, folder)
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config.replace('"vocab_size": 2000', '"vocab_size": 10'))
    cfg = compose_config(["backbone=local", f"backbone.path={folder}"]).backbone
    backbone = locate_backbone(cfg, 128, [], "")
    with pytest.raises(PipelineError, match=r"tokenizer has .* tokens but the encoder's embedding has vocab_size=10"):
        load_tokenizer(backbone, cfg)
