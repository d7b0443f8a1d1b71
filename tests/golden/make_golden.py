#!/usr/bin/env python3
"""make_golden.py: golden parity fixtures from the reference implementation.

For each configuration below this script builds a small random Hugging Face
`MambaForCausalLM` (fp32, CPU, the pure-PyTorch "slow" path: no mamba_ssm or
causal_conv1d kernels, no mamba.py pscan), perturbs its parameters so that every
parameter kind matters, and writes into OUT/<name>/:

  model.safetensors     what save_pretrained(safe_serialization=True) writes
  config.json           idem (generation_config.json is removed)
  expected.safetensors  input_ids (B, L) I64, logits (B, L, V) F32, loss (1) F32,
                        hidden_f (B, L, D) F32 (the output of norm_f) and
                        grad.<parameter name> F32 for every parameter, after
                        model(input_ids, labels=input_ids).loss.backward();
                        __metadata__ holds the versions, the seed and the loss.

The loss is transformers' own: labels are shifted inside the model, so it is the
mean cross-entropy of logits[:, :-1] against input_ids[:, 1:].

A float64 numpy re-implementation of the forward pass (np_model_forward below)
is checked against torch's logits, and its central differences against torch's
gradients, so this file also documents the exact equations that the C code
follows (docs/architecture.md, 'The model').

Needs torch, transformers, safetensors and numpy; no network.
Usage: python3 tests/golden/make_golden.py --out tests/golden
"""

import argparse
import json
import math
import os
import sys

# Everything runs on the CPU, offline: no GPU kernels can be picked up.
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

CONFIGS = {
    # The reference shapes of a small model: dt_rank "auto" = ceil(64 / 16) = 4.
    "mamba_a": dict(
        model=dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, state_size=16,
                   expand=2, conv_kernel=4, time_step_rank="auto"),
        seed=1234, batch=2, seqlen=33),
    # Awkward shapes so that nothing can be hard-coded: V not a multiple of 8, odd D,
    # expand 3, K 3, N 8, dt_rank 5 (not ceil(D / 16)).
    "mamba_b": dict(
        model=dict(vocab_size=50, hidden_size=37, num_hidden_layers=3, state_size=8,
                   expand=3, conv_kernel=3, time_step_rank=5),
        seed=4321, batch=3, seqlen=17),
}
COMMON = dict(layer_norm_epsilon=1e-5, use_bias=False, use_conv_bias=True,
              tie_word_embeddings=True, use_mambapy=False, use_associative_scan=False,
              hidden_act="silu", residual_in_fp32=True)

# ---------------------------------------------------------------------------------------
# The numpy (float64) reference: the equations the C backend implements.
# Parameter names are those of the checkpoint with the "backbone." prefix removed.
# ---------------------------------------------------------------------------------------


def np_silu(x):
    # silu(x) = x * sigmoid(x)
    return x / (1.0 + np.exp(-x))


