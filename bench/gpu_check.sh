#!/bin/bash
# GPU checks, from the project root of an installed checkout on a CUDA machine:
#   OUT=/tmp/gpu-check bash bench/gpu_check.sh <folder with mmBERT-base's config.json>
# the CUDA tests (tests/test_cuda.py), then the mmBERT-base stand-in's throughput: full fine-tuning in
# bf16, fp16 and fp32, and a frozen bf16 run (encoding). Results in docs/benchmarks.md ("On a GPU").
set -o pipefail
CONFIG_DIR=${1:?folder with the backbone config.json}
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 FINETUNE_PIPELINE_ROOT=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -n 5 | tee $OUT/cuda_tests.txt
python3 bench/make_synthetic_texts.py /tmp/synth
python3 bench/make_standin.py "$CONFIG_DIR" /tmp/standin --texts data/raw 2>&1 | tail -n 1
COMMON="backbone=mmbert_base backbone.path=/tmp/standin backbone.download=false data.raw_dir=/tmp/synth data.max_length=256 training.progress_bar=false logger=none training.device=cuda training.epochs=1 training.log_every_steps=25"
for p in bf16 fp16 fp32; do
  timeout 150 python3 train.py $COMMON precision=$p training.freeze_backbone=false training.batch_size=32 hydra.run.dir=/tmp/ft_$p > /tmp/ft_$p.out 2>&1
  echo "== fine-tune $p rc=$?"; grep -E "gpu_mem|test \(|precision|texts/s|epoch 1/1" /tmp/ft_$p.out | tail -n 4
  cp /tmp/ft_$p/metrics.json $OUT/ft_$p.metrics.json 2>/dev/null
done
timeout 120 python3 train.py $COMMON precision=bf16 training.epochs=3 hydra.run.dir=/tmp/frozen_bf16 > /tmp/frozen.out 2>&1
echo "== frozen bf16 rc=$?"; grep -E "encoded|test \(|precision" /tmp/frozen.out | tail -n 4
cp /tmp/frozen_bf16/metrics.json $OUT/frozen_bf16.metrics.json 2>/dev/null
cp /tmp/ft_bf16.out $OUT/ft_bf16.log.txt 2>/dev/null
