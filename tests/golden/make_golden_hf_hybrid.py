#!/usr/bin/env python3
"""make_golden_hf_hybrid.py: the hybrid golden fixtures computed by transformers itself.

For each model of make_golden_hybrid.py (imported from this folder) it builds the
transformers class (float32, CPU, pure PyTorch: CUDA hidden before torch is imported, no
hub kernels), loads that script's float32 parameters into it by name, runs
model(input_ids, labels=input_ids) and loss.backward(), and writes OUT/hf_<name>/:

  model.safetensors, config.json   what save_pretrained wrote (generation_config.json removed)
  expected.safetensors             input_ids, logits, loss, hidden_f (the final norm's output,
                                   through a forward hook) and grad.<ssm name> for every
                                   parameter (transformers' gradients under ssm's names), F32;
                                   the layout of tests/golden/nemotron_h_a/.

  nemotron_h_a -> NemotronHForCausalLM (hybrid_override_pattern "ME*M-E"): the same names
    as ssm's ("backbone." or, in transformers 5, "model." in memory; the experts fused
    (X, U, D) or one module per expert: both are handled).
  jamba_a -> JambaForCausalLM (attn_layer_period 4 / offset 1, expert_layer_period 3 /
    offset 0: attention in block 1, MoE in blocks 0 and 3; output_router_logits, so that the
    loss holds router_aux_loss_coef * aux). Jamba's Mamba mixer has inner RMSNorms
    (dt_layernorm, b_layernorm, c_layernorm), ssm's Mamba-1 option inner_norms: they are set
    to random weights here, the float64 reference of make_golden_hybrid.py applies them, and
    their gradients are saved with the others.

It then compares transformers' logits, loss and every gradient with the float64 reference
(make_golden_hybrid.loss_of, the published equations) and prints the relative errors; a
FAILED CHECK line (and exit 1) when one exceeds 1e-4. Two places where transformers'
NemotronH torch path may compute another function than mamba_ssm, and so than ssm:
  - dt is clamped below at time_step_min (0.001) in its torch path (mamba_ssm and ssm clamp
    to time_step_limit only, (0, inf) here): the script prints how many dt values of the
    reference fall below time_step_min; with none, the two agree;
  - the gated norm: NemotronH's is grouped (group_size = I / n_groups), as mamba_ssm's and
    ssm's; n_groups is 2 here, so an ungrouped norm would show as a FAILED CHECK.

Needs torch, transformers, numpy. No network.
Usage: CUDA_VISIBLE_DEVICES= python3 tests/golden/make_golden_hf_hybrid.py --out OUTDIR
Then copy OUTDIR/hf_nemotron_h_a/ to tests/golden/ and add it to test_golden.c's list (as
hf_mamba2_a is).
"""

import argparse
import json
import os
import shutil
import sys

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch: the pure torch path on the CPU
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub kernels, no downloads

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import make_golden_hybrid as ref  # noqa: E402
import make_golden_mamba2 as m2  # noqa: E402

TOL = 1e-4


