#!/usr/bin/env python3
"""make_golden_caduceus.py: golden fixtures for Caduceus language models.

A float64 torch reference of Caduceus (kuleshov-group/caduceus, modeling_caduceus.py and
modeling_rcps.py), written in this file in pure torch: no caduceus, mamba_ssm or transformers
import. Each Mamba-1 mixer is transformers' MambaMixer.slow_forward (equal to mamba_ssm's
selective_scan_ref): in_proj without bias, depthwise causal conv1d + SiLU, x_proj into
[dt | B | C], dt = softplus(dt_proj(dt)) (bias included), A = -exp(A_log), the sequential scan
h_t = exp(dt A) h_{t-1} + dt B u, y = C h + D u, y * silu(z), out_proj.

Caduceus-Ph (rcps false): mamba_ssm Blocks with fused_add_norm (residual = h + residual, or h
at the first block; h = mixer(RMSNorm(residual))), the mixer BiMambaWrapper:
    out = mamba_fwd(x) (+ | *) flip_L(mamba_rev(flip_L(x)))     ("add" | "ew_multiply")
with mamba_rev's in_proj and out_proj tied to mamba_fwd's; norm_f; LM head tied to the
embedding.

Caduceus-Ps (rcps true): hidden width 2D, rc(x) = flip over L and channels;
    RCPSEmbedding   [E[ids] | rc(E[comp[flip_L(ids)]])]
    RCPSMambaBlock  with fused_add_norm: the halves SWAP (modeling_rcps.py at 0060a6d, l.174-197):
                      hf, rf = add_norm(h[..., D:], w, r[..., D:])
                      hr, rr = add_norm(rc(h[..., :D]), w, rc(r[..., :D]))
                      h, r   = [hf | rc(hr)], [rf | rc(rr)]
                    without it (RCPSAddNormWrapper): no swap
    RCPSWrapper     [M(x[..., :D]) | rc(M(rc(x[..., D:])))]
    norm_f          [norm(h1 + r1) | rc(norm(rc(h2 + r2)))]  (no swap)
    RCPSLMHead      x[..., :D] W^T + flip_C(x[..., D:]) W[comp]^T, W the embedding
The vocabulary is padded to pad_vocab_size_multiple and the complement map extended with
identity entries, as CaduceusForMaskedLM does.

Files per fixture (tests/golden/README.md): config.json (CaduceusConfig's keys),
model.safetensors in Caduceus' transformers names (caduceus.backbone...), with or without the
tied aliases and the complement_map buffers, and expected.safetensors: input_ids, logits
(B, L, V), loss (mean CE of logits[:, t] against input_ids[:, t+1]) and grad.<ssm's name> for
every parameter. The script also checks, in float64, the RC equivariance of the RCPS model and
that the fused path's swap changes the function (so a port without it fails the fixture).

    /usr/bin/python3 tests/golden/make_golden_caduceus.py --out tests/golden
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

CONFIGS = {
    # BiMamba "add", the tied aliases stored (as save_pretrained writes tied weights)
    "caduceus_ph_a": dict(rcps=False, strategy="add", fused=True, aliases=True,
                          vocab=12, d_model=16, n_layer=2, d_state=8, d_conv=4, expand=2,
                          seed=16, batch=2, seqlen=11),
    # BiMamba "ew_multiply", no aliases; odd sizes
    "caduceus_ph_b": dict(rcps=False, strategy="ew_multiply", fused=True, aliases=False,
                          vocab=12, d_model=12, n_layer=3, d_state=4, d_conv=3, expand=2,
                          seed=17, batch=3, seqlen=9),
    # RCPS with the fused add-norm (Caduceus-Ps as released): no tied aliases, the
    # complement_map buffers stored (what the hub's caduceus-ps files hold)
    "caduceus_ps_a": dict(rcps=True, strategy="add", fused=True, aliases=False,
                          vocab=12, d_model=16, n_layer=2, d_state=8, d_conv=4, expand=2,
                          seed=18, batch=2, seqlen=10),
}
EPS = 1e-5
PAD = 8
# Caduceus' tokenizer: [CLS]0 [SEP]1 [BOS]2 [MASK]3 [PAD]4 [RESERVED]5 [UNK]6 A7 C8 G9 T10 N11
COMPLEMENT = {i: i for i in range(12)}
COMPLEMENT.update({7: 10, 8: 9, 9: 8, 10: 7})

MAMBA = ["in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
         "dt_proj.bias", "A_log", "D", "out_proj.weight"]
REV = MAMBA[1:8]  # mamba_rev's own; in_proj and out_proj are mamba_fwd's


def save_safetensors(path, tensors, metadata):
    """name -> float32 or int64 numpy array, as the safetensors library lays it out."""
    rank = {np.dtype("<f4"): 0, np.dtype("<i8"): 1}
    arrays = {n: np.ascontiguousarray(a) for n, a in tensors.items()}
    order = sorted(arrays, key=lambda n: (-rank[arrays[n].dtype], n))
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, off = [], 0
    for n in order:
        b = arrays[n].tobytes()
        header[n] = {"dtype": "F32" if arrays[n].dtype == np.float32 else "I64",
                     "shape": list(arrays[n].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hb = json.dumps(header, separators=(",", ":")).encode("ascii")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
    os.replace(path + ".tmp", path)


def ours_names(c):
    """ssm's parameter names (Caduceus' without 'caduceus.' and RCPS's wrappers)."""
    n = ["backbone.embeddings.weight"]
    for i in range(c["n_layer"]):
        n.append("backbone.layers.%d.norm.weight" % i)
        n += ["backbone.layers.%d.mixer.mamba_fwd.%s" % (i, s) for s in MAMBA]
        n += ["backbone.layers.%d.mixer.mamba_rev.%s" % (i, s) for s in REV]
    return n + ["backbone.norm_f.weight"]


