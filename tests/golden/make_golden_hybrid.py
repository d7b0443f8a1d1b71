#!/usr/bin/env python3
"""make_golden_hybrid.py: golden fixtures for two hybrid language models.

A float64 torch reference written from the published equations (transformers' NemotronH and
Jamba modules, mamba_ssm's Mamba, Mamba2, GatedMLP and Block); transformers itself is not
used (make_golden_hf_hybrid.py makes the same fixtures from its classes, on a machine that
has it).

  nemotron_h_a: a NemotronH-style model, hybrid_override_pattern "ME*M-E" (one block per
    letter: M = Mamba-2, E = MoE, * = attention, - = MLP), stored as transformers'
    NemotronHForCausalLM writes it: config.json (NemotronHConfig), model.safetensors with
    NemotronH's names and no ssm metadata. MoE: sigmoid router with a selection bias
    (e_score_correction_bias), top 2 of 6, renormalised, routed_scaling_factor 1.5, relu2
    experts and one shared relu2 expert; attention GQA without position embedding; MLP relu2.
  jamba_a: a Jamba-style model: 4 blocks [Mamba-1 + MoE], [attention + SwiGLU MLP],
    [Mamba-1 + SwiGLU MLP], [Mamba-1 + MoE] (each block: mixer and feed-forward sublayers,
    each pre-norm, as JambaMambaDecoderLayer / mamba_ssm's Block with d_intermediate). MoE:
    fp32 softmax router, top 2 of 4, no renormalisation, SwiGLU experts as wide as the MLP
    (Jamba's one intermediate_size), and the Switch
    auxiliary loss (load_balancing_loss_func) added with router_aux_loss_coef 0.02. Its
    Mamba-1 mixer is mamba_ssm's (Jamba's dt/B/C inner RMSNorms are not part of ssm's
    Mamba-1 yet), so the file has ssm's names and ssm.* metadata.

Equations (B batch, L length, D hidden, T = B L tokens; every sublayer r = r + f(RMSNorm(r))):

    r = embeddings[ids]; for each sublayer: h = RMSNorm(r) * norm.weight (eps 1e-5); r += f(h)
    logits = RMSNorm(r) * norm_f.weight @ embeddings^T   (tied head)
    loss = mean CE(logits[:, t], ids[:, t + 1]) + aux_coef * aux
  Mamba-2 (mamba_ssm Mamba2): make_golden_mamba2.mixer_forward (grouped gated norm).
  Mamba-1 (mamba_ssm Mamba): [x | z] = h in_proj^T; u = silu(causal depthwise conv(x) + b);
    [dt | B | C] = u x_proj^T; delta = softplus(dt dt_proj^T + dt_proj.bias); A = -exp(A_log);
    s_t = exp(delta_t A) s_{t-1} + delta_t B_t u_t; y_t = C_t . s_t + D u_t;
    f = (y * silu(z)) out_proj^T.
  attention (NemotronHAttention, JambaAttention): q, k, v = h W^T (no biases), GQA (query head
    j reads kv head j // (H / Hkv)), softmax(q k^T / sqrt(hd) + causal mask) v, o_proj.
  MLP: relu2 down(relu(up h)^2) (NemotronHMLP); SwiGLU [y | g] = fc1 h, fc2(y * silu(g))
    (mamba_ssm GatedMLP; JambaMLP with fc1 = [up | gate]).
  MoE: l = h gate^T; p = softmax(l) (Jamba) or sigmoid(l) (NemotronH);
    sel = top_k(p + bias); w = p[sel] (/ (sum + 1e-20) if renormalised) * scaling;
    f = sum_j w_j expert_{sel_j}(h) + shared(h); experts stored fused: experts.up_proj
    (X, U, D), experts.down_proj (X, D, F).
    aux = X sum_e (count_e / R) (sum_t p_te / R) over the R = (MoE layers) T rows.

Needs torch and numpy (Debian's python3-torch); uses make_golden_mamba2.py's safetensors
writer and Mamba-2 mixer. Usage: python3 tests/golden/make_golden_hybrid.py --out tests/golden
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden_mamba2 as m2  # noqa: E402

torch.set_default_dtype(torch.float64)
EPS = 1e-5

NEMOTRON = dict(
    name="nemotron_h_a", pattern="ME*M-E", vocab_size=40, hidden_size=16,
    mamba=dict(kind="mamba2", expand=2, head_dim=8, n_groups=2, state_size=8, conv_kernel=4,
               chunk_size=4, time_step_limit=(0.0, float("inf"))),
    attention=dict(n_heads=4, n_kv_heads=2, head_dim=6),
    mlp=dict(d_ff=24, act="relu2"),
    moe=dict(n_experts=6, top_k=2, d_ff=10, act="relu2", routing="sigmoid", norm_topk=True,
             scaling=1.5, shared_d_ff=12, aux_coef=0.0),
    B=2, L=11, seed=7)

JAMBA = dict(
    name="jamba_a", pattern="M+E*+-M+-M+E", vocab_size=36, hidden_size=12,
    mamba=dict(kind="mamba1", expand=2, state_size=6, conv_kernel=4, dt_rank=3),
    attention=dict(n_heads=3, n_kv_heads=1, head_dim=4),
    mlp=dict(d_ff=10, act="swiglu"),
    moe=dict(n_experts=4, top_k=2, d_ff=10, act="swiglu", routing="softmax", norm_topk=False,
             scaling=1.0, shared_d_ff=0, aux_coef=0.02),
    B=2, L=10, seed=11)


def layers_of(spec):
    """pattern -> [(kind, second, block)]"""
    out, b, i, pat = [], -1, 0, spec["pattern"]
    kinds = {"M": spec["mamba"]["kind"], "*": "attention", "-": "mlp", "E": "moe"}
    while i < len(pat):
        second = pat[i] == "+"
        i += second
        b += not second
        out.append((kinds[pat[i]], second, b))
        i += 1
    return out


def prefix(second, block):
    return "backbone.layers.%d.%s" % (block, "mlp." if second else "mixer."), \
           "backbone.layers.%d.%s.weight" % (block, "norm2" if second else "norm")


def up_rows(act, F_):
    return 2 * F_ if act == "swiglu" else F_


def shapes(spec):
    """name -> shape, in the model's order"""
    D, V = spec["hidden_size"], spec["vocab_size"]
    out = {"backbone.embeddings.weight": (V, D)}
    mb, at, ml, mo = spec["mamba"], spec["attention"], spec["mlp"], spec["moe"]
    for kind, second, b in layers_of(spec):
        pre, norm = prefix(second, b)
        out[norm] = (D,)
        if kind == "mamba2":
            I = mb["expand"] * D
            H, G, N, K = I // mb["head_dim"], mb["n_groups"], mb["state_size"], mb["conv_kernel"]
            Cd = I + 2 * G * N
            t = {"in_proj.weight": (I + Cd + H, D), "conv1d.weight": (Cd, 1, K), "conv1d.bias": (Cd,),
                 "dt_bias": (H,), "A_log": (H,), "D": (H,), "norm.weight": (I,), "out_proj.weight": (D, I)}
        elif kind == "mamba1":
            E, N, K, R = mb["expand"] * D, mb["state_size"], mb["conv_kernel"], mb["dt_rank"]
            t = {"in_proj.weight": (2 * E, D), "conv1d.weight": (E, 1, K), "conv1d.bias": (E,),
                 "x_proj.weight": (R + 2 * N, E), "dt_proj.weight": (E, R), "dt_proj.bias": (E,),
                 "A_log": (E, N), "D": (E,), "out_proj.weight": (D, E)}
        elif kind == "attention":
            H, Hkv, hd = at["n_heads"], at["n_kv_heads"], at["head_dim"]
            t = {"q_proj.weight": (H * hd, D), "k_proj.weight": (Hkv * hd, D),
                 "v_proj.weight": (Hkv * hd, D), "o_proj.weight": (D, H * hd)}
        elif kind == "mlp":
            names = ("fc1", "fc2") if ml["act"] == "swiglu" else ("up_proj", "down_proj")
            t = {names[0] + ".weight": (up_rows(ml["act"], ml["d_ff"]), D), names[1] + ".weight": (D, ml["d_ff"])}
        else:
            X, Fe = mo["n_experts"], mo["d_ff"]
            t = {"gate.weight": (X, D)}
            if mo["routing"] == "sigmoid":
                t["gate.e_score_correction_bias"] = (X,)
            t["experts.up_proj"] = (X, up_rows(mo["act"], Fe), D)
            t["experts.down_proj"] = (X, D, Fe)
            if mo["shared_d_ff"]:
                Fs = mo["shared_d_ff"]
                t["shared_experts.up_proj.weight"] = (up_rows(mo["act"], Fs), D)
                t["shared_experts.down_proj.weight"] = (D, Fs)
        for k, s in t.items():
            out[pre + k] = s
    out["backbone.norm_f.weight"] = (D,)
    return out


