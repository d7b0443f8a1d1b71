#!/usr/bin/env python3
"""make_golden_hf_mamba2.py: Mamba-2 golden fixtures computed by transformers itself.

Builds tiny random `Mamba2ForCausalLM` models (float32, CPU torch, pure PyTorch: CUDA is
hidden before torch is imported; the script counts the calls of the mixer's entry points and
reports whether mamba_ssm, causal_conv1d or the hub `kernels` package could have supplied a
kernel; in transformers 5.17 the training forward runs causal_conv1d_fn, mamba2_chunk_scan
and mamba2_split_conv1d_scan_combined, the eval forward causal_conv1d_fn and
mamba2_chunk_scan, all their reference PyTorch implementations, with the same logits) with
the configs of make_golden_mamba2.py's mamba2_a (n_groups 1)
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
                                   where transformers' cache exposes them as tensors (5.17
                                   does not: its layers hold dicts), state.{i}.conv
                                   (B, conv_dim, K) and state.{i}.ssm (B, H, P, N) after the
                                   sequence (a second forward with use_cache=True); all F32
                                   but input_ids; __metadata__ with the versions and the
                                   check figures. The layout of tests/golden/mamba2_a/.

Then it loads the same float32 parameters into a float64 reference: make_golden_mamba2.py's
(imported from this folder; its mixer copied here with two switches, checked to give that
script's function when both are off) and prints the relative error of the logits, hidden_f,
loss, the final states and every gradient between transformers and each variant that can
differ for the fixture: the gated RMSNorm grouped (mamba_ssm's RMSNormGated, group_size =
I / G) or ungrouped (the mean over all I channels, as transformers' MambaRMSNormGated takes
it), and dt clamped to time_step_limit or not. For n_groups 1 the grouped and ungrouped norms
are the same function and must agree with transformers to float32 rounding; for n_groups 2
only the ungrouped one does (a FAILED CHECK line and exit 1 otherwise; the files are written
all the same).

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


KERNEL_NAMES = ("mamba_split_conv1d_scan_combined", "mamba_chunk_scan_combined",
                "selective_state_update", "causal_conv1d_fn", "causal_conv1d_update")


class PathProbes:
    """Counts the calls of what the mixer's forward may go through: the Mamba2Mixer methods
    whose name ends in 'forward' (torch_forward / cuda_kernels_forward in transformers 4.x and
    early 5.x) and the module-level kernel entry points of modeling_mamba2 (5.x: each one is
    mamba_ssm's / causal_conv1d's kernel where installed, else transformers' reference PyTorch
    implementation). Records whether those packages (and the hub `kernels`) are importable:
    when none is, whatever ran is PyTorch."""

    def __init__(self, mm):
        import importlib.util
        self.mm = mm
        self.calls = {}
        self.saved = []
        self.globals = {k: repr(getattr(mm, k, "<absent>"))[:160] for k in KERNEL_NAMES}
        for attr in sorted(vars(mm.Mamba2Mixer)):
            if attr.endswith("forward") and attr != "forward" and callable(getattr(mm.Mamba2Mixer, attr)):
                self._wrap(mm.Mamba2Mixer, attr, "Mamba2Mixer.")
        for attr in sorted(vars(mm)):
            v = getattr(mm, attr)
            if (attr in KERNEL_NAMES or any(k in attr for k in ("scan", "conv1d", "state_update"))) \
                    and callable(v) and not isinstance(v, type):
                self._wrap(mm, attr, "")
        self.packages = {}
        for pkg in ("mamba_ssm", "causal_conv1d", "kernels"):
            try:
                self.packages[pkg] = importlib.util.find_spec(pkg) is not None
            except (ImportError, ValueError):
                self.packages[pkg] = False
        self.fast = getattr(mm, "is_fast_path_available", "<absent>")

    def _wrap(self, owner, attr, prefix):
        orig = getattr(owner, attr)
        self.saved.append((owner, attr, orig))
        key = prefix + attr
        self.calls[key] = 0

        def wrapper(*a, **k):
            self.calls[key] += 1
            return orig(*a, **k)

        setattr(owner, attr, wrapper)

    def reset(self):
        for k in self.calls:
            self.calls[k] = 0

    def restore(self):
        for owner, attr, orig in reversed(self.saved):
            setattr(owner, attr, orig)

    def report(self):
        ran = ", ".join("%s x%d" % kv for kv in self.calls.items() if kv[1]) or "none of the probed entry points"
        pk = ", ".join("%s %s" % (k, "installed" if v else "absent") for k, v in self.packages.items())
        return "CPU float32; calls: %s; %s; is_fast_path_available=%r" % (ran, pk, self.fast)


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


def mixer_forward(p, h, c, norm_groups, clamp):
    """make_golden_mamba2.mixer_forward (zero initial state, the chunked SSD) with two
    switches: norm_groups, the groups of the gated RMSNorm (G: mamba_ssm's RMSNormGated with
    group_size I / G; 1: the mean over all I channels), and clamp, whether dt is clamped to
    time_step_limit. -> out (B, L, D), (conv_state, ssm_state)."""
    Bsz, L, _ = h.shape
    I, H, P = c["intermediate_size"], c["num_heads"], c["head_dim"]
    G, N, K, Cd = c["n_groups"], c["state_size"], c["conv_kernel"], c["conv_dim"]
    z, xBC_raw, dt_raw = torch.split(h @ p["in_proj.weight"].T, [I, Cd, H], dim=-1)
    hist = torch.cat([torch.zeros(Bsz, K, Cd, dtype=h.dtype), xBC_raw], dim=1)
    new_conv = hist[:, -K:].transpose(1, 2)
    xpad = hist[:, 1:]
    w = p["conv1d.weight"][:, 0, :]
    acc = p["conv1d.bias"].expand(Bsz, L, Cd)
    for k in range(K):
        acc = acc + w[:, k] * xpad[:, k:k + L]
    x, Bm, Cm = torch.split(ref.silu(acc), [I, G * N, G * N], dim=-1)
    x = x.reshape(Bsz, L, H, P)
    Bh = Bm.reshape(Bsz, L, G, N).repeat_interleave(H // G, dim=2)
    Ch = Cm.reshape(Bsz, L, G, N).repeat_interleave(H // G, dim=2)
    A = -torch.exp(p["A_log"])
    dt = ref.dt_of(dt_raw, p["dt_bias"], c["time_step_limit"] if clamp else (0.0, ref.INF))
    S0 = torch.zeros(Bsz, H, P, N, dtype=h.dtype)
    y, S = ref.scan_ssd(x, dt, A, Bh, Ch, S0, c["chunk_size"])
    y = (y + p["D"][:, None] * x).reshape(Bsz, L, I)
    out = ref.gated_rmsnorm(y, z, p["norm.weight"], norm_groups)
    return out @ p["out_proj.weight"].T, (new_conv, S)


def model_forward(params, c, ids, norm_groups, clamp):
    """make_golden_mamba2.model_forward with the switches of mixer_forward."""
    emb = params["backbone.embeddings.weight"]
    eps = c["layer_norm_epsilon"]
    r = emb[ids]
    states = []
    for i in range(c["num_hidden_layers"]):
        hn = ref.rmsnorm(r, params["backbone.layers.%d.norm.weight" % i], eps)
        out, st = mixer_forward(ref.mixer_params(params, i), hn, c, norm_groups, clamp)
        r = r + out
        states.append(st)
    hidden_f = ref.rmsnorm(r, params["backbone.norm_f.weight"], eps)
    return hidden_f @ emb.T, hidden_f, states


def variants(c):
    """(label, norm_groups, clamp): mamba_ssm's equations first."""
    G = c["n_groups"]
    limited = c["time_step_limit"][0] > 0 or c["time_step_limit"][1] < ref.INF
    out = [("grouped norm, dt clamped (mamba_ssm = make_golden_mamba2)", G, True)]
    if G > 1:
        out.append(("ungrouped norm, dt clamped", 1, True))
    if limited:
        out.append(("grouped norm, dt NOT clamped", G, False))
        if G > 1:
            out.append(("ungrouped norm, dt NOT clamped", 1, False))
    return out