def np_softplus(x):
    # softplus(x) = log(1 + exp(x)), and x itself above the threshold 20 (as torch does)
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def np_rmsnorm(x, weight, eps):
    # y = x / sqrt(mean(x^2) + eps) * weight, over the last axis
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def np_mixer(p, u, n_state, dt_rank):
    """One Mamba-1 mixer. p: the layer's mixer.* tensors; u (B, L, D) -> (B, L, D)."""
    batch, seqlen, _ = u.shape
    in_proj = p["in_proj.weight"]                    # (2E, D) rows [x | z]
    E = in_proj.shape[0] // 2
    N, R = n_state, dt_rank
    conv_w = p["conv1d.weight"][:, 0, :]             # (E, 1, K) -> (E, K)
    K = conv_w.shape[1]

    xz = u @ in_proj.T                               # (B, L, 2E)
    x, z = xz[..., :E], xz[..., E:]

    # Depthwise causal conv with bias, zero left padding, then SiLU:
    # xc[t] = silu(bias + sum_w conv_w[:, w] * x[t - (K - 1) + w])
    xpad = np.concatenate([np.zeros((batch, K - 1, E)), x], axis=1)
    xc = np.broadcast_to(p["conv1d.bias"], x.shape).copy()
    for w in range(K):
        xc += conv_w[:, w] * xpad[:, w:w + seqlen, :]
    xc = np_silu(xc)

    # x_proj (no bias) splits into [dt | B | C]
    dbc = xc @ p["x_proj.weight"].T                  # (B, L, R + 2N)
    dt, Bm, Cm = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:]
    # delta = softplus(dt_proj.weight @ dt + dt_proj.bias)
    delta = np_softplus(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])  # (B, L, E)
    A = -np.exp(p["A_log"])                          # (E, N)

    h = np.zeros((batch, E, N))
    y = np.empty((batch, seqlen, E))
    for t in range(seqlen):
        dA = np.exp(delta[:, t, :, None] * A)                           # dA = exp(delta * A)
        dBu = delta[:, t, :, None] * Bm[:, t, None, :] * xc[:, t, :, None]  # delta * B * u
        h = dA * h + dBu                                                # h_t = dA h_{t-1} + dBu
        y[:, t] = np.sum(h * Cm[:, t, None, :], axis=-1) + p["D"] * xc[:, t]  # C.h + D u
    y = y * np_silu(z)                                                  # gate
    return y @ p["out_proj.weight"].T                                   # out_proj, no bias


def np_model_forward(params, cfg, ids):
    """params: name -> float64 array (checkpoint names); ids (B, L) -> logits, hidden_f, loss."""
    emb = params["backbone.embeddings.weight"]       # (V, D), tied LM head
    eps = cfg["layer_norm_epsilon"]
    hidden = emb[ids]                                # (B, L, D)
    for i in range(cfg["num_hidden_layers"]):
        pre = "backbone.layers.%d." % i
        mix = {k[len(pre) + len("mixer."):]: v for k, v in params.items()
               if k.startswith(pre + "mixer.")}
        u = np_rmsnorm(hidden, params[pre + "norm.weight"], eps)   # pre-norm
        hidden = hidden + np_mixer(mix, u, cfg["state_size"], cfg["time_step_rank"])
    hidden_f = np_rmsnorm(hidden, params["backbone.norm_f.weight"], eps)
    logits = hidden_f @ emb.T                        # (B, L, V)
    # loss: mean cross-entropy of position t predicting token t + 1
    lg = logits[:, :-1, :].reshape(-1, logits.shape[-1])
    tgt = ids[:, 1:].reshape(-1)
    m = lg.max(axis=-1)
    lse = m + np.log(np.sum(np.exp(lg - m[:, None]), axis=-1))
    loss = float(np.mean(lse - lg[np.arange(len(tgt)), tgt]))
    return logits, hidden_f, loss


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def param_kind(name):
    """backbone.layers.3.mixer.A_log -> mixer.A_log (layer index dropped)."""
    parts = name.split(".")
    if parts[1] == "layers":
        return ".".join(parts[3:])
    return ".".join(parts[1:])


def np_check_gradients(params, cfg, ids, grads, seed, eps=1e-5):
    """For each parameter kind, the directional derivative of the numpy loss along a random
    direction (central differences, float64) against torch's gradient dotted with it."""
    rng = np.random.default_rng(seed)
    kinds = sorted({param_kind(n) for n in params})
    worst = 0.0
    for kind in kinds:
        names = [n for n in params if param_kind(n) == kind]
        dirs = {n: rng.standard_normal(params[n].shape) for n in names}
        plus = dict(params)
        minus = dict(params)
        for n in names:
            plus[n] = params[n] + eps * dirs[n]
            minus[n] = params[n] - eps * dirs[n]
        fd = (np_model_forward(plus, cfg, ids)[2] - np_model_forward(minus, cfg, ids)[2]) / (2 * eps)
        an = sum(float(np.sum(grads[n] * dirs[n])) for n in names)
        err = abs(fd - an) / max(abs(fd), 1e-12)
        worst = max(worst, err)
        print("  numpy d/d %-22s finite diff %+.8e  torch %+.8e  rel %.2e" % (kind, fd, an, err))
    return worst