def init_params(spec):
    """float32 values: U(+-1/sqrt(fan_in)) matrices (routers x3, so that the top-k choices are
    far from ties), the vectors moved where each matters"""
    g = torch.Generator().manual_seed(spec["seed"])

    def U(shape, lo, hi):
        return torch.rand(shape, generator=g, dtype=torch.float32) * (hi - lo) + lo

    p = {}
    for name, s in shapes(spec).items():
        leaf = name.split(".")[-2] + "." + name.split(".")[-1]
        if name.endswith("embeddings.weight"):
            v = torch.randn(s, generator=g, dtype=torch.float32) * 0.5
        elif "norm" in leaf and leaf.endswith("weight") and len(s) == 1:
            v = U(s, 0.6, 1.4)
        elif leaf == "mixer.A_log" or leaf == "mlp.A_log" or leaf.endswith(".A_log"):
            v = torch.log(U(s, 0.3, 2.0)) if len(s) == 1 else torch.log(U(s, 0.2, 1.0))
        elif leaf.endswith(".D"):
            v = U(s, 0.5, 1.5)
        elif leaf.endswith("dt_bias") or leaf.endswith("dt_proj.bias"):
            dt = U(s, 0.05, 0.5)
            v = dt + torch.log(-torch.expm1(-dt))
        elif leaf.endswith("conv1d.bias") or leaf.endswith("e_score_correction_bias"):
            v = U(s, -0.3, 0.3)
        else:
            fan_in = s[-1] if len(s) != 3 or "conv1d" not in name else s[-1]
            v = U(s, -1.0, 1.0) / math.sqrt(fan_in)
            if name.endswith("gate.weight"):
                v = v * 3.0
            if name.endswith("x_proj.weight"):
                v = v * 3.0
        p[name] = v.contiguous()
    return p


