"""Bare training steps of the mmBERT-base stand-in on a GPU (no pipeline): ms/step in fp32, TF32 and
bf16, and a profile of the bf16 step (CPU vs GPU time, kernel launches).

    python bench/gpu_step_profile.py            # expects the stand-in in /tmp/standin (bench/gpu_check.sh builds it)
"""

import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModel

m = AutoModel.from_pretrained("/tmp/standin").cuda().train()
head = torch.nn.Linear(768, 5).cuda()
opt = torch.optim.AdamW(list(m.parameters()) + list(head.parameters()), lr=1e-5)
ids = torch.randint(5, 2000, (32, 256), device="cuda")
mask = torch.ones_like(ids)
y = torch.randint(0, 5, (32,), device="cuda")


def step(dtype):
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        h = m(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = torch.nn.functional.cross_entropy(head(h.mean(1)), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


print("attn impl", m.config._attn_implementation)
for name, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp32-tf32", None)):
    torch.backends.cuda.matmul.allow_tf32 = name == "fp32-tf32"
    for _ in range(3):
        step(dtype)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        step(dtype)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / 10
    print(f"{name}: {dt * 1000:.1f} ms/step, {32 / dt:.0f} texts/s")
mask2 = mask.clone()
mask2[:, 200:] = 0  # padding as real batches have
for name, dtype in (("fp32 padded", None), ("bf16 padded", torch.bfloat16)):

    def step2(dtype=dtype):
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            h = m(input_ids=ids, attention_mask=mask2).last_hidden_state
            loss = torch.nn.functional.cross_entropy(head(h.mean(1)), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step2()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        step2()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / 10
    print(f"{name}: {dt * 1000:.1f} ms/step")
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(3):
        step2(torch.bfloat16)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8))