def caduceus_name(c, ours):
    """Caduceus' name in the file for one of ours."""
    sub = "submodule." if c["rcps"] else ""
    if ours == "backbone.embeddings.weight":
        return "caduceus.backbone.embeddings.word_embeddings." + ("embedding.weight" if c["rcps"]
                                                                   else "weight")
    return "caduceus." + ours.replace(".mixer.", ".mixer." + sub)


def init_params(c, seed):
    """float32 parameters, off their initial values (so that every kind of tensor matters)."""
    g = torch.Generator().manual_seed(seed)
    V, D, E, N, K, R = c["V"], c["d_model"], c["E"], c["d_state"], c["d_conv"], c["R"]

    def u(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)

    def mamba(own_proj):
        p = {}
        if own_proj:
            p["in_proj.weight"] = u((2 * E, D), -1, 1) * 2 / math.sqrt(D)
            p["out_proj.weight"] = u((D, E), -1, 1) * 4 / math.sqrt(E)
        p["conv1d.weight"] = u((E, 1, K), -1, 1) / math.sqrt(K)
        p["conv1d.bias"] = u((E,), -1, 1) / math.sqrt(K)
        p["x_proj.weight"] = u((R + 2 * N, E), -1, 1) * 3 / math.sqrt(E)
        p["dt_proj.weight"] = u((E, R), -1, 1) / math.sqrt(R)
        p["dt_proj.bias"] = u((E,), -1.0, 0.5)       # softplus -> dt of 0.3 .. 1
        p["A_log"] = torch.log(u((E, N), 0.2, 1.0))   # A in -(0.2 .. 1): the state lasts
        p["D"] = u((E,), 0.5, 1.5)
        return p

    p = {"backbone.embeddings.weight": torch.randn((V, D), generator=g, dtype=torch.float64)}
    for i in range(c["n_layer"]):
        p["backbone.layers.%d.norm.weight" % i] = u((D,), 0.6, 1.4)
        for k, v in mamba(True).items():
            p["backbone.layers.%d.mixer.mamba_fwd.%s" % (i, k)] = v
        for k, v in mamba(False).items():
            p["backbone.layers.%d.mixer.mamba_rev.%s" % (i, k)] = v
    p["backbone.norm_f.weight"] = u((D,), 0.6, 1.4)
    return {k: v.float() for k, v in p.items()}


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def mamba_slow(p, x, c):
    """transformers' MambaMixer.slow_forward (no cache): x (B, L, D) -> (B, L, D)."""
    Bsz, L, _ = x.shape
    E, N, K, R = c["E"], c["d_state"], c["d_conv"], c["R"]
    xs, z = (x @ p["in_proj.weight"].T).chunk(2, dim=-1)                     # (B, L, E) each
    u = F.conv1d(xs.transpose(1, 2), p["conv1d.weight"], p["conv1d.bias"], padding=K - 1,
                 groups=E)[..., :L]
    u = F.silu(u).transpose(1, 2)                                            # (B, L, E)
    dt, Bm, Cm = torch.split(u @ p["x_proj.weight"].T, [R, N, N], dim=-1)
    delta = F.softplus(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])      # (B, L, E)
    A = -torch.exp(p["A_log"])                                               # (E, N)
    h = torch.zeros(Bsz, E, N, dtype=x.dtype)
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, t, :, None] * A) * h + \
            delta[:, t, :, None] * Bm[:, t, None, :] * u[:, t, :, None]
        ys.append((h * Cm[:, t, None, :]).sum(-1))
    y = torch.stack(ys, dim=1) + u * p["D"]
    return (y * F.silu(z)) @ p["out_proj.weight"].T