# ---- the sublayers --------------------------------------------------------------------------


def mamba1_mixer(p, h, mb):
    Bsz, L, _ = h.shape
    E, N, K, R = p["in_proj.weight"].shape[0] // 2, mb["state_size"], mb["conv_kernel"], mb["dt_rank"]
    x, z = torch.split(h @ p["in_proj.weight"].T, [E, E], dim=-1)
    xpad = torch.cat([torch.zeros(Bsz, K - 1, E, dtype=h.dtype), x], dim=1)
    w = p["conv1d.weight"][:, 0, :]
    acc = p["conv1d.bias"].expand(Bsz, L, E)
    for k in range(K):
        acc = acc + w[:, k] * xpad[:, k:k + L]
    u = m2.silu(acc)
    dt, Bm, Cm = torch.split(u @ p["x_proj.weight"].T, [R, N, N], dim=-1)
    if "dt_layernorm.weight" in p:  # Jamba's inner RMSNorms (JambaMambaMixer), when present
        dt = m2.rmsnorm(dt, p["dt_layernorm.weight"], mb.get("inner_eps", EPS))
        Bm = m2.rmsnorm(Bm, p["b_layernorm.weight"], mb.get("inner_eps", EPS))
        Cm = m2.rmsnorm(Cm, p["c_layernorm.weight"], mb.get("inner_eps", EPS))
    delta = m2.softplus(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])
    A = -torch.exp(p["A_log"])
    s = torch.zeros(Bsz, E, N, dtype=h.dtype)
    ys = []
    for t in range(L):
        s = torch.exp(delta[:, t, :, None] * A) * s + delta[:, t, :, None] * Bm[:, t, None, :] * u[:, t, :, None]
        ys.append((s * Cm[:, t, None, :]).sum(-1) + p["D"] * u[:, t])
    y = torch.stack(ys, dim=1)
    return (y * m2.silu(z)) @ p["out_proj.weight"].T