# ---------------------------------------------------------------------------------------
# The reference run (torch + transformers)
# ---------------------------------------------------------------------------------------


def perturb(model, seed):
    """Move the parameters that the initialisation leaves special (A_log = log(1..N),
    D = 1, norms = 1, conv bias = 0) off their initial values, so that a wrong
    equation for any of them changes the logits."""
    import torch
    g = torch.Generator().manual_seed(seed)
    scale = {"mixer.A_log": 0.3, "mixer.D": 0.3, "norm.weight": 0.2, "norm_f.weight": 0.2,
             "mixer.conv1d.bias": 0.2, "mixer.dt_proj.bias": 0.5}
    with torch.no_grad():
        for name, p in model.named_parameters():
            s = scale.get(param_kind(name))
            if s is not None:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * s)


class PathProbes:
    """Wraps the mixer's entry points in modeling_mamba to see which path the forward took.

    transformers 5.x: MambaMixer.forward calls module-level functions that a hub kernel may
    replace; their pure-torch fallbacks are the reference. mamba_inner_fn's fallback returns
    None (the fused kernel did not run), then causal_conv1d_fn and mamba_selective_scan run
    once per layer, the scan with use_mambapy and use_associative_scan off (sequential loop).
    Older 4.x: MambaMixer.slow_forward must run once per layer, cuda_kernels_forward never."""

    def __init__(self, mm):
        self.mm = mm
        self.calls = {}
        self.notes = []
        self.saved = []
        if hasattr(mm, "mamba_selective_scan"):
            self.layout = "5.x"
            self._wrap(mm, "mamba_inner_fn", self._check_inner)
            self._wrap(mm, "causal_conv1d_fn", None)
            self._wrap(mm, "mamba_selective_scan", self._check_scan)
            if hasattr(mm, "mamba_selective_state_update"):
                self._wrap(mm, "mamba_selective_state_update", None)
        else:
            self.layout = "4.x"
            self._wrap(mm.MambaMixer, "slow_forward", None)
            if hasattr(mm.MambaMixer, "cuda_kernels_forward"):
                self._wrap(mm.MambaMixer, "cuda_kernels_forward", None)

    def _wrap(self, owner, attr, check):
        orig = getattr(owner, attr)
        self.saved.append((owner, attr, orig))
        self.calls[attr] = 0

        def wrapper(*a, **k):
            self.calls[attr] += 1
            r = orig(*a, **k)
            if check is not None:
                check(a, k, r)
            return r

        setattr(owner, attr, wrapper)

    def _check_inner(self, a, k, r):
        if r is not None:
            self.notes.append("mamba_inner_fn returned a tensor: a fused kernel ran")

    def _check_scan(self, a, k, r):
        if k.get("use_mambapy") or k.get("use_associative_scan"):
            self.notes.append("scan asked for mambapy/associative scan: %r" % (
                {x: k.get(x) for x in ("use_mambapy", "use_associative_scan")}))
        if a[0].device.type != "cpu":
            self.notes.append("scan ran on " + a[0].device.type)

    def restore(self):
        for owner, attr, orig in reversed(self.saved):
            setattr(owner, attr, orig)

    def verify(self, n_layer):
        c = self.calls
        if self.layout == "5.x":
            ok = (c["mamba_selective_scan"] == n_layer and c["causal_conv1d_fn"] == n_layer
                  and c.get("mamba_selective_state_update", 0) == 0)
        else:
            ok = c["slow_forward"] == n_layer and c.get("cuda_kernels_forward", 0) == 0
        assert ok and not self.notes, (c, self.notes)
        return ("transformers %s layout, pure torch on CPU, sequential scan; calls %s"
                % (self.layout, ", ".join("%s x%d" % kv for kv in c.items())))