def bimamba(p, i, x, c):
    """BiMambaWrapper: mamba_rev shares mamba_fwd's in_proj and out_proj."""
    pre = "backbone.layers.%d.mixer." % i
    fwd = {k: p[pre + "mamba_fwd." + k] for k in MAMBA}
    rev = dict(fwd, **{k: p[pre + "mamba_rev." + k] for k in REV})
    out = mamba_slow(fwd, x, c)
    out_rev = mamba_slow(rev, x.flip(1), c).flip(1)
    return out + out_rev if c["strategy"] == "add" else out * out_rev


def rc(x):
    return x.flip(-2, -1)


def add_norm(x, w, residual):
    """mamba_ssm's rms_norm_fn(x, w, residual=..., prenorm=True): (normed, residual out)."""
    r = x if residual is None else x + residual
    return rmsnorm(r, w), r


def forward(p, c, ids, swap=True):
    """logits (B, L, V) of CaduceusForMaskedLM; swap=False: the fused RCPS path without its
    half swap (what a port that missed it would compute)."""
    D, emb = c["d_model"], p["backbone.embeddings.weight"]
    comp = torch.tensor([c["complement"][v] for v in range(c["V"])])
    if not c["rcps"]:
        h, r = emb[ids], None
        for i in range(c["n_layer"]):
            hn, r = add_norm(h, p["backbone.layers.%d.norm.weight" % i], r)
            h = bimamba(p, i, hn, c)
        return rmsnorm(h + r, p["backbone.norm_f.weight"]) @ emb.T
    h = torch.cat([emb[ids], rc(emb[comp[ids.flip(-1)]])], dim=-1)   # RCPSEmbedding
    r = None
    for i in range(c["n_layer"]):
        w = p["backbone.layers.%d.norm.weight" % i]
        if c["fused"]:  # RCPSMambaBlock, fused_add_norm: the halves swap
            a, b = (slice(D, None), slice(None, D)) if swap else (slice(None, D), slice(D, None))
            hf, rf = add_norm(h[..., a], w, None if r is None else r[..., a])
            hr, rr = add_norm(rc(h[..., b]), w, None if r is None else rc(r[..., b]))
            h, r = torch.cat([hf, rc(hr)], -1), torch.cat([rf, rc(rr)], -1)
        else:  # RCPSAddNormWrapper
            rf = h[..., :D] if r is None else h[..., :D] + r[..., :D]
            rr = rc(h[..., D:]) if r is None else rc(h[..., D:]) + rc(r[..., D:])
            h, r = torch.cat([rmsnorm(rf, w), rc(rmsnorm(rr, w))], -1), torch.cat([rf, rc(rr)], -1)
        h = torch.cat([bimamba(p, i, h[..., :D], c), rc(bimamba(p, i, rc(h[..., D:]), c))], -1)
    wf = p["backbone.norm_f.weight"]
    x = torch.cat([rmsnorm(h[..., :D] + r[..., :D], wf),
                   rc(rmsnorm(rc(h[..., D:]) + rc(r[..., D:]), wf))], -1)
    return x[..., :D] @ emb.T + x[..., D:].flip(-1) @ emb[comp].T      # RCPSLMHead


def lm_loss(logits, ids):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))


def rel(a, b):
    return float((a - b).norm() / b.norm())


def config_json(c):
    return {
        "architectures": ["CaduceusForMaskedLM"], "model_type": "caduceus",
        "d_model": c["d_model"], "n_layer": c["n_layer"], "vocab_size": c["vocab"],
        "pad_vocab_size_multiple": PAD, "norm_epsilon": EPS, "rms_norm": True,
        "residual_in_fp32": True, "fused_add_norm": c["fused"], "initializer_cfg": None,
        "bidirectional": True, "bidirectional_strategy": c["strategy"],
        "bidirectional_weight_tie": True, "rcps": c["rcps"],
        "complement_map": {str(k): v for k, v in COMPLEMENT.items()},
        "ssm_cfg": {"d_state": c["d_state"], "d_conv": c["d_conv"], "expand": c["expand"],
                    "dt_rank": "auto", "dt_min": 0.001, "dt_max": 0.1, "dt_init": "random",
                    "dt_scale": 1.0, "dt_init_floor": 1e-4, "conv_bias": True, "bias": False,
                    "use_fast_path": True},
    }