def attention(p, h, at):
    Bsz, L, _ = h.shape
    H, Hkv, hd = at["n_heads"], at["n_kv_heads"], at["head_dim"]
    q = (h @ p["q_proj.weight"].T).reshape(Bsz, L, H, hd).transpose(1, 2)
    k = (h @ p["k_proj.weight"].T).reshape(Bsz, L, Hkv, hd).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    v = (h @ p["v_proj.weight"].T).reshape(Bsz, L, Hkv, hd).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    o = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ v
    return o.transpose(1, 2).reshape(Bsz, L, H * hd) @ p["o_proj.weight"].T


def ffn(up, down, h, act):
    u = h @ up.T
    if act == "swiglu":
        y, g = u.chunk(2, dim=-1)
        a = y * m2.silu(g)
    else:
        a = torch.relu(u) ** 2
    return a @ down.T


def moe(p, h, mo, stats):
    X, k = mo["n_experts"], mo["top_k"]
    logits = h @ p["gate.weight"].T
    prob = torch.softmax(logits, dim=-1) if mo["routing"] == "softmax" else torch.sigmoid(logits)
    score = prob + p["gate.e_score_correction_bias"] if "gate.e_score_correction_bias" in p else prob
    top = torch.topk(score.detach(), k + 1 if k < X else k, dim=-1)
    if k < X:  # the choices must not be near a tie, or fp32 could choose otherwise
        margin = (top.values[..., k - 1] - top.values[..., k]).min().item()
        assert margin > 1e-4, "routing near a tie (margin %g): change the seed" % margin
    sel = top.indices[..., :k]
    w = prob.gather(-1, sel)
    if mo["norm_topk"]:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    w = w * mo["scaling"]
    ys = torch.stack([ffn(p["experts.up_proj"][e], p["experts.down_proj"][e], h, mo["act"])
                      for e in range(X)], dim=-2)                                    # (B, L, X, D)
    out = (w[..., None] * ys.gather(-2, sel[..., None].expand(*sel.shape, ys.shape[-1]))).sum(-2)
    if "shared_experts.up_proj.weight" in p:
        out = out + ffn(p["shared_experts.up_proj.weight"], p["shared_experts.down_proj.weight"], h, mo["act"])
    stats.append((F.one_hot(sel, X).sum(-2).reshape(-1, X).double(), prob.reshape(-1, X)))
    return out


def sub_params(params, pre):
    return {k[len(pre):]: v for k, v in params.items() if k.startswith(pre)}


