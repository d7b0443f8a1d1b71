#!/usr/bin/env python3
"""make_golden_hf_mamba2.py: Mamba-2 golden fixtures computed by transformers itself.

Builds tiny random `Mamba2ForCausalLM` models (float32, CPU torch, the pure torch path
`Mamba2Mixer.torch_forward`: CUDA is hidden before torch is imported, and the script checks
that no fused kernel ran) with the configs of make_golden_mamba2.py's mamba2_a (n_groups 1)
and mamba2_b (n_groups 2, time_step_limit [0.05, 2.0]), perturbs the parameters with that
script's perturb() (every parameter moved off its special initial value, dt pushed into the
range where the SSM term matters and, in mamba2_b, past both ends of time_step_limit), and
writes, per fixture, OUT/hf_mamba2_a/ and OUT/hf_mamba2_b/:

  model.safetensors, config.json   exactly what save_pretrained wrote (generation_config.json
                                   removed); no lm_head.weight (tied to the embedding)
  expected.safetensors             input_ids (B, L) I64; logits (B, L, V), loss (1) =
                                   model(input_ids, labels=input_ids).loss, hidden_f (B, L, D)
                                   (the output of backbone.norm_f, through a forward hook),
                                   grad.<name> for every parameter after loss.backward(), and,
                                   where transformers' cache exposes them, state.{i}.conv
                                   (B, conv_dim, K) and state.{i}.ssm (B, H, P, N) after the
                                   sequence (a second forward with use_cache=True); all F32
                                   but input_ids; __metadata__ with the versions and the
                                   check figures. The layout of tests/golden/mamba2_a/.

Then it loads the same float32 parameters into make_golden_mamba2.py's float64 torch
reference (imported from this folder) and prints the relative error of the logits, hidden_f,
loss, the final states and every gradient between transformers and that reference, twice:
with the reference's grouped gated norm (mamba_ssm's RMSNormGated, group_size = I / G) and
with its "ungrouped norm" variant (the mean over all I channels, as transformers'
MambaRMSNormGated takes it). For n_groups 1 the two are the same function and both must
agree with transformers to float32 rounding; for n_groups 2 only the ungrouped one does.

It also prints config.json's time_step_limit line exactly as transformers wrote it, and the
keys in which transformers' config.json differs from make_golden_mamba2.py's config_json().

Needs torch, transformers, numpy; safetensors when present (else the small writer of
make_golden_mamba2.py). No network.
Usage: CUDA_VISIBLE_DEVICES= python3 tests/golden/make_golden_hf_mamba2.py --out OUTDIR
"""

import argparse
import json
import math
import os
import sys

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch: the pure torch path on the CPU
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub kernels, no downloads

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import make_golden_mamba2 as ref  # noqa: E402

FIXTURES = {"hf_mamba2_a": "mamba2_a", "hf_mamba2_b": "mamba2_b"}

# transformers (float32) against the float64 reference from the same float32 parameters
TOL_FP32 = 1e-4


def rel(a, b):
    a = torch.as_tensor(a).detach().double().reshape(-1)
    b = torch.as_tensor(b).detach().double().reshape(-1)
    nb = torch.linalg.norm(b)
    return float(torch.linalg.norm(a - b) / nb) if nb > 0 else float(torch.linalg.norm(a - b))


def hf_config(c):
    from transformers import Mamba2Config
    kw = dict(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
        num_hidden_layers=c["num_hidden_layers"], expand=c["expand"],
        head_dim=c["head_dim"], num_heads=c["num_heads"], state_size=c["state_size"],
        n_groups=c["n_groups"], conv_kernel=c["conv_kernel"], chunk_size=c["chunk_size"],
        time_step_limit=(float(c["time_step_limit"][0]), float(c["time_step_limit"][1])),
        time_step_min=c["time_step_min"], time_step_max=c["time_step_max"],
        time_step_floor=c["time_step_floor"], time_step_rank=int(math.ceil(c["hidden_size"] / 16)),
        layer_norm_epsilon=c["layer_norm_epsilon"], use_bias=False, use_conv_bias=True,
        hidden_act="silu", residual_in_fp32=True, rms_norm=True,
        rescale_prenorm_residual=False, tie_word_embeddings=True, use_cache=True,
        pad_token_id=1, bos_token_id=0, eos_token_id=2)
    try:
        config = Mamba2Config(**kw)
    except TypeError as e:  # a Mamba2Config that takes fewer keys: keep those it names
        import inspect
        known = set(inspect.signature(Mamba2Config.__init__).parameters)
        print("Mamba2Config(**kw) failed (%s); dropping %s" % (e, sorted(set(kw) - known)))
        config = Mamba2Config(**{k: v for k, v in kw.items() if k in known})
    for k in ("num_heads", "head_dim", "n_groups", "state_size", "chunk_size", "conv_kernel"):
        assert getattr(config, k) == kw[k], (k, getattr(config, k), kw[k])
    assert int(config.expand * config.hidden_size) == c["intermediate_size"]
    return config


