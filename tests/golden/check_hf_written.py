#!/usr/bin/env python3
"""check_hf_written.py: the checkpoints that ssm writes, loaded by transformers itself.

For each folder OUT/NAME/ that tests/golden/hf_written.c made (model.safetensors and
config.json through ssm's writers, expected.safetensors with input_ids and the logits ssm
computes for them), loads the folder with transformers' AutoModelForCausalLM.from_pretrained
(float32, CPU, the pure torch path, no network), runs input_ids through it and compares its
logits with ssm's: the relative L2 error must stay under 1e-4 (fp32 in both, sums in another
order). Prints one line per model and FAILED CHECK (exit 1) on a mismatch, on a missing or
unexpected tensor that transformers reports, or on a folder it cannot load.

Two differences of transformers' own, which ssm does not copy (ssm computes mamba_ssm's
function), are named rather than failed:
  - Mamba2ForCausalLM with n_groups > 1 normalises the gated RMSNorm over the whole width,
    mamba_ssm over each group: reported as a known difference;
  - NemotronHForCausalLM's torch path clamps dt below at time_step_min (mamba_ssm clamps to
    time_step_limit only): when the logits differ, the model is loaded again with
    time_step_min = 1e-30 (the clamp off; it is only the init's bound otherwise) and must
    match then.
The experts run through transformers' eager loop (its grouped_mm needs 16-byte strides,
which tiny models lack).

Usage (needs torch, transformers, safetensors):
  build/tests/hf_written /tmp/hfw nemotron=tests/golden/hf_nemotron_h_a jamba=tests/golden/hf_jamba_a ...
  CUDA_VISIBLE_DEVICES= python3 tests/golden/check_hf_written.py /tmp/hfw
"""

import json
import os
import sys

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch: the pure torch path on the CPU
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

TOL = 1e-4


def check(folder, **overrides):
    exp = load_file(os.path.join(folder, "expected.safetensors"))
    ids = exp["input_ids"].round().long()
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        folder, torch_dtype=torch.float32, output_loading_info=True, **overrides)
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")
    problems = [f"{k}: {v}" for k, v in info.items() if v and k != "mismatched_keys"]
    problems += [f"mismatched: {v}" for v in info.get("mismatched_keys", []) if v]
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    ours = exp["logits"]
    if logits.shape != ours.shape:
        return f"logits {tuple(logits.shape)} against ssm's {tuple(ours.shape)}", problems, type(model).__name__
    err = ((logits - ours).norm() / ours.norm()).item()
    return err, problems, type(model).__name__


def main():
    root = sys.argv[1]
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    bad = 0
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isfile(os.path.join(folder, "expected.safetensors")):
            continue
        try:
            err, problems, cls = check(folder)
        except Exception as e:  # a folder transformers cannot load is a finding, not a crash
            print(f"FAILED CHECK {name}: transformers could not load it: {type(e).__name__}: {e}")
            bad += 1
            continue
        ok = isinstance(err, float) and err < TOL and not problems
        what = f"logits rel err {err:.2e}" if isinstance(err, float) else err
        cfg = json.load(open(os.path.join(folder, "config.json")))
        if not ok and cfg.get("model_type") == "mamba2" and cfg.get("n_groups", 1) > 1:
            print(f"known {name} ({cls}): {what}: transformers' Mamba2 normalises over the whole "
                  f"width with n_groups = {cfg['n_groups']}, mamba_ssm (and ssm) per group")
            continue
        if not ok and cfg.get("model_type") == "nemotron_h" and not problems:
            err2, problems2, _ = check(folder, time_step_min=1e-30)
            ok = isinstance(err2, float) and err2 < TOL and not problems2
            what += (f"; with time_step_min 1e-30 (transformers' torch path clamps dt below at "
                     f"time_step_min, mamba_ssm does not): {err2:.2e}")
        print(f"{'ok  ' if ok else 'FAILED CHECK'} {name} ({cls}): {what}"
              + (f"; loading: {'; '.join(problems)}" if problems else ""))
        bad += not ok
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