def make_fixture(name, spec, out_root, versions):
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file
    from transformers import MambaConfig, MambaForCausalLM
    from transformers.models.mamba import modeling_mamba

    print("== %s" % name)
    cfg_kwargs = dict(COMMON, **spec["model"])
    config = MambaConfig(**cfg_kwargs)
    torch.manual_seed(spec["seed"])
    model = MambaForCausalLM(config).to(device="cpu", dtype=torch.float32)
    perturb(model, spec["seed"] + 1)
    model.train()  # no dropout in Mamba; training mode as in a training step

    assert config.use_mambapy is False
    if model.lm_head.weight.data_ptr() != model.backbone.embeddings.weight.data_ptr():
        model.tie_weights()
    assert model.lm_head.weight.data_ptr() == model.backbone.embeddings.weight.data_ptr(), \
        "the LM head is not tied to the embedding"
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())

    n_layer = config.num_hidden_layers
    V, D = config.vocab_size, config.hidden_size
    B, L = spec["batch"], spec["seqlen"]
    g = torch.Generator().manual_seed(spec["seed"] + 2)
    ids = torch.randint(0, V, (B, L), generator=g, dtype=torch.int64)

    captured = {}
    hook = model.backbone.norm_f.register_forward_hook(
        lambda mod, inp, out: captured.__setitem__("hidden_f", out))
    probes = PathProbes(modeling_mamba)
    try:
        out = model(input_ids=ids, labels=ids, use_cache=False)
    finally:
        probes.restore()
        hook.remove()
    path = probes.verify(n_layer)
    print("path: " + path)

    logits, loss, hidden_f = out.logits, out.loss, captured["hidden_f"]
    assert logits.shape == (B, L, V) and logits.dtype == torch.float32
    assert hidden_f.shape == (B, L, D)
    ref_loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    assert abs(ref_loss.item() - loss.item()) < 1e-6 * max(1.0, abs(loss.item()))
    loss.backward()
    print("loss %.8f (log V = %.4f)" % (loss.item(), math.log(V)))

    # Save the model as transformers does, and keep only the two files we want.
    folder = os.path.join(out_root, name)
    os.makedirs(folder, exist_ok=True)
    for f in ("model.safetensors", "config.json", "generation_config.json", "expected.safetensors"):
        if os.path.exists(os.path.join(folder, f)):
            os.remove(os.path.join(folder, f))
    try:
        model.save_pretrained(folder, safe_serialization=True)
    except TypeError:  # a transformers that always writes safetensors and dropped the flag
        model.save_pretrained(folder)
    for f in sorted(os.listdir(folder)):
        if f not in ("model.safetensors", "config.json"):
            print("removing %s written by save_pretrained" % f)
            os.remove(os.path.join(folder, f))

    named = dict(model.named_parameters())  # tied: lm_head.weight is not listed twice
    saved = load_file(os.path.join(folder, "model.safetensors"))
    assert set(saved) == set(named), (sorted(saved), sorted(named))
    for n, t in saved.items():
        assert t.dtype == torch.float32 and torch.equal(t, named[n].detach()), n

    tensors = {
        "input_ids": ids.contiguous(),
        "logits": logits.detach().float().contiguous(),
        "loss": loss.detach().float().reshape(1).contiguous(),
        "hidden_f": hidden_f.detach().float().contiguous(),
    }
    print("%-46s %-14s %10s %10s" % ("gradient", "shape", "|grad|", "|param|"))
    for n, p in named.items():
        assert p.grad is not None, n
        gn = p.grad.norm().item()
        assert gn > 0, "zero gradient for " + n
        tensors["grad." + n] = p.grad.detach().float().contiguous()
        print("%-46s %-14s %10.3e %10.3e" % (n, "x".join(map(str, p.shape)), gn, p.norm().item()))

    # The numpy float64 re-implementation must give the same function.
    params = {n: p.detach().double().numpy() for n, p in named.items()}
    np_cfg = dict(layer_norm_epsilon=config.layer_norm_epsilon, num_hidden_layers=n_layer,
                  state_size=config.state_size, time_step_rank=int(config.time_step_rank))
    np_logits, np_hidden, np_loss = np_model_forward(params, np_cfg, ids.numpy())
    e_logits = rel_err(np_logits, logits.detach().numpy())
    e_hidden = rel_err(np_hidden, hidden_f.detach().numpy())
    e_loss = abs(np_loss - loss.item()) / abs(np_loss)
    print("numpy float64 vs torch fp32: logits rel %.2e, hidden_f rel %.2e, loss rel %.2e"
          % (e_logits, e_hidden, e_loss))
    assert e_logits < 1e-4 and e_hidden < 1e-4 and e_loss < 1e-4, "numpy reference disagrees"
    grads = {n: p.grad.detach().double().numpy() for n, p in named.items()}
    e_grad = np_check_gradients(params, np_cfg, ids.numpy(), grads, spec["seed"] + 3)
    print("numpy central differences vs torch gradients: worst rel %.2e" % e_grad)
    assert e_grad < 1e-3, "torch gradients disagree with the numpy loss"

    meta = dict(versions)
    meta.update({
        "fixture": name,
        "seed": str(spec["seed"]),
        "loss": repr(loss.item()),
        "batch": str(B),
        "seqlen": str(L),
        "config": json.dumps(dict(cfg_kwargs, time_step_rank=int(config.time_step_rank),
                                  intermediate_size=config.intermediate_size)),
        "path": path,
        "numpy_logits_rel_err": "%.3e" % e_logits,
        "numpy_grad_worst_rel_err": "%.3e" % e_grad,
        "note": "loss = mean CE of logits[:, :-1] vs input_ids[:, 1:]; conv1d grads (E, 1, K)",
    })
    save_file(tensors, os.path.join(folder, "expected.safetensors"), metadata=meta)

    # The saved files alone must reproduce the fixture.
    try:
        again = MambaForCausalLM.from_pretrained(folder, dtype=torch.float32)
    except TypeError:  # older transformers: torch_dtype
        again = MambaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    again = again.to("cpu")
    with torch.no_grad():
        out2 = again(input_ids=ids, labels=ids, use_cache=False)
    e_reload = rel_err(out2.logits.numpy(), logits.detach().numpy())
    print("reloaded from %s: logits rel %.2e" % (folder, e_reload))
    assert e_reload < 1e-6, "the saved files do not reproduce the logits"
    for f in sorted(os.listdir(folder)):
        print("  %-22s %8d bytes" % (f, os.path.getsize(os.path.join(folder, f))))
    return loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                    help="folder that receives mamba_a/ and mamba_b/ (default: beside this script)")
    ap.add_argument("--only", choices=sorted(CONFIGS), help="make one fixture only")
    args = ap.parse_args()

    import torch
    import transformers
    import safetensors

    torch.set_default_dtype(torch.float32)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "safetensors": safetensors.__version__, "numpy": np.__version__,
                "python": sys.version.split()[0]}
    print("versions: " + ", ".join("%s %s" % kv for kv in versions.items()))
    try:
        import mamba_ssm  # noqa: F401
        print("note: mamba_ssm is installed; its kernels are not used (CPU tensors)")
    except ImportError:
        print("mamba_ssm: not installed")
    try:
        from transformers.utils.import_utils import is_kernels_available
        print("hub 'kernels' package available: %s" % is_kernels_available())
    except ImportError:
        pass

    losses = {}
    for name, spec in CONFIGS.items():
        if args.only and name != args.only:
            continue
        losses[name] = make_fixture(name, spec, args.out, versions)
    print("done: " + ", ".join("%s loss %.8f" % kv for kv in losses.items()))


if __name__ == "__main__":
    main()