class PathProbes:
    """Counts Mamba2Mixer.torch_forward / cuda_kernels_forward calls: the forward must take
    the pure torch path once per layer, the fused kernels never."""

    def __init__(self, mm):
        self.mm = mm
        self.calls = {}
        self.saved = []
        for attr in ("torch_forward", "cuda_kernels_forward"):
            if hasattr(mm.Mamba2Mixer, attr):
                self._wrap(mm.Mamba2Mixer, attr)

    def _wrap(self, owner, attr):
        orig = getattr(owner, attr)
        self.saved.append((owner, attr, orig))
        self.calls[attr] = 0

        def wrapper(*a, **k):
            self.calls[attr] += 1
            return orig(*a, **k)

        setattr(owner, attr, wrapper)

    def restore(self):
        for owner, attr, orig in reversed(self.saved):
            setattr(owner, attr, orig)

    def verify(self, n_layer):
        c = self.calls
        fast = getattr(self.mm, "is_fast_path_available", None)
        assert c.get("torch_forward", 0) == n_layer and c.get("cuda_kernels_forward", 0) == 0, c
        return ("Mamba2Mixer.torch_forward x%d, cuda_kernels_forward x%d (is_fast_path_available=%r), "
                "CPU float32" % (c.get("torch_forward", 0), c.get("cuda_kernels_forward", 0), fast))


def write_safetensors(path, tensors, meta):
    """tensors: name -> torch tensor (float32 or int64)."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        ref.save_safetensors(path, {n: t.detach().cpu().numpy() for n, t in tensors.items()}, meta)
        return "make_golden_mamba2.save_safetensors"
    save_file({n: t.detach().cpu().contiguous() for n, t in tensors.items()}, path, metadata=meta)
    return "safetensors.torch.save_file"


def hf_states(model, ids, c):
    """Final (conv, ssm) states per layer from transformers' cache, or None when this
    transformers' cache does not expose them as expected."""
    try:
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=True)
        cp = out.cache_params
        states = []
        Bsz = ids.shape[0]
        want = ((Bsz, c["conv_dim"], c["conv_kernel"]),
                (Bsz, c["num_heads"], c["head_dim"], c["state_size"]))
        for i in range(c["num_hidden_layers"]):
            if hasattr(cp, "layers"):
                conv, ssm = cp.layers[i].conv_states, cp.layers[i].recurrent_states
            elif hasattr(cp, "conv_states"):
                conv, ssm = cp.conv_states[i], cp.ssm_states[i]
            else:
                raise AttributeError("cache %s" % type(cp).__name__)
            got = (tuple(conv.shape), tuple(ssm.shape))
            if got != want:
                raise ValueError("layer %d: state shapes %r, expected %r" % (i, got, want))
            states.append((conv.detach().float().clone(), ssm.detach().float().clone()))
        with torch.no_grad():
            e = rel(out.logits, model(input_ids=ids, use_cache=False).logits)
        return states, e
    except Exception as e:  # noqa: BLE001 (report and go on: the states are an extra)
        print("states from transformers' cache not available: %s: %s" % (type(e).__name__, e))
        return None, None


def compare(label, p64, c, ids, hf, names):
    """The float64 reference (c: its config, with or without the 'ungrouped norm' variant)
    against transformers' tensors hf; -> dict of relative errors."""
    logits, hidden_f, states = ref.model_forward(p64, c, ids, impl="ssd")
    loss = ref.lm_loss(logits, ids)
    grads = dict(zip(names, torch.autograd.grad(loss, [p64[n] for n in names])))
    e = {"logits": rel(hf["logits"], logits), "hidden_f": rel(hf["hidden_f"], hidden_f),
         "loss": abs(float(hf["loss"]) - float(loss)) / abs(float(loss))}
    eg = {n: rel(hf["grad." + n], grads[n]) for n in names}
    e["grad_worst"] = max(eg.values())
    e["grad_worst_name"] = max(eg, key=eg.get)
    if "state.0.conv" in hf:
        e["states"] = max(max(rel(hf["state.%d.conv" % i], s[0]), rel(hf["state.%d.ssm" % i], s[1]))
                          for i, s in enumerate(states))
    print("-- transformers fp32 vs reference float64, %s:" % label)
    print("   logits %.2e, hidden_f %.2e, loss %.2e (reference loss %.8f)%s"
          % (e["logits"], e["hidden_f"], e["loss"], float(loss),
             ", final states %.2e" % e["states"] if "states" in e else ""))
    for n in names:
        print("   grad %-44s %.2e" % (n, eg[n]))
    print("   worst gradient %.2e (%s)" % (e["grad_worst"], e["grad_worst_name"]))
    return e, eg