def rel(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return ((a - b).norm() / (b.norm() + 1e-30)).item()


# ---- the ssm name -> transformers name maps -------------------------------------------------


def nemotron_names(ours, theirs):
    """ssm name -> (transformers name, how): how is None (as is) or ("expert", j, leaf)."""
    out = {}
    for n in ours:
        for cand in (n, n.replace("backbone.", "model.", 1)):
            if cand in theirs:
                out[n] = (cand, None)
                break
            if cand + ".weight" in theirs:
                out[n] = (cand + ".weight", None)
                break
        else:
            if ".experts." in n:  # one module per expert: experts.{j}.up_proj.weight
                out[n] = ("per-expert", n)
            else:
                raise KeyError("no transformers tensor for " + n)
    return out


def jamba_name(n):
    """ssm name (jamba_a's layout) -> transformers' JambaForCausalLM name(s)."""
    if n == "backbone.embeddings.weight":
        return "model.embed_tokens.weight"
    if n == "backbone.norm_f.weight":
        return "model.final_layernorm.weight"
    parts = n.split(".")
    b, rest = parts[2], ".".join(parts[3:])
    pre = "model.layers.%s." % b
    if rest == "norm.weight":
        return pre + "input_layernorm.weight"
    if rest == "norm2.weight":
        return pre + "pre_ff_layernorm.weight"
    if rest.startswith("mixer.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj", "o_proj"):
        return pre + "self_attn." + rest[len("mixer."):]
    if rest.startswith("mixer."):
        return pre + "mamba." + rest[len("mixer."):]
    leaf = rest[len("mlp."):]
    return pre + "feed_forward." + {"gate.weight": "router.weight"}.get(leaf, leaf)


def load_into(model, params, spec, kind):
    """float32 params (ssm names) -> the model's tensors; returns ssm name -> a function
    giving transformers' gradient of that tensor in ssm's layout."""
    sd = dict(model.named_parameters())
    sd.update({k: v for k, v in model.named_buffers()})
    grads, used = {}, set()

    def put(name, value):
        t = sd[name]
        assert tuple(t.shape) == tuple(value.shape), (name, tuple(t.shape), tuple(value.shape))
        with torch.no_grad():
            t.copy_(value)
        used.add(name)
        return t

    def grad_of(t):
        return lambda: t.grad if t.grad is not None else torch.zeros_like(t)

    X = spec["moe"]["n_experts"]
    for n, v in params.items():
        if kind == "nemotron":
            name = n.replace("backbone.", "model.", 1) if n not in sd else n
            if name not in sd and name + ".weight" in sd:
                name += ".weight"
            if name in sd:
                grads[n] = grad_of(put(name, v))
                continue
            leaf = n.split(".")[-1]  # experts.up_proj -> experts.{j}.up_proj.weight
            base = name.rsplit(".", 1)[0]
            ts = [put("%s.%d.%s.weight" % (base, j, leaf), v[j]) for j in range(X)]
            grads[n] = (lambda ts=ts: torch.stack([grad_of(t)() for t in ts]))
            continue
        name = jamba_name(n)
        Fd = spec["mlp"]["d_ff"]
        if name.endswith("feed_forward.fc1.weight"):  # [up | gate] -> up_proj, gate_proj
            pre = name[:-len("fc1.weight")]
            up, gate = put(pre + "up_proj.weight", v[:Fd]), put(pre + "gate_proj.weight", v[Fd:])
            grads[n] = (lambda up=up, gate=gate: torch.cat([grad_of(up)(), grad_of(gate)()]))
        elif name.endswith("feed_forward.fc2.weight"):
            grads[n] = grad_of(put(name[:-len("fc2.weight")] + "down_proj.weight", v))
        elif name.endswith("experts.up_proj"):
            pre = name[:-len("up_proj")]
            if pre + "gate_up_proj" in sd:  # transformers 5: fused, [gate | up]
                t = put(pre + "gate_up_proj", torch.cat([v[:, Fd:], v[:, :Fd]], dim=1))
                grads[n] = (lambda t=t: torch.cat([grad_of(t)()[:, Fd:], grad_of(t)()[:, :Fd]], dim=1))
            else:
                ts = [(put("%s%d.up_proj.weight" % (pre, j), v[j, :Fd]),
                       put("%s%d.gate_proj.weight" % (pre, j), v[j, Fd:])) for j in range(X)]
                grads[n] = (lambda ts=ts: torch.stack([torch.cat([grad_of(u)(), grad_of(g)()]) for u, g in ts]))
        elif name.endswith("experts.down_proj"):
            pre = name[:-len("down_proj")]
            if pre + "down_proj" in sd:
                grads[n] = grad_of(put(pre + "down_proj", v))
            else:
                ts = [put("%s%d.down_proj.weight" % (pre, j), v[j]) for j in range(X)]
                grads[n] = (lambda ts=ts: torch.stack([grad_of(t)() for t in ts]))
        else:
            grads[n] = grad_of(put(name, v))
    left = [k for k in sd if k not in used and k != "lm_head.weight" and "layernorm" not in k.split(".")[-2]
            and not k.endswith("inv_freq")]
    assert not left, "transformers tensors not set: %s" % left
    return grads


def inner_norms(params, spec, model, g):
    """Jamba's dt/b/c RMSNorm weights, random, into the model and into params (for the
    float64 reference)"""
    extra, tensors = {}, {}
    for k, t in model.named_parameters():
        if k.split(".")[-2] in ("dt_layernorm", "b_layernorm", "c_layernorm"):
            v = torch.rand(t.shape, generator=g, dtype=torch.float32) * 0.8 + 0.6
            with torch.no_grad():
                t.copy_(v)
            b = k.split(".")[2]
            n = "backbone.layers.%s.mixer.%s.weight" % (b, k.split(".")[-2])
            extra[n], tensors[n] = v, t
    return extra, tensors


def eager_experts(model):
    # the reference loop over experts: the grouped_mm backend needs 16-byte strides, which the
    # tiny fixture's widths do not have
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")
    return model


def build(spec, kind):
    import transformers
    D = spec["hidden_size"]
    if kind == "nemotron":
        cfg = json.loads(ref.nemotron_config_json(spec))
        cfg.pop("architectures")
        cfg.pop("model_type")
        config = transformers.NemotronHConfig(**cfg)
        return eager_experts(transformers.NemotronHForCausalLM(config)), config
    mb, mo, at = spec["mamba"], spec["moe"], spec["attention"]
    config = transformers.JambaConfig(
        vocab_size=spec["vocab_size"], hidden_size=D, intermediate_size=spec["mlp"]["d_ff"],
        num_hidden_layers=4, num_attention_heads=at["n_heads"], num_key_value_heads=at["n_kv_heads"],
        hidden_act="silu", rms_norm_eps=ref.EPS, tie_word_embeddings=True,
        output_router_logits=True, router_aux_loss_coef=mo["aux_coef"],
        num_experts_per_tok=mo["top_k"], num_experts=mo["n_experts"],
        expert_layer_period=3, expert_layer_offset=0, attn_layer_period=4, attn_layer_offset=1,
        use_mamba_kernels=False, mamba_d_state=mb["state_size"], mamba_d_conv=mb["conv_kernel"],
        mamba_expand=mb["expand"], mamba_dt_rank=mb["dt_rank"], mamba_conv_bias=True,
        mamba_proj_bias=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return eager_experts(transformers.JambaForCausalLM(config)), config


def make_fixture(spec, kind, out_root):
    import transformers
    torch.manual_seed(0)
    model, config = build(spec, kind)
    model = model.float().train()
    params = ref.init_params(spec)
    grads = load_into(model, params, spec, kind)
    # tie_word_embeddings: the head is the embedding, as from_pretrained ties it (the tensors
    # were set one by one here, and transformers 5's NemotronH leaves lm_head its own otherwise)
    manual_tie = False
    if config.tie_word_embeddings:
        model.tie_weights()
        if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
            model.get_output_embeddings().weight = model.get_input_embeddings().weight
            manual_tie = True  # the class declares no tied weights: saved as an equal copy
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    ids = torch.randint(0, spec["vocab_size"], (spec["B"], spec["L"]), generator=g)
    if kind == "jamba":
        extra, tensors = inner_norms(params, spec, model, torch.Generator().manual_seed(5))
        params.update(extra)
        for n, t in tensors.items():  # transformers' gradients of the inner norms too
            grads[n] = (lambda t=t: t.grad if t.grad is not None else torch.zeros_like(t))
        spec = dict(spec, mamba=dict(spec["mamba"], inner_eps=ref.EPS))
    hidden = {}
    norm_f = model.backbone.norm_f if hasattr(model, "backbone") else model.model.norm_f \
        if hasattr(model.model, "norm_f") else model.model.final_layernorm
    norm_f.register_forward_hook(lambda mod, i, o: hidden.__setitem__("f", o.detach()))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()

    # the float64 reference
    p64 = {k: v.double().requires_grad_(True) for k, v in params.items()}
    trace = []
    loss64, logits64, hidden64, aux64 = ref.loss_of(p64, spec, ids, trace)
    loss64.backward()
    bad = 0
    for label, a, b in (("logits", out.logits, logits64), ("hidden_f", hidden["f"], hidden64),
                        ("loss", out.loss.reshape(1), loss64.reshape(1))):
        e = rel(a.detach(), b.detach())
        print("  %-44s rel err %.2e%s" % (label, e, "" if e < TOL else "  FAILED CHECK"))
        bad += e >= TOL
    for n in p64:
        if n not in grads:
            continue
        gh = grads[n]()
        gr = p64[n].grad if p64[n].grad is not None else torch.zeros_like(p64[n])
        e = rel(gh, gr) if gr.norm() > 0 else gh.norm().item()
        print("  grad %-39s rel err %.2e%s" % (n, e, "" if e < TOL else "  FAILED CHECK"))
        bad += e >= TOL
    if trace:  # dt below time_step_min: where transformers' torch path clamps and ssm does not
        below = sum(int((t < 0.001).sum()) for t in trace)
        print("  %d of %d dt values below time_step_min 0.001%s" % (
            below, sum(t.numel() for t in trace), "" if not below else
            " (transformers' torch path clamps them, mamba_ssm and ssm do not)"))

    name = "hf_" + spec["name"]
    out_dir = os.path.join(out_root, name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    if manual_tie:
        model.get_output_embeddings().weight = torch.nn.Parameter(
            model.get_input_embeddings().weight.detach().clone())
    model.save_pretrained(out_dir, safe_serialization=True)
    gen = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    exp = {"input_ids": ids.numpy().astype(np.int64), "logits": out.logits.detach().float().numpy(),
           "loss": np.array([out.loss.item()], np.float32), "hidden_f": hidden["f"].float().numpy()}
    for n in grads:
        exp["grad." + n] = grads[n]().detach().float().numpy()
    m2.save_safetensors(os.path.join(out_dir, "expected.safetensors"), exp,
                        {"torch": torch.__version__, "transformers": transformers.__version__,
                         "class": type(model).__name__, "loss": repr(out.loss.item()),
                         "reference_loss": repr(loss64.item())})
    print("%s: %s loss %.8f (reference %.8f)" % (name, type(model).__name__, out.loss.item(),
                                                 loss64.item()))
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=HERE)
    a = ap.parse_args()
    torch.set_default_dtype(torch.float32)
    bad = make_fixture(ref.NEMOTRON, "nemotron", a.out)
    bad += make_fixture(ref.JAMBA, "jamba", a.out)
    if bad:
        print("FAILED CHECK: %d comparisons above %g" % (bad, TOL))
        sys.exit(1)


if __name__ == "__main__":
    main()