def compare(label, p64, c, ids, hf, names, norm_groups, clamp):
    """The float64 reference (one variant) against transformers' tensors hf."""
    logits, hidden_f, states = model_forward(p64, c, ids, norm_groups, clamp)
    if norm_groups == c["n_groups"] and clamp:  # the copy must be make_golden_mamba2's function
        with torch.no_grad():
            e_copy = rel(logits, ref.model_forward(p64, c, ids, impl="ssd")[0])
        assert e_copy < 1e-12, e_copy
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
    if "logits_eval" in hf:
        e["logits_eval"] = rel(hf["logits_eval"], logits)
    print("-- transformers fp32 (model.train()) vs reference float64, %s:" % label)
    print("   logits %.2e, hidden_f %.2e, loss %.2e (reference loss %.8f)%s%s"
          % (e["logits"], e["hidden_f"], e["loss"], float(loss),
             ", final states %.2e" % e["states"] if "states" in e else "",
             "; model.eval() logits %.2e" % e["logits_eval"] if "logits_eval" in e else ""))
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
        model.eval()
        with torch.no_grad():
            out_eval = model(input_ids=ids, use_cache=False)
        hidden_eval = captured["hidden_f"].detach().clone()
        path_eval = probes.report()
        probes.reset()
        model.train()  # the fixture: a training step's forward and backward
        out = model(input_ids=ids, labels=ids, use_cache=False, output_hidden_states=True)
        path = probes.report()
    finally:
        probes.restore()
        hook.remove()
    print("kernel globals of modeling_mamba2: %r" % probes.globals)
    print("path (model.train(), the fixture): " + path)
    print("path (model.eval(), no grad):      " + path_eval)
    if not any(probes.packages.values()):
        print("no mamba_ssm, causal_conv1d or kernels package: every entry point ran PyTorch")
    logits, loss, hidden_f = out.logits, out.loss, captured["hidden_f"]
    assert logits.shape == (Bsz, L, V) and logits.dtype == torch.float32
    assert hidden_f.shape == (Bsz, L, D)
    if out.hidden_states is not None:
        print("output_hidden_states[-1] vs the norm_f hook: max |diff| %.1e"
              % float((out.hidden_states[-1] - hidden_f).detach().abs().max()))
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
    no_grad = []
    for n in names:
        g_n = named[n].grad
        if g_n is None or not g_n.abs().max() > 0:
            no_grad.append(n)
            g_n = torch.zeros_like(named[n]) if g_n is None else g_n
        tensors["grad." + n] = g_n.detach().float().contiguous()
    if no_grad:
        print("NOTE: no (or an all-zero) gradient from transformers for %s" % no_grad)
    e_train_eval = rel(out_eval.logits, logits)
    print("transformers model.eval() vs model.train() forward: logits rel %.2e, hidden_f rel %.2e"
          % (e_train_eval, rel(hidden_eval, hidden_f)))
    if e_train_eval > 1e-5:
        print("the two paths differ: expected.safetensors also holds logits_eval, hidden_f_eval")
        tensors["logits_eval"] = out_eval.logits.detach().float().contiguous()
        tensors["hidden_f_eval"] = hidden_eval.float().contiguous()
    states, e_cache = hf_states(model, ids, c)
    if states is not None:
        print("forward with use_cache=True vs without: logits rel %.1e" % e_cache)
        for i, (cs, S) in enumerate(states):
            tensors["state.%d.conv" % i] = cs.contiguous()
            tensors["state.%d.ssm" % i] = S.contiguous()

    # the float64 reference on the same parameters, in each variant that can differ here
    hf = {k: v.detach() for k, v in tensors.items()}
    grid = {}
    for label, ng, clamp in variants(c):
        grid[label] = compare(label, p64, c, ids, hf, names, ng, clamp)[0]

    def worst(e):
        return max(e["logits"], e["hidden_f"], e["loss"], e["grad_worst"], e.get("states", 0.0))

    best = min(grid, key=lambda k: worst(grid[k]))
    print("best match for transformers' training path: %s (worst rel err %.2e)"
          % (best, worst(grid[best])))
    e_grp = grid[variants(c)[0][0]]
    e_ung = grid.get("ungrouped norm, dt clamped", e_grp)
    problems = ["%s: no gradient for %s" % (name, n) for n in no_grad]  # reported at the end
    if not worst(e_ung) < TOL_FP32:
        problems.append("%s: transformers (training path) disagrees with the ungrouped, clamped "
                        "reference (%.2e); best match: %s (%.2e)"
                        % (name, worst(e_ung), best, worst(grid[best])))
    if c["n_groups"] == 1 and not worst(e_grp) < TOL_FP32:
        problems.append("%s: n_groups 1, transformers disagrees with the reference (%.2e)"
                        % (name, worst(e_grp)))
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
        "path_eval": path_eval,
        "eval_vs_train_logits_rel_err": "%.3e" % e_train_eval,
        "best_reference_variant": best,
        "reference_variants": json.dumps({k: {kk: (vv if isinstance(vv, str) else "%.3e" % vv)
                                              for kk, vv in v.items()} for k, v in grid.items()}),
        "dt_clamped_below": "%.4f" % f_lo,
        "dt_clamped_above": "%.4f" % f_hi,
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
                f_lo=f_lo, f_hi=f_hi, states=states is not None, problems=problems, grid=grid,
                best=best, e_train_eval=e_train_eval)


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
        for k, e in r["grid"].items():
            print("   vs %-58s logits %.2e hidden_f %.2e loss %.2e worst grad %.2e%s%s"
                  % (k, e["logits"], e["hidden_f"], e["loss"], e["grad_worst"],
                     " states %.2e" % e["states"] if "states" in e else "",
                     " eval-logits %.2e" % e["logits_eval"] if "logits_eval" in e else ""))
        print("   best: %s; model.eval() vs model.train() logits %.2e" % (r["best"], r["e_train_eval"]))
    problems = sum((r["problems"] for r in res.values()), [])
    for pr in problems:
        print("FAILED CHECK: " + pr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