def make_fixture(name, spec, out_root):
    c = dict(spec)
    c["V"] = (c["vocab"] + PAD - 1) // PAD * PAD
    c["E"] = c["expand"] * c["d_model"]
    c["R"] = math.ceil(c["d_model"] / 16)
    c["complement"] = {**COMPLEMENT, **{v: v for v in range(12, c["V"])}}
    print("== %s: V %d (padded from %d) D %d layers %d N %d K %d E %d R %d; %s%s; B %d L %d"
          % (name, c["V"], c["vocab"], c["d_model"], c["n_layer"], c["d_state"], c["d_conv"],
             c["E"], c["R"], "rcps " if c["rcps"] else "", c["strategy"], c["batch"], c["seqlen"]))
    p32 = init_params(c, c["seed"])
    names = ours_names(c)
    assert sorted(names) == sorted(p32)
    p64 = {n: t.double().requires_grad_(True) for n, t in p32.items()}
    g = torch.Generator().manual_seed(c["seed"] + 1)
    ids = torch.randint(0, c["vocab"], (c["batch"], c["seqlen"]), generator=g)
    ids[0, 0] = 3  # a [MASK]: a token its own complement
    logits = forward(p64, c, ids)
    loss = lm_loss(logits, ids)
    grads = dict(zip(names, torch.autograd.grad(loss, [p64[n] for n in names])))
    print("loss %.10f (log V = %.4f)" % (loss.item(), math.log(c["V"])))

    with torch.no_grad():
        if c["rcps"]:
            comp = torch.tensor([c["complement"][v] for v in range(c["V"])])
            rc_ids = comp[ids.flip(-1)]
            want = logits.flip(1)[..., comp]
            e = rel(forward(p64, c, rc_ids), want)
            print("RC equivariance: logits(rc x) vs comp-permuted flipped logits(x): rel %.2e" % e)
            assert e < 1e-12
            e_swap = rel(forward(p64, c, ids, swap=False), logits)
            e_unfused = rel(forward(p64, dict(c, fused=False), ids), logits)
            print("without the fused path's half swap: logits move by rel %.2e; the unfused "
                  "wrapper: %.2e" % (e_swap, e_unfused))
            assert e_swap > 1e-2
        else:
            e = rel(forward(p64, dict(c, strategy="ew_multiply" if c["strategy"] == "add"
                                      else "add"), ids), logits)
            print("the other bidirectional strategy moves the logits by rel %.2e" % e)
            assert e > 1e-2

    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config_json(c), f, indent=2, sort_keys=True)
        f.write("\n")
    model = {caduceus_name(c, n): p32[n].numpy() for n in names}
    comp_buf = np.array([c["complement"][v] for v in range(c["V"])], dtype=np.int64)
    if c["rcps"]:
        model["caduceus.backbone.embeddings.word_embeddings.complement_map"] = comp_buf
        model["lm_head.complement_map"] = comp_buf
    if c["aliases"]:
        sub = "submodule." if c["rcps"] else ""
        for i in range(c["n_layer"]):
            for k in ("in_proj.weight", "out_proj.weight"):
                model["caduceus.backbone.layers.%d.mixer.%smamba_rev.%s" % (i, sub, k)] = \
                    p32["backbone.layers.%d.mixer.mamba_fwd.%s" % (i, k)].numpy()
        model["lm_head.lm_head.weight" if c["rcps"] else "lm_head.weight"] = \
            p32["backbone.embeddings.weight"].numpy()
    meta = {"format": "pt", "torch": torch.__version__, "made_by": "make_golden_caduceus.py"}
    save_safetensors(os.path.join(out, "model.safetensors"), model, meta)
    expected = {"input_ids": ids.numpy().astype(np.int64),
                "logits": logits.detach().float().numpy(),
                "loss": np.array([loss.item()], dtype=np.float32)}
    for n in names:
        expected["grad." + n] = grads[n].float().numpy()
    meta = dict(meta, loss="%.10f" % loss.item(), seed=str(c["seed"]))
    save_safetensors(os.path.join(out, "expected.safetensors"), expected, meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name, spec in CONFIGS.items():
        make_fixture(name, spec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