def model_forward(params, spec, ids, trace=None):
    """params: ssm's names (make_golden_hf_hybrid.py adds Jamba's inner norms under the
    Mamba-1 mixers' prefix)"""
    mb = spec["mamba"]
    D = spec["hidden_size"]
    c2 = None
    if mb["kind"] == "mamba2":
        I = mb["expand"] * D
        c2 = dict(intermediate_size=I, num_heads=I // mb["head_dim"], head_dim=mb["head_dim"],
                  n_groups=mb["n_groups"], state_size=mb["state_size"], conv_kernel=mb["conv_kernel"],
                  conv_dim=I + 2 * mb["n_groups"] * mb["state_size"], chunk_size=mb["chunk_size"],
                  time_step_limit=mb["time_step_limit"])
    emb = params["backbone.embeddings.weight"]
    r = emb[ids]
    stats = []
    for kind, second, b in layers_of(spec):
        pre, norm = prefix(second, b)
        h = m2.rmsnorm(r, params[norm], EPS)
        p = sub_params(params, pre)
        if kind == "mamba2":
            out, _ = m2.mixer_forward(p, h, c2, None, "recurrent", trace)
        elif kind == "mamba1":
            out = mamba1_mixer(p, h, mb)
        elif kind == "attention":
            out = attention(p, h, spec["attention"])
        elif kind == "mlp":
            up, down = (p["fc1.weight"], p["fc2.weight"]) if "fc1.weight" in p else (p["up_proj.weight"], p["down_proj.weight"])
            out = ffn(up, down, h, spec["mlp"]["act"])
        else:
            out = moe(p, h, spec["moe"], stats)
        r = r + out
    hidden_f = m2.rmsnorm(r, params["backbone.norm_f.weight"], EPS)
    logits = hidden_f @ emb.T
    aux = torch.zeros((), dtype=logits.dtype)
    if stats and spec["moe"]["routing"] == "softmax":
        count = torch.cat([s[0] for s in stats]).sum(0)
        prob = torch.cat([s[1] for s in stats])
        R = prob.shape[0]
        aux = spec["moe"]["n_experts"] * ((count / R) * prob.mean(0)).sum()
    return logits, hidden_f, aux


def loss_of(params, spec, ids, trace=None):
    """trace: a list that receives each Mamba-2 layer's softplus(dt + dt_bias)"""
    logits, hidden_f, aux = model_forward(params, spec, ids, trace)
    V = logits.shape[-1]
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    return ce + spec["moe"]["aux_coef"] * aux, logits, hidden_f, aux


def nemotron_config_json(spec):
    mb, at, ml, mo = spec["mamba"], spec["attention"], spec["mlp"], spec["moe"]
    D = spec["hidden_size"]
    d = {
        "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h",
        "hybrid_override_pattern": spec["pattern"], "num_hidden_layers": len(spec["pattern"]),
        "vocab_size": spec["vocab_size"], "hidden_size": D, "tie_word_embeddings": True,
        "layer_norm_epsilon": EPS, "residual_in_fp32": False,
        "mamba_num_heads": mb["expand"] * D // mb["head_dim"], "mamba_head_dim": mb["head_dim"],
        "ssm_state_size": mb["state_size"], "n_groups": mb["n_groups"], "conv_kernel": mb["conv_kernel"],
        "expand": mb["expand"], "chunk_size": mb["chunk_size"],
        "time_step_limit": [mb["time_step_limit"][0], mb["time_step_limit"][1]],
        "time_step_min": 0.001, "time_step_max": 0.1, "time_step_floor": 1e-4,
        "use_bias": False, "use_conv_bias": True, "mamba_hidden_act": "silu",
        "num_attention_heads": at["n_heads"], "num_key_value_heads": at["n_kv_heads"],
        "head_dim": at["head_dim"], "attention_bias": False,
        "intermediate_size": ml["d_ff"], "mlp_hidden_act": "relu2", "mlp_bias": False,
        "n_routed_experts": mo["n_experts"], "num_experts_per_tok": mo["top_k"],
        "moe_intermediate_size": mo["d_ff"], "moe_shared_expert_intermediate_size": mo["shared_d_ff"],
        "n_shared_experts": 1, "moe_latent_size": None, "norm_topk_prob": mo["norm_topk"],
        "routed_scaling_factor": mo["scaling"], "n_group": 1, "topk_group": 1,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    }
    return json.dumps(d, indent=2, sort_keys=True) + "\n"