def make_fixture(name, src, out_root, versions):
    from transformers import Mamba2ForCausalLM
    from transformers.models.mamba2 import modeling_mamba2

    spec = ref.CONFIGS[src]
    c = ref.full_config(spec)
    nl, V, D = c["num_hidden_layers"], c["vocab_size"], c["hidden_size"]
    Bsz, L, seed = spec["batch"], spec["seqlen"], spec["seed"]
    print("== %s (the config of %s: V=%d D=%d layers=%d I=%d H=%d P=%d G=%d N=%d K=%d chunk=%d "
          "time_step_limit=%r; B=%d L=%d)" % (name, src, V, D, nl, c["intermediate_size"],
                                             c["num_heads"], c["head_dim"], c["n_groups"],
                                             c["state_size"], c["conv_kernel"], c["chunk_size"],
                                             c["time_step_limit"], Bsz, L))
    config = hf_config(c)
    torch.manual_seed(seed)
    model = Mamba2ForCausalLM(config).to(device="cpu", dtype=torch.float32)
    model.train()  # no dropout in Mamba-2; training mode as in a training step
    if model.lm_head.weight.data_ptr() != model.backbone.embeddings.weight.data_ptr():
        model.tie_weights()
    assert model.lm_head.weight.data_ptr() == model.backbone.embeddings.weight.data_ptr(), \
        "the LM head is not tied to the embedding"

    named = dict(model.named_parameters())  # tied: lm_head.weight is not listed
    names = ["backbone.embeddings.weight"] + sum((ref.layer_names(i) for i in range(nl)), []) + \
        ["backbone.norm_f.weight"]
    assert sorted(named) == sorted(names), (sorted(named), sorted(names))
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in named.values())
    shapes = {n: tuple(t.shape) for n, t in ref.init_params(c, 0).items()}
    for n in names:
        assert tuple(named[n].shape) == shapes[n], (n, tuple(named[n].shape), shapes[n])

    # perturb transformers' random initialisation as make_golden_mamba2.py perturbs its own
    init = {n: named[n].detach().clone() for n in names}
    print("transformers' initialisation, std per parameter kind (layer 0): " + ", ".join(
        "%s %.3g" % (ref.param_kind(n), float(init[n].std()) if init[n].numel() > 1 else 0.0)
        for n in names if ".layers.1." not in n and ".layers.2." not in n))
    pert = ref.perturb(init, c, seed + 1, spec["dt_shift"], spec["dt_scale"])
    with torch.no_grad():
        for n in names:
            named[n].copy_(pert[n])
    g = torch.Generator().manual_seed(seed + 2)
    ids = torch.randint(0, V, (Bsz, L), generator=g, dtype=torch.int64)

    captured = {}
    hook = model.backbone.norm_f.register_forward_hook(
        lambda mod, inp, out: captured.__setitem__("hidden_f", out))
    probes = PathProbes(modeling_mamba2)
    try:
        out = model(input_ids=ids, labels=ids, use_cache=False, output_hidden_states=True)
    finally:
        probes.restore()
        hook.remove()
    path = probes.verify(nl)
    print("path: " + path)
    logits, loss, hidden_f = out.logits, out.loss, captured["hidden_f"]
    assert logits.shape == (Bsz, L, V) and logits.dtype == torch.float32
    assert hidden_f.shape == (Bsz, L, D)
    if out.hidden_states is not None:
        print("output_hidden_states[-1] vs the norm_f hook: max |diff| %.1e"
              % float((out.hidden_states[-1] - hidden_f).abs().max()))
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    assert abs(ce.item() - loss.item()) < 1e-6 * max(1.0, abs(loss.item())), (ce.item(), loss.item())
    loss.backward()
    print("loss %.8f (log V = %.4f)" % (loss.item(), math.log(V)))

    # dt after softplus, from the reference's trace on the same parameters
    p64 = {n: named[n].detach().double().requires_grad_(True) for n in names}
    trace = []
    with torch.no_grad():
        ref.model_forward({n: t.detach() for n, t in p64.items()}, c, ids, trace=trace)
    dt_all = torch.cat([t.reshape(-1) for t in trace])
    lo, hi = c["time_step_limit"]
    f_lo, f_hi = float((dt_all < lo).double().mean()), float((dt_all > hi).double().mean())
    print("dt = softplus(dt + dt_bias): min %.3g median %.3g max %.3g; below the limit %.1f%%, "
          "above %.1f%%" % (dt_all.min(), dt_all.median(), dt_all.max(), 100 * f_lo, 100 * f_hi))

    folder = os.path.join(out_root, name)
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    model.save_pretrained(folder)
    for f in sorted(os.listdir(folder)):
        if f not in ("model.safetensors", "config.json"):
            print("removing %s written by save_pretrained" % f)
            os.remove(os.path.join(folder, f))
    saved, smeta = ref.load_safetensors(os.path.join(folder, "model.safetensors"))
    extra = sorted(set(saved) - set(names))
    if extra == ["lm_head.weight"]:
        print("NOTE: save_pretrained wrote lm_head.weight although the head is tied")
        assert np.array_equal(saved["lm_head.weight"], saved["backbone.embeddings.weight"])
    else:
        assert sorted(saved) == sorted(names), sorted(saved)
    for n in names:
        assert saved[n].dtype == np.float32 and np.array_equal(saved[n], named[n].detach().numpy()), n
    print("model.safetensors: %d tensors, __metadata__ %r" % (len(saved), smeta))

    with open(os.path.join(folder, "config.json")) as f:
        cj_text = f.read()
    i0 = cj_text.find('"time_step_limit"')
    tsl = cj_text[i0:cj_text.find("]", i0) + 1]
    print("config.json time_step_limit, as written (newlines as \\n): %s" % tsl.replace("\n", "\\n"))
    print("  compact: %s" % " ".join(tsl.split()))
    cj = json.loads(cj_text)
    mine = json.loads(ref.config_json(c))
    diff = {k: (cj.get(k, "<absent>"), mine.get(k, "<absent>")) for k in sorted(set(cj) | set(mine))
            if cj.get(k, "<absent>") != mine.get(k, "<absent>")}
    print("config.json keys where transformers differs from make_golden_mamba2.config_json "
          "(transformers, make_golden_mamba2):")
    for k, v in diff.items():
        print("   %-26s %r | %r" % (k, v[0], v[1]))

    tensors = {"input_ids": ids.contiguous(), "logits": logits.detach().float().contiguous(),
               "loss": loss.detach().float().reshape(1).contiguous(),
               "hidden_f": hidden_f.detach().float().contiguous()}
    for n in names:
        assert named[n].grad is not None and named[n].grad.abs().max() > 0, "no gradient for " + n
        tensors["grad." + n] = named[n].grad.detach().float().contiguous()
    states, e_cache = hf_states(model, ids, c)
    if states is not None:
        print("forward with use_cache=True vs without: logits rel %.1e" % e_cache)
        for i, (cs, S) in enumerate(states):
            tensors["state.%d.conv" % i] = cs.contiguous()
            tensors["state.%d.ssm" % i] = S.contiguous()

    # the float64 reference on the same parameters: grouped (mamba_ssm) and ungrouped norm
    hf = {k: v.detach() for k, v in tensors.items()}
    e_grp, eg_grp = compare("reference as in make_golden_mamba2 (grouped gated norm, G=%d)"
                            % c["n_groups"], p64, c, ids, hf, names)
    e_ung, eg_ung = compare("reference with an ungrouped gated norm (mean over all I channels)",
                            p64, dict(c, variant="ungrouped norm"), ids, hf, names)
    worst_ung = max(e_ung["logits"], e_ung["hidden_f"], e_ung["loss"], e_ung["grad_worst"],
                    e_ung.get("states", 0.0))
    problems = []  # reported at the end; the files are written all the same
    if not worst_ung < TOL_FP32:
        problems.append("%s: transformers disagrees with the ungrouped reference (%.2e)"
                        % (name, worst_ung))
    if c["n_groups"] == 1:
        worst_grp = max(e_grp["logits"], e_grp["grad_worst"], e_grp.get("states", 0.0))
        if not worst_grp < TOL_FP32:
            problems.append("%s: n_groups 1, transformers disagrees with the reference (%.2e)"
                            % (name, worst_grp))
    for pr in problems:
        print("FAILED CHECK: " + pr)

    meta = dict(versions)
    meta.update({
        "format": "pt",
        "fixture": name,
        "generator": "tests/golden/make_golden_hf_mamba2.py (transformers Mamba2ForCausalLM, "
                     "pure torch path, float32, CPU)",
        "config_of": src,
        "seed": str(seed),
        "loss": repr(loss.item()),
        "batch": str(Bsz),
        "seqlen": str(L),
        "config": json.dumps({k: c[k] for k in sorted(c)}),
        "path": path,
        "gated_norm": "ungrouped (transformers MambaRMSNormGated: mean over all I channels), "
                      "eps layer_norm_epsilon",
        "dt_clamped_below": "%.4f" % f_lo,
        "dt_clamped_above": "%.4f" % f_hi,
        "ref_ungrouped_logits_rel_err": "%.3e" % e_ung["logits"],
        "ref_ungrouped_grad_worst_rel_err": "%.3e" % e_ung["grad_worst"],
        "ref_grouped_logits_rel_err": "%.3e" % e_grp["logits"],
        "ref_grouped_grad_worst_rel_err": "%.3e" % e_grp["grad_worst"],
        "note": "loss = model(input_ids, labels=input_ids).loss = mean CE of logits[:, :-1] vs "
                "input_ids[:, 1:]; hidden_f = output of backbone.norm_f; state.{i}.conv = last K "
                "raw xBC inputs (B, conv_dim, K), newest last, state.{i}.ssm (B, H, P, N), from "
                "transformers' cache after a use_cache=True forward",
    })
    exp_path = os.path.join(folder, "expected.safetensors")
    writer = write_safetensors(exp_path, tensors, meta)
    back, bmeta = ref.load_safetensors(exp_path)
    assert sorted(back) == sorted(tensors) and bmeta["loss"] == repr(loss.item())
    print("expected.safetensors: %d tensors, header order starts %s" % (len(back), list(back)[:3]))

    # the saved files alone reproduce the logits
    try:
        again = Mamba2ForCausalLM.from_pretrained(folder, dtype=torch.float32)
    except TypeError:
        again = Mamba2ForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    with torch.no_grad():
        e_reload = rel(again(input_ids=ids, use_cache=False).logits, logits)
    print("reloaded with from_pretrained: logits rel %.2e; expected.safetensors by %s"
          % (e_reload, writer))
    assert e_reload < 1e-6
    total = 0
    for f in sorted(os.listdir(folder)):
        sz = os.path.getsize(os.path.join(folder, f))
        total += sz
        print("  %-22s %8d bytes" % (f, sz))
    assert total < 300_000, "fixture over 300 KB"
    return dict(loss=loss.item(), grp=e_grp, ung=e_ung, tsl=tsl, diff=diff, path=path,
                f_lo=f_lo, f_hi=f_hi, states=states is not None, problems=problems)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder that receives hf_mamba2_a/ and hf_mamba2_b/")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    import transformers
    versions = {"transformers": transformers.__version__, "torch": torch.__version__,
                "numpy": np.__version__, "python": sys.version.split()[0]}
    try:
        import safetensors
        versions["safetensors"] = safetensors.__version__
    except ImportError:
        pass
    print(", ".join("%s %s" % kv for kv in versions.items()))
    assert not torch.cuda.is_available(), "CUDA is visible: the fixtures must come from the CPU path"
    res = {name: make_fixture(name, src, args.out, versions) for name, src in FIXTURES.items()}
    print("== summary")
    for name, r in res.items():
        g, u = r["grp"], r["ung"]
        print("%s: loss %.8f; vs grouped reference: logits %.2e, worst grad %.2e (%s); "
              "vs ungrouped reference: logits %.2e, worst grad %.2e (%s)%s; dt clamped %.1f%% "
              "below, %.1f%% above; config.json: %s"
              % (name, r["loss"], g["logits"], g["grad_worst"], g["grad_worst_name"],
                 u["logits"], u["grad_worst"], u["grad_worst_name"],
                 "; states %.2e / %.2e" % (g["states"], u["states"]) if r["states"] else "",
                 100 * r["f_lo"], 100 * r["f_hi"], " ".join(r["tsl"].split())))
    problems = sum((r["problems"] for r in res.values()), [])
    for pr in problems:
        print("FAILED CHECK: " + pr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