def ssm_metadata(spec):
    """ssm's own ssm.* metadata (libssm/src/checkpoint.c) for the Jamba-style model"""
    mb, at, ml, mo = spec["mamba"], spec["attention"], spec["mlp"], spec["moe"]
    D = spec["hidden_size"]
    layers = ",".join(("+" if s else "") + k for k, s, _ in layers_of(spec))
    return {
        "format": "pt", "ssm.vocab_size": str(spec["vocab_size"]), "ssm.d_model": str(D),
        "ssm.n_layer": str(len(layers_of(spec))), "ssm.d_state": str(mb["state_size"]),
        "ssm.d_conv": str(mb["conv_kernel"]), "ssm.expand": str(mb["expand"]),
        "ssm.dt_rank": str(mb["dt_rank"]), "ssm.d_inner": str(mb["expand"] * D),
        "ssm.norm_eps": repr(EPS), "ssm.layers": layers,
        "ssm.attention.n_heads": str(at["n_heads"]), "ssm.attention.n_kv_heads": str(at["n_kv_heads"]),
        "ssm.attention.head_dim": str(at["head_dim"]), "ssm.attention.rotary_dim": "0",
        "ssm.attention.rope_base": "10000", "ssm.attention.max_context": "64",
        "ssm.mlp.d_ff": str(ml["d_ff"]), "ssm.mlp.activation": ml["act"],
        "ssm.moe.n_experts": str(mo["n_experts"]), "ssm.moe.top_k": str(mo["top_k"]),
        "ssm.moe.d_ff": str(mo["d_ff"]), "ssm.moe.shared_d_ff": str(mo["shared_d_ff"]),
        "ssm.moe.norm_topk": str(int(mo["norm_topk"])), "ssm.moe.activation": mo["act"],
        "ssm.moe.routing": mo["routing"], "ssm.moe.routed_scaling": repr(mo["scaling"]),
        "ssm.moe.aux_loss_coef": repr(mo["aux_coef"]),
    }


def make_fixture(spec, out_root):
    p32 = init_params(spec)
    p64 = {k: v.double().requires_grad_(True) for k, v in p32.items()}
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    ids = torch.randint(0, spec["vocab_size"], (spec["B"], spec["L"]), generator=g)
    loss, logits, hidden_f, aux = loss_of(p64, spec, ids)
    loss.backward()
    for v in p64.values():  # the selection bias: no gradient (it only chooses)
        if v.grad is None:
            v.grad = torch.zeros_like(v)
    # a check of the autograd gradients by central differences along one random direction
    worst = 0.0
    for name in list(p64)[::3]:
        d = torch.randn(p64[name].shape, generator=g)
        d /= d.norm()
        with torch.no_grad():
            base = {k: v.detach() for k, v in p64.items()}
            lp = loss_of(dict(base, **{name: base[name] + 1e-6 * d}), spec, ids)[0]
            lm = loss_of(dict(base, **{name: base[name] - 1e-6 * d}), spec, ids)[0]
        fd, an = (lp - lm).item() / 2e-6, (p64[name].grad * d).sum().item()
        if an != 0.0 or fd != 0.0:
            worst = max(worst, abs(fd - an) / (abs(an) + 1e-4))
    assert worst < 1e-5, worst
    out = os.path.join(out_root, spec["name"])
    os.makedirs(out, exist_ok=True)
    tensors = {k: v.numpy() for k, v in p32.items()}
    if spec["name"].startswith("nemotron"):
        meta = {"format": "pt"}
        with open(os.path.join(out, "config.json"), "w") as f:
            f.write(nemotron_config_json(spec))
    else:
        meta = ssm_metadata(spec)
    m2.save_safetensors(os.path.join(out, "model.safetensors"), tensors, meta)
    exp = {"input_ids": ids.numpy().astype(np.int64),
           "logits": logits.detach().float().numpy(), "loss": np.array([loss.item()], np.float32),
           "hidden_f": hidden_f.detach().float().numpy()}
    for k, v in p64.items():
        exp["grad." + k] = v.grad.float().numpy()
    m2.save_safetensors(os.path.join(out, "expected.safetensors"), exp,
                        {"torch": torch.__version__, "reference": "make_golden_hybrid.py (float64)",
                         "seed": str(spec["seed"]), "loss": repr(loss.item()), "aux": repr(aux.item()),
                         "pattern": spec["pattern"]})
    print("%s: loss %.8f (aux %.6f), %d tensors, finite differences %.1e" %
          (spec["name"], loss.item(), aux.item(), len(p32), worst))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    a = ap.parse_args()
    for spec in (NEMOTRON, JAMBA):
        make_fixture(spec, a.out)


if __name__ == "__main__":
    main()
