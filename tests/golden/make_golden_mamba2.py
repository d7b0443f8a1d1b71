#!/usr/bin/env python3
"""make_golden_mamba2.py: golden fixtures for Mamba-2 (SSD) language models.

A float64 torch reference written from the published equations: mamba_ssm's
`Mamba2` module (mamba_ssm/modules/mamba2.py, the non-fused path: split of
in_proj, causal conv1d + SiLU, mamba_chunk_scan_combined with dt_bias, dt_softplus
and dt_limit, RMSNormGated with norm_before_gate=False and group_size = d_ssm /
ngroups, out_proj) inside mamba_ssm's MixerModel / MambaLMHeadModel (pre-norm
blocks, final norm_f, LM head tied to the embedding), and the chunked SSD
algorithm of `ssd_minimal_discrete` (mamba_ssm/modules/ssd_minimal.py). Tensor
names are those of Hugging Face transformers' Mamba2ForCausalLM checkpoints
("backbone." prefix, "embeddings", "norm_f"); transformers itself is not used.

Shapes: B batch, L sequence, V vocab_size, D hidden_size (d_model), I = d_inner =
d_ssm = expand * D, P = head_dim (headdim), H = I / P heads (nheads), G = n_groups
(ngroups), N = state_size (d_state), K = conv_kernel (d_conv), conv_dim = I + 2 G N.
Every parameter is float32 in the file; everything is computed in float64 from
those float32 values.

Language model (mamba_ssm MambaLMHeadModel; transformers Mamba2ForCausalLM):

    r      = backbone.embeddings.weight[input_ids]                  (B, L, D)
    for each layer i (mamba_ssm Block, residual_in_fp32; fp64 here):
      h    = RMSNorm(r) * backbone.layers.{i}.norm.weight           eps = layer_norm_epsilon
             RMSNorm(v) = v / sqrt(mean_D(v^2) + eps)
      r    = r + Mixer_i(h)
    hidden_f = RMSNorm(r) * backbone.norm_f.weight                   (B, L, D)
    logits   = hidden_f @ backbone.embeddings.weight^T               (B, L, V), tied head
    loss     = mean over b, t < L-1 of CE(logits[b, t], input_ids[b, t+1])
               (transformers' loss with labels = input_ids)

Mixer (mamba_ssm Mamba2; names below are backbone.layers.{i}.mixer.*):

    zxbcdt      = h @ in_proj.weight^T        in_proj.weight (2I + 2GN + H, D), no bias
    z, xBC, dt  = split(zxbcdt, [I, conv_dim, H])                    ([z | x B C | dt])
    xBC[t, c]   = silu(conv1d.bias[c]
                       + sum_{k=0..K-1} conv1d.weight[c, 0, k] * xBC_raw[t - (K-1) + k, c])
                  (depthwise causal conv, zeros before t = 0, or the carried conv_state)
    x, Bm, Cm   = split(xBC, [I, GN, GN]);  x -> (L, H, P);  Bm, Cm -> (L, G, N)
                  head h reads group g(h) = h // (H / G)
    A           = -exp(A_log)                                        (H)
    dt          = softplus(dt + dt_bias)     softplus(v) = v if v > 20 else log1p(exp(v))
    dt          = clamp(dt, time_step_limit[0], time_step_limit[1])  (mamba_ssm dt_limit;
                  d dt / d (dt + dt_bias) = 0 where clamped)
    S_t[h,p,n]  = exp(dt_t[h] A[h]) S_{t-1}[h,p,n] + dt_t[h] x_t[h,p] Bm_t[g(h),n],  S_{-1} = 0
    y_t[h,p]    = sum_n Cm_t[g(h),n] S_t[h,p,n] + D[h] x_t[h,p]
    v           = y (flattened to (L, I)) * silu(z)                  (norm_before_gate=False)
    out         = per group of I/G contiguous channels:
                  v * rsqrt(mean_group(v^2) + 1e-5) * norm.weight    (RMSNormGated, eps 1e-5,
                                                                      group_size = I / G)
    Mixer(h)    = out @ out_proj.weight^T     out_proj.weight (D, I), no bias

The scan is computed two ways and they must agree (1e-10 relative, float64):
  - the sequential recurrence above;
  - the chunked SSD algorithm (ssd_minimal_discrete) on X = x * dt, A_d = A * dt,
    per chunk of chunk_size steps (L padded to a multiple of chunk_size with
    X = 0, A_d = 0 steps, i.e. dA = 1, which change nothing):
      segsum(a)[i, j] = sum_{j < k <= i} a[k] for j <= i, -inf above the diagonal
                        (the stable masked cumsum)
      1. Y_diag  = C_l . B_s  exp(segsum(A_d))[l, s]  X_s                (within a chunk)
      2. states  = sum_l B_l exp(A_cum[-1] - A_cum[l]) X_l               (chunk's own state)
      3. states  = exp(segsum(pad(A_cum[:, -1], 1 left))) @ [S_init, states]
                   (inter-chunk recurrence with decay_chunk); the last is the final state
      4. Y_off   = C_l . states_(chunk) exp(A_cum[l])                    (state -> output)
      y = Y_diag + Y_off + D x.
The script also checks that a step-by-step decode (mamba_ssm Mamba2.step:
conv_state (B, conv_dim, K) rolls left by one and takes the new raw xBC column,
newest last; conv = sum_k conv_state[:, :, k] * conv1d.weight[:, 0, k]; S updated
per token; dt clamped as in the parallel forward, which mamba_ssm's step() omits:
its decode path does not pass dt_limit) reproduces the parallel logits,
that the sequence run in two windows carrying (conv_state, ssm_state) reproduces
one pass, and the float64 autograd gradients by central differences.

Parameters are initialised like mamba_ssm (embedding N(0, 0.02); in_proj and conv1d
PyTorch's default U(+-1/sqrt(fan_in)); out_proj the same divided by sqrt(n_layer)
(_init_weights' rescale_prenorm_residual); dt_bias = softplus^-1(dt), dt log-uniform
in [time_step_min, time_step_max] clamped >= time_step_floor; A_log = log U(1, 16);
D = 1; norm weights 1) and then perturbed (see perturb()) so that every parameter
matters; all seeded with torch.Generator, deterministic.

Writes OUT/mamba2_a/ and OUT/mamba2_b/: config.json (as transformers' Mamba2Config
writes it), model.safetensors (the parameters, F32, __metadata__ {"format": "pt"},
no lm_head.weight: the head is tied), expected.safetensors (input_ids (B, L) I64,
logits (B, L, V), loss (1), hidden_f (B, L, D), grad.<parameter name> for every
parameter, state.{i}.conv (B, conv_dim, K) and state.{i}.ssm (B, H, P, N) after the
whole sequence; F32).

Needs torch and numpy only (Debian's python3-torch, python3-numpy); no transformers,
no safetensors module (a small reader/writer is below), no network.
Usage: python3 tests/golden/make_golden_mamba2.py --out tests/golden
"""

import argparse
import json
import math
import os
import struct
import sys

os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

INF = float("inf")

CONFIGS = {
    # L = 21 is not a multiple of chunk_size 8 (three chunks, the last one padded).
    "mamba2_a": dict(
        model=dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, expand=2, head_dim=16,
                   state_size=16, n_groups=1, conv_kernel=4, chunk_size=8,
                   time_step_limit=(0.0, INF)),
        seed=2024, batch=2, seqlen=21, dt_shift=3.0, dt_scale=2.0, splits=(1, 8, 10, 16)),
    # Awkward shapes: V not a multiple of 8, G = 2 (the grouped gated norm), K = 3,
    # L = 13 < chunk_size 16 (one padded chunk), dt clamped at both ends.
    "mamba2_b": dict(
        model=dict(vocab_size=50, hidden_size=24, num_hidden_layers=3, expand=2, head_dim=8,
                   state_size=8, n_groups=2, conv_kernel=3, chunk_size=16,
                   time_step_limit=(0.05, 2.0)),
        seed=4242, batch=3, seqlen=13, dt_shift=4.0, dt_scale=1.5, splits=(1, 2, 5, 12)),
}
COMMON = dict(layer_norm_epsilon=1e-5, time_step_min=0.001, time_step_max=0.1,
              time_step_floor=1e-4)
GATED_NORM_EPS = 1e-5  # mamba_ssm: RMSNormGated(d_ssm, eps=1e-5, ...), fixed

# Tolerances of the float64 self-checks.
TOL_IMPL = 1e-10   # SSD vs recurrence, decode vs parallel, two windows vs one pass
TOL_FD = 1e-6      # central differences vs autograd

# ---------------------------------------------------------------------------------------
# safetensors, written as the safetensors library writes it
# ---------------------------------------------------------------------------------------

ST_DTYPES = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8")}
# The library orders tensors by dtype (the larger Dtype enum value first: I64 before F32),
# then by name; with one dtype this is plain name order.
ST_RANK = {"F32": 0, "I64": 1}


def st_dtype_name(a):
    if a.dtype == np.float32:
        return "F32"
    if a.dtype == np.int64:
        return "I64"
    raise TypeError("unsupported dtype %s" % a.dtype)


def save_safetensors(path, tensors, metadata):
    """tensors: name -> numpy array (float32 or int64); metadata: str -> str."""
    arrays = {n: np.ascontiguousarray(a) for n, a in tensors.items()}
    order = sorted(arrays, key=lambda n: (-ST_RANK[st_dtype_name(arrays[n])], n))
    header = {"__metadata__": {k: metadata[k] for k in sorted(metadata)}}
    blobs, offset = [], 0
    for n in order:
        a = arrays[n]
        b = a.astype(ST_DTYPES[st_dtype_name(a)], copy=False).tobytes(order="C")
        header[n] = {"dtype": st_dtype_name(a), "shape": list(a.shape),
                     "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_safetensors(path):
    """-> (name -> numpy array, metadata); checks the layout strictly."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0 and 8 + n <= len(data), path
    header = json.loads(data[8:8 + n].decode("ascii"))
    meta = header.pop("__metadata__", {})
    body = data[8 + n:]
    out, end = {}, 0
    for name, info in header.items():
        b0, b1 = info["data_offsets"]
        assert b0 == end, (path, name, "tensors must be contiguous, in header order")
        dt = ST_DTYPES[info["dtype"]]
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        assert b1 - b0 == count * dt.itemsize, (path, name)
        out[name] = np.frombuffer(body[b0:b1], dtype=dt).reshape(info["shape"]).copy()
        end = b1
    assert end == len(body), (path, "trailing bytes")
    return out, meta


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


def full_config(spec):
    c = dict(COMMON, **spec["model"])
    D = c["hidden_size"]
    c["intermediate_size"] = c["expand"] * D
    assert c["intermediate_size"] % c["head_dim"] == 0
    c["num_heads"] = c["intermediate_size"] // c["head_dim"]
    assert c["num_heads"] % c["n_groups"] == 0 and c["intermediate_size"] % c["n_groups"] == 0
    c["conv_dim"] = c["intermediate_size"] + 2 * c["n_groups"] * c["state_size"]
    return c


def config_json(c):
    """config.json as transformers' Mamba2Config.save_pretrained writes it (sorted keys,
    indent 2, trailing newline; json.dumps writes float('inf') as Infinity)."""
    d = {
        "architectures": ["Mamba2ForCausalLM"],
        "bos_token_id": 0,
        "chunk_size": c["chunk_size"],
        "conv_kernel": c["conv_kernel"],
        "dtype": "float32",
        "eos_token_id": 2,
        "expand": c["expand"],
        "head_dim": c["head_dim"],
        "hidden_act": "silu",
        "hidden_size": c["hidden_size"],
        "initializer_range": 0.1,
        "layer_norm_epsilon": c["layer_norm_epsilon"],
        "model_type": "mamba2",
        "n_groups": c["n_groups"],
        "num_heads": c["num_heads"],
        "num_hidden_layers": c["num_hidden_layers"],
        "pad_token_id": 1,
        "rescale_prenorm_residual": False,
        "residual_in_fp32": True,
        "rms_norm": True,
        "state_size": c["state_size"],
        "tie_word_embeddings": True,
        "time_step_floor": c["time_step_floor"],
        "time_step_limit": [float(c["time_step_limit"][0]), float(c["time_step_limit"][1])],
        "time_step_max": c["time_step_max"],
        "time_step_min": c["time_step_min"],
        "time_step_rank": int(math.ceil(c["hidden_size"] / 16)),
        "use_bias": False,
        "use_cache": True,
        "use_conv_bias": True,
        "vocab_size": c["vocab_size"],
    }
    return json.dumps(d, indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------
# Parameters: mamba_ssm's initialisation, then a perturbation
# ---------------------------------------------------------------------------------------


def layer_names(i):
    pre = "backbone.layers.%d." % i
    return [pre + "mixer." + s for s in ("in_proj.weight", "conv1d.weight", "conv1d.bias",
                                          "dt_bias", "A_log", "D", "norm.weight",
                                          "out_proj.weight")] + [pre + "norm.weight"]


def param_kind(name):
    """backbone.layers.3.mixer.A_log -> mixer.A_log (layer index dropped)."""
    parts = name.split(".")
    return ".".join(parts[3:]) if parts[1] == "layers" else ".".join(parts[1:])


def init_params(c, seed):
    """float32 tensors, name -> tensor, as mamba_ssm initialises a Mamba2 LM."""
    g = torch.Generator().manual_seed(seed)
    V, D, I, H = c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_heads"]
    N, G, K, Cd = c["state_size"], c["n_groups"], c["conv_kernel"], c["conv_dim"]
    nl = c["num_hidden_layers"]
    f32 = torch.float32

    def unif(shape, bound):
        return (torch.rand(shape, generator=g, dtype=f32) * 2.0 - 1.0) * bound

    p = {"backbone.embeddings.weight": torch.randn((V, D), generator=g, dtype=f32) * 0.02}
    for i in range(nl):
        pre = "backbone.layers.%d.mixer." % i
        d_in_proj = 2 * I + 2 * G * N + H
        p[pre + "in_proj.weight"] = unif((d_in_proj, D), 1.0 / math.sqrt(D))
        p[pre + "conv1d.weight"] = unif((Cd, 1, K), 1.0 / math.sqrt(K))   # fan_in = 1 * K
        p[pre + "conv1d.bias"] = unif((Cd,), 1.0 / math.sqrt(K))
        lo, hi = math.log(c["time_step_min"]), math.log(c["time_step_max"])
        dt = torch.exp(torch.rand((H,), generator=g, dtype=f32) * (hi - lo) + lo)
        dt = torch.clamp(dt, min=c["time_step_floor"])
        p[pre + "dt_bias"] = dt + torch.log(-torch.expm1(-dt))         # softplus^-1(dt)
        p[pre + "A_log"] = torch.log(torch.rand((H,), generator=g, dtype=f32) * 15.0 + 1.0)
        p[pre + "D"] = torch.ones((H,), dtype=f32)
        p[pre + "norm.weight"] = torch.ones((I,), dtype=f32)
        p[pre + "out_proj.weight"] = unif((D, I), 1.0 / math.sqrt(I)) / math.sqrt(nl)
        p["backbone.layers.%d.norm.weight" % i] = torch.ones((D,), dtype=f32)
    p["backbone.norm_f.weight"] = torch.ones((D,), dtype=f32)
    return p


def perturb(p, c, seed, dt_shift, dt_scale):
    """Move every parameter off its special initial value, so that a wrong equation for
    any of them changes the result:
      in_proj  x sqrt(3) (the projections of the unit-RMS h then have unit variance),
               and its H dt rows x dt_scale more (so that dt varies along the sequence);
      conv1d.weight x sqrt(3);  conv1d.bias += 0.2 N(0,1);
      dt_bias  += dt_shift + 0.5 N(0,1) (dt_shift 3 (a) / 4 (b), dt_scale 2 (a) / 1.5 (b):
               median dt ~ 0.2 (a) / 0.4 (b), so that the SSM term matters;
               in mamba2_b some dt fall below / above time_step_limit);
      A_log    += 0.3 N(0,1);  D = 1 + 0.5 N(0,1);
      every norm weight (norm, mixer.norm, norm_f) = 1 + 0.2 N(0,1)."""
    g = torch.Generator().manual_seed(seed)
    I, G, N = c["intermediate_size"], c["n_groups"], c["state_size"]
    out = {}
    for name in sorted(p):
        t = p[name].clone()
        k = param_kind(name)
        noise = torch.randn(t.shape, generator=g, dtype=torch.float32)
        if k == "mixer.in_proj.weight":
            t = t * math.sqrt(3.0)
            t[2 * I + 2 * G * N:] *= dt_scale
        elif k == "mixer.conv1d.weight":
            t = t * math.sqrt(3.0)
        elif k == "mixer.conv1d.bias":
            t = t + 0.2 * noise
        elif k == "mixer.dt_bias":
            t = t + dt_shift + 0.5 * noise
        elif k == "mixer.A_log":
            t = t + 0.3 * noise
        elif k == "mixer.D":
            t = t + 0.5 * noise
        elif k in ("norm.weight", "mixer.norm.weight", "norm_f.weight"):
            t = t + 0.2 * noise
        out[name] = t.to(torch.float32).contiguous()
    return out


# ---------------------------------------------------------------------------------------
# The float64 reference
# ---------------------------------------------------------------------------------------


def silu(v):
    return v * torch.sigmoid(v)


def softplus(v):
    # v above 20, log1p(exp(v)) otherwise (torch's and mamba_ssm's threshold)
    return torch.where(v > 20.0, v, torch.log1p(torch.exp(torch.clamp(v, max=20.0))))


def rmsnorm(v, w, eps):
    return v * torch.rsqrt(torch.mean(v * v, dim=-1, keepdim=True) + eps) * w


def gated_rmsnorm(y, z, w, groups, eps=GATED_NORM_EPS):
    """mamba_ssm rms_norm_ref(x=y, z=z, group_size=I/G, norm_before_gate=False)."""
    v = y * silu(z)
    shp = v.shape
    vg = v.reshape(shp[:-1] + (groups, shp[-1] // groups))
    vg = vg * torch.rsqrt(torch.mean(vg * vg, dim=-1, keepdim=True) + eps)
    return vg.reshape(shp) * w


def dt_of(raw, dt_bias, limit):
    dt = softplus(raw + dt_bias)
    return torch.clamp(dt, min=limit[0], max=limit[1])


def scan_recurrent(x, dt, A, Bh, Ch, S0):
    """x (B,L,H,P), dt (B,L,H), A (H), Bh/Ch (B,L,H,N), S0 (B,H,P,N) -> y (B,L,H,P) w/o D, S_L."""
    S = S0
    ys = []
    for t in range(x.shape[1]):
        dA = torch.exp(dt[:, t] * A)                                          # (B, H)
        dBx = dt[:, t, :, None, None] * x[:, t, :, :, None] * Bh[:, t, :, None, :]
        S = dA[:, :, None, None] * S + dBx                                    # (B, H, P, N)
        ys.append(torch.einsum("bhpn,bhn->bhp", S, Ch[:, t]))
    return torch.stack(ys, dim=1), S


def segsum(a):
    """ssd_minimal segsum: out[..., i, j] = sum_{j < k <= i} a[..., k] (j <= i), -inf for j > i."""
    T = a.shape[-1]
    a = a[..., None].expand(*a.shape, T)                                       # ... d e
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)
    a = a.masked_fill(~mask, 0)
    s = torch.cumsum(a, dim=-2)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=0)
    return s.masked_fill(~mask, -INF)


def ssd_minimal_discrete(X, A, Bc, Cc, block_len, initial_states):
    """mamba_ssm ssd_minimal_discrete. X (b, L, h, p), A (b, L, h), B/C (b, L, h, n),
    L a multiple of block_len; initial_states (b, 1, h, p, n). -> Y (b, L, h, p), final (b, h, p, n)."""
    b, L, h, p = X.shape
    c = L // block_len

    def blocks(t):
        return t.reshape((b, c, block_len) + t.shape[2:])

    X, A, Bc, Cc = blocks(X), blocks(A), blocks(Bc), blocks(Cc)
    A = A.permute(0, 3, 1, 2)                                                  # b h c l
    A_cumsum = torch.cumsum(A, dim=-1)
    # 1. intra-chunk (diagonal blocks)
    Lmat = torch.exp(segsum(A))
    Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, Lmat, X)
    # 2. each chunk's state (B terms)
    decay_states = torch.exp(A_cumsum[:, :, :, -1:] - A_cumsum)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_states, X)
    # 3. inter-chunk recurrence (A terms)
    states = torch.cat([initial_states, states], dim=1)
    decay_chunk = torch.exp(segsum(F.pad(A_cumsum[:, :, :, -1], (1, 0))))
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final_state = new_states[:, :-1], new_states[:, -1]
    # 4. state -> output (C terms)
    state_decay_out = torch.exp(A_cumsum)
    Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, states, state_decay_out)
    return (Y_diag + Y_off).reshape(b, L, h, p), final_state


def scan_ssd(x, dt, A, Bh, Ch, S0, chunk):
    """The chunked SSD on X = x dt, A_d = A dt; L padded to a multiple of chunk with
    X = 0, A_d = 0 (dA = 1) steps."""
    Bsz, L, H, P = x.shape
    X = x * dt[..., None]
    Ad = A * dt
    pad = (-L) % chunk
    if pad:
        X = F.pad(X, (0, 0, 0, 0, 0, pad))
        Ad = F.pad(Ad, (0, 0, 0, pad))
        Bh = F.pad(Bh, (0, 0, 0, 0, 0, pad))
        Ch = F.pad(Ch, (0, 0, 0, 0, 0, pad))
    Y, S = ssd_minimal_discrete(X, Ad, Bh, Ch, chunk, S0[:, None])
    return Y[:, :L], S


def mixer_forward(p, h, c, state, impl, trace=None):
    """p: the layer's mixer.* tensors (float64); h (B, L, D); state (conv (B, Cd, K),
    ssm (B, H, P, N)) or None (zeros). -> out (B, L, D), new state."""
    Bsz, L, _ = h.shape
    I, H, P = c["intermediate_size"], c["num_heads"], c["head_dim"]
    G, N, K, Cd = c["n_groups"], c["state_size"], c["conv_kernel"], c["conv_dim"]
    if state is None:
        state = (torch.zeros(Bsz, Cd, K, dtype=h.dtype), torch.zeros(Bsz, H, P, N, dtype=h.dtype))
    conv_state, S0 = state

    zxbcdt = h @ p["in_proj.weight"].T
    z, xBC_raw, dt_raw = torch.split(zxbcdt, [I, Cd, H], dim=-1)

    # depthwise causal conv: the carried raw inputs (the last K-1 of conv_state) come first
    hist = torch.cat([conv_state.transpose(1, 2), xBC_raw], dim=1)             # (B, K + L, Cd)
    new_conv = hist[:, -K:].transpose(1, 2)                                     # last K, newest last
    xpad = hist[:, 1:]                                                          # (B, K-1 + L, Cd)
    w = p["conv1d.weight"][:, 0, :]                                             # (Cd, K)
    acc = p["conv1d.bias"].expand(Bsz, L, Cd)
    for k in range(K):
        acc = acc + w[:, k] * xpad[:, k:k + L]
    xBC = silu(acc)

    x, Bm, Cm = torch.split(xBC, [I, G * N, G * N], dim=-1)
    x = x.reshape(Bsz, L, H, P)
    variant = c.get("variant")  # a deliberate mistake, for the sensitivity figures only
    rep = H // G
    Bh = Bm.reshape(Bsz, L, G, N).repeat_interleave(rep, dim=2)                # (B, L, H, N)
    Ch = Cm.reshape(Bsz, L, G, N).repeat_interleave(rep, dim=2)
    if variant == "group h % G":
        Bh = Bm.reshape(Bsz, L, G, N).repeat(1, 1, rep, 1)
        Ch = Cm.reshape(Bsz, L, G, N).repeat(1, 1, rep, 1)
    A = -torch.exp(p["A_log"])
    dt = dt_of(dt_raw, p["dt_bias"],
               (0.0, INF) if variant == "no dt clamp" else c["time_step_limit"])
    if trace is not None:
        trace.append(softplus(dt_raw + p["dt_bias"]).detach())

    if impl == "ssd":
        y, S = scan_ssd(x, dt, A, Bh, Ch, S0, c["chunk_size"])
    elif impl == "recurrent":
        y, S = scan_recurrent(x, dt, A, Bh, Ch, S0)
    else:
        raise ValueError(impl)
    if variant == "no SSM term":
        y = y * 0
    y = y + p["D"][:, None] * x
    y = y.reshape(Bsz, L, I)
    out = gated_rmsnorm(y, z, p["norm.weight"], 1 if variant == "ungrouped norm" else G)
    return out @ p["out_proj.weight"].T, (new_conv, S)


def mixer_params(params, i):
    pre = "backbone.layers.%d.mixer." % i
    return {k[len(pre):]: v for k, v in params.items() if k.startswith(pre)}


def model_forward(params, c, ids, states=None, impl="ssd", trace=None):
    """-> logits (B, L, V), hidden_f (B, L, D), new states [(conv, ssm)] per layer."""
    emb = params["backbone.embeddings.weight"]
    eps = c["layer_norm_epsilon"]
    r = emb[ids]
    new_states = []
    for i in range(c["num_hidden_layers"]):
        hn = rmsnorm(r, params["backbone.layers.%d.norm.weight" % i], eps)
        out, st = mixer_forward(mixer_params(params, i), hn, c,
                                None if states is None else states[i], impl, trace)
        r = r + out
        new_states.append(st)
    hidden_f = rmsnorm(r, params["backbone.norm_f.weight"], eps)
    return hidden_f @ emb.T, hidden_f, new_states


def lm_loss(logits, ids):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))


def mixer_step(p, h, c, conv_state, S):
    """mamba_ssm Mamba2.step for one token: h (B, D); conv_state (B, Cd, K), S (B, H, P, N)."""
    Bsz = h.shape[0]
    I, H, P = c["intermediate_size"], c["num_heads"], c["head_dim"]
    G, N, Cd = c["n_groups"], c["state_size"], c["conv_dim"]
    zxbcdt = h @ p["in_proj.weight"].T
    z, xBC, dt = torch.split(zxbcdt, [I, Cd, H], dim=-1)
    conv_state = torch.roll(conv_state, shifts=-1, dims=-1).clone()
    conv_state[:, :, -1] = xBC
    xBC = torch.sum(conv_state * p["conv1d.weight"][:, 0, :], dim=-1) + p["conv1d.bias"]
    xBC = silu(xBC)
    x, Bm, Cm = torch.split(xBC, [I, G * N, G * N], dim=-1)
    A = -torch.exp(p["A_log"])
    dt = dt_of(dt, p["dt_bias"], c["time_step_limit"])                         # (B, H)
    dA = torch.exp(dt * A)
    x = x.reshape(Bsz, H, P)
    Bh = Bm.reshape(Bsz, G, N).repeat_interleave(H // G, dim=1)
    Ch = Cm.reshape(Bsz, G, N).repeat_interleave(H // G, dim=1)
    dBx = torch.einsum("bh,bhn,bhp->bhpn", dt, Bh, x)
    S = S * dA[:, :, None, None] + dBx
    y = torch.einsum("bhpn,bhn->bhp", S, Ch) + p["D"][:, None] * x
    y = gated_rmsnorm(y.reshape(Bsz, I), z, p["norm.weight"], G)
    return y @ p["out_proj.weight"].T, conv_state, S


def model_decode(params, c, ids):
    """Token by token from zero states; -> logits (B, L, V), final states."""
    Bsz, L = ids.shape
    emb = params["backbone.embeddings.weight"]
    eps = c["layer_norm_epsilon"]
    nl = c["num_hidden_layers"]
    states = [(torch.zeros(Bsz, c["conv_dim"], c["conv_kernel"], dtype=torch.float64),
               torch.zeros(Bsz, c["num_heads"], c["head_dim"], c["state_size"], dtype=torch.float64))
              for _ in range(nl)]
    out = []
    for t in range(L):
        r = emb[ids[:, t]]
        for i in range(nl):
            hn = rmsnorm(r, params["backbone.layers.%d.norm.weight" % i], eps)
            o, cs, S = mixer_step(mixer_params(params, i), hn, c, *states[i])
            states[i] = (cs, S)
            r = r + o
        out.append(rmsnorm(r, params["backbone.norm_f.weight"], eps) @ emb.T)
    return torch.stack(out, dim=1), states


def rel(a, b):
    a = a.detach().double()
    b = b.detach().double()
    return float(torch.linalg.norm((a - b).reshape(-1)) / torch.linalg.norm(b.reshape(-1)))


def states_err(sa, sb):
    return max(max(rel(a[0], b[0]), rel(a[1], b[1])) for a, b in zip(sa, sb))


# ---------------------------------------------------------------------------------------
# One fixture
# ---------------------------------------------------------------------------------------


def finite_difference_check(p64, grads, c, ids, seed):
    """Central differences of the float64 loss on a few entries of every parameter: the
    entry of largest |grad| and two random entries among those with |grad| >= 0.1 max.
    Fourth-order stencil (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h, h = 1e-3 x the RMS of
    the parameter tensor (the scale on which the loss varies with it)."""
    gen = np.random.default_rng(seed)
    worst = 0.0
    worst_name = None
    n_checked = 0

    def loss_at(pp):
        with torch.no_grad():
            return float(lm_loss(model_forward(pp, c, ids)[0], ids))

    print("  central differences (float64), per parameter: worst rel err of its entries")
    for name in sorted(p64):
        g = grads[name].reshape(-1)
        ga = g.abs()
        big = torch.nonzero(ga >= 0.1 * ga.max()).reshape(-1).tolist()
        picks = [int(torch.argmax(ga))]
        others = [j for j in big if j != picks[0]]
        if others:
            picks += [others[k] for k in gen.choice(len(others), size=min(2, len(others)),
                                                   replace=False)]
        h = 1e-3 * max(float(p64[name].pow(2).mean().sqrt()), 1e-3)
        errs = []
        for j in picks:
            base = p64[name].reshape(-1)[j].item()
            vals = {}
            for s in (-2, -1, 1, 2):
                q = p64[name].clone()
                q.view(-1)[j] = base + s * h
                pp = dict(p64)
                pp[name] = q
                vals[s] = loss_at(pp)
            fd = (vals[-2] - 8 * vals[-1] + 8 * vals[1] - vals[2]) / (12 * h)
            an = g[j].item()
            errs.append(abs(fd - an) / abs(an))
            n_checked += 1
        e = max(errs)
        print("    %-44s %d entries  h %.1e  rel %.2e" % (name, len(picks), h, e))
        if e > worst:
            worst, worst_name = e, name
    return worst, worst_name, n_checked


def make_fixture(name, spec, out_root):
    print("== %s" % name)
    c = full_config(spec)
    V, D, I, H, P = (c["vocab_size"], c["hidden_size"], c["intermediate_size"],
                     c["num_heads"], c["head_dim"])
    N, G, K, nl = c["state_size"], c["n_groups"], c["conv_kernel"], c["num_hidden_layers"]
    Bsz, L = spec["batch"], spec["seqlen"]
    seed = spec["seed"]
    print("V=%d D=%d layers=%d I=%d H=%d P=%d G=%d N=%d K=%d conv_dim=%d chunk=%d "
          "dt_limit=%r; B=%d L=%d" % (V, D, nl, I, H, P, G, N, K, c["conv_dim"], c["chunk_size"],
                                      c["time_step_limit"], Bsz, L))

    p32 = perturb(init_params(c, seed), c, seed + 1, spec["dt_shift"], spec["dt_scale"])
    names = ["backbone.embeddings.weight"] + sum((layer_names(i) for i in range(nl)), []) + \
        ["backbone.norm_f.weight"]
    assert sorted(names) == sorted(p32)
    g = torch.Generator().manual_seed(seed + 2)
    ids = torch.randint(0, V, (Bsz, L), generator=g, dtype=torch.int64)

    # float64 from the float32-rounded parameters
    p64 = {n: t.double().requires_grad_(True) for n, t in p32.items()}

    # -- the fixture: chunked SSD, float64 autograd
    trace = []
    logits, hidden_f, states = model_forward(p64, c, ids, impl="ssd", trace=trace)
    loss = lm_loss(logits, ids)
    grads = dict(zip(names, torch.autograd.grad(loss, [p64[n] for n in names])))
    print("loss %.10f (log V = %.4f)" % (loss.item(), math.log(V)))

    dt_all = torch.cat([t.reshape(-1) for t in trace])
    lo, hi = c["time_step_limit"]
    f_lo = float((dt_all < lo).double().mean())
    f_hi = float((dt_all > hi).double().mean())
    print("dt = softplus(dt + dt_bias): min %.3g median %.3g max %.3g; clamped below %.1f%%, "
          "above %.1f%%, free %.1f%% (of %d values)"
          % (dt_all.min(), dt_all.median(), dt_all.max(), 100 * f_lo, 100 * f_hi,
             100 * (1 - f_lo - f_hi), dt_all.numel()))
    if lo > 0 or hi < INF:
        assert f_lo > 0 and f_hi > 0 and f_lo + f_hi < 0.5, "choose the dt perturbation again"
        for i, t in enumerate(trace):
            fl, fh = float((t < lo).double().mean()), float((t > hi).double().mean())
            print("  layer %d: clamped below %.1f%%, above %.1f%%" % (i, 100 * fl, 100 * fh))
            assert fl > 0 and fh > 0

    # -- the plain recurrence: same function, same final states, same gradients
    logits_r, hidden_r, states_r = model_forward(p64, c, ids, impl="recurrent")
    loss_r = lm_loss(logits_r, ids)
    grads_r = dict(zip(names, torch.autograd.grad(loss_r, [p64[n] for n in names])))
    e_impl = rel(logits, logits_r)
    e_impl_h = rel(hidden_f, hidden_r)
    e_impl_s = states_err(states, states_r)
    e_impl_g = max(rel(grads[n], grads_r[n]) for n in names)
    print("SSD vs recurrence: logits rel %.2e, hidden_f %.2e, final states %.2e, gradients %.2e"
          % (e_impl, e_impl_h, e_impl_s, e_impl_g))
    assert max(e_impl, e_impl_h, e_impl_s, e_impl_g) < TOL_IMPL

    with torch.no_grad():
        # -- step-by-step decode
        logits_d, states_d = model_decode(p64, c, ids)
        e_dec = rel(logits_d, logits)
        e_dec_s = states_err(states_d, states)
        print("decode (mamba_ssm step) vs parallel: logits rel %.2e, final states %.2e"
              % (e_dec, e_dec_s))
        assert e_dec < TOL_IMPL and e_dec_s < TOL_IMPL

        # -- two windows carrying (conv_state, ssm_state), both scan implementations
        e_win = 0.0
        for impl in ("ssd", "recurrent"):
            for s in spec["splits"]:
                l1, _, st1 = model_forward(p64, c, ids[:, :s], impl=impl)
                l2, _, st2 = model_forward(p64, c, ids[:, s:], states=st1, impl=impl)
                e = max(rel(torch.cat([l1, l2], dim=1), logits), states_err(st2, states))
                e_win = max(e_win, e)
        print("two windows (split at %s; ssd and recurrent) vs one pass: worst rel %.2e"
              % (",".join(map(str, spec["splits"])), e_win))
        assert e_win < TOL_IMPL

    # -- how far common mistakes move the logits (what a parity test with a tolerance of
    #    ~1e-4 can see); the SSM term's share of y
    with torch.no_grad():
        sens = {}
        variants = ["no SSM term", "ungrouped norm", "group h % G", "no dt clamp"]
        for v in variants:
            if v in ("ungrouped norm", "group h % G") and G == 1:
                continue
            if v == "no dt clamp" and lo <= 0 and hi == INF:
                continue
            sens[v] = rel(model_forward(p64, dict(c, variant=v), ids)[0], logits)
        print("sensitivity, logits rel change: " +
              ", ".join("%s %.2e" % kv for kv in sens.items()))
        assert all(e > 1e-3 for e in sens.values())

    # -- every parameter matters
    for n in names:
        assert grads[n].abs().max() > 0, "zero gradient for " + n
    print("%-44s %-10s %10s %10s" % ("gradient", "shape", "|grad|", "|param|"))
    for n in names:
        print("%-44s %-10s %10.3e %10.3e" % (n, "x".join(map(str, p32[n].shape)),
                                            grads[n].norm(), p32[n].norm()))

    # -- central differences
    p64d = {n: t.detach() for n, t in p64.items()}
    e_fd, e_fd_name, n_fd = finite_difference_check(p64d, grads, c, ids, seed + 3)
    print("central differences vs autograd: %d entries, worst rel %.2e (%s)"
          % (n_fd, e_fd, e_fd_name))
    assert e_fd < TOL_FD

    # -- the files
    folder = os.path.join(out_root, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(config_json(c))
    model_path = os.path.join(folder, "model.safetensors")
    save_safetensors(model_path, {n: p32[n].numpy() for n in names}, {"format": "pt"})

    tensors = {
        "input_ids": ids.numpy(),
        "logits": logits.detach().float().numpy(),
        "loss": loss.detach().float().reshape(1).numpy(),
        "hidden_f": hidden_f.detach().float().numpy(),
    }
    for n in names:
        tensors["grad." + n] = grads[n].float().numpy()
    for i, (cs, S) in enumerate(states):
        tensors["state.%d.conv" % i] = cs.detach().float().numpy()
        tensors["state.%d.ssm" % i] = S.detach().float().numpy()
    meta = {
        "format": "pt",
        "fixture": name,
        "generator": "tests/golden/make_golden_mamba2.py (float64 torch reference of "
                     "mamba_ssm Mamba2 + ssd_minimal_discrete)",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "seed": str(seed),
        "loss": repr(loss.item()),
        "batch": str(Bsz),
        "seqlen": str(L),
        "config": json.dumps({k: c[k] for k in sorted(c)}),
        "gated_norm": "grouped (mamba_ssm RMSNormGated group_size = d_ssm / ngroups), eps 1e-5",
        "dt_clamped_below": "%.4f" % f_lo,
        "dt_clamped_above": "%.4f" % f_hi,
        "ssd_vs_recurrent_rel_err": "%.3e" % e_impl,
        "decode_vs_parallel_rel_err": "%.3e" % e_dec,
        "fd_grad_worst_rel_err": "%.3e" % e_fd,
        "note": "loss = mean CE of logits[:, :-1] vs input_ids[:, 1:]; computed in float64 from "
                "the float32 parameters, stored F32; state.{i}.conv = last K raw xBC inputs "
                "(B, conv_dim, K), newest last; state.{i}.ssm (B, H, P, N)",
    }
    exp_path = os.path.join(folder, "expected.safetensors")
    save_safetensors(exp_path, tensors, meta)

    # -- the files alone reproduce the fixture
    m, mm = load_safetensors(model_path)
    assert mm == {"format": "pt"} and list(m) == sorted(names)
    e_t, em = load_safetensors(exp_path)
    assert em["loss"] == repr(loss.item())
    for n in names:
        assert m[n].dtype == np.float32 and np.array_equal(m[n], p32[n].numpy()), n
    reload64 = {n: torch.from_numpy(a).double() for n, a in m.items()}
    with open(os.path.join(folder, "config.json")) as f:
        cj = json.load(f)
    c2 = full_config(dict(model=dict(
        vocab_size=cj["vocab_size"], hidden_size=cj["hidden_size"],
        num_hidden_layers=cj["num_hidden_layers"], expand=cj["expand"], head_dim=cj["head_dim"],
        state_size=cj["state_size"], n_groups=cj["n_groups"], conv_kernel=cj["conv_kernel"],
        chunk_size=cj["chunk_size"], time_step_limit=tuple(cj["time_step_limit"]))))
    assert cj["num_heads"] == c2["num_heads"]
    with torch.no_grad():
        lg2 = model_forward(reload64, c2, torch.from_numpy(e_t["input_ids"]))[0]
    e_reload = rel(lg2.float(), torch.from_numpy(e_t["logits"]))
    print("reloaded from the files: logits rel %.2e" % e_reload)
    assert e_reload < 1e-6
    for f in sorted(os.listdir(folder)):
        print("  %-22s %8d bytes" % (f, os.path.getsize(os.path.join(folder, f))))
    return dict(loss=loss.item(), e_impl=max(e_impl, e_impl_h, e_impl_s, e_impl_g),
                e_dec=max(e_dec, e_dec_s), e_win=e_win, e_fd=e_fd, n_fd=n_fd,
                f_lo=f_lo, f_hi=f_hi)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                    help="folder that receives mamba2_a/ and mamba2_b/ (default: beside this script)")
    ap.add_argument("--only", choices=sorted(CONFIGS), help="make one fixture only")
    args = ap.parse_args()

    torch.set_num_threads(1)  # one fixed order of every float64 reduction
    torch.set_default_dtype(torch.float32)
    print("torch %s, numpy %s, python %s" % (torch.__version__, np.__version__,
                                            sys.version.split()[0]))
    res = {}
    for name, spec in CONFIGS.items():
        if args.only and name != args.only:
            continue
        res[name] = make_fixture(name, spec, args.out)
    for name, r in res.items():
        print("%s: loss %.8f; SSD vs recurrence %.1e; decode %.1e; windows %.1e; "
              "finite differences %.1e (%d entries); dt clamped %.1f%% below, %.1f%% above"
              % (name, r["loss"], r["e_impl"], r["e_dec"], r["e_win"], r["e_fd"], r["n_fd"],
                 100 * r["f_lo"], 100 * r["f_hi"]))


if __name__ == "__main__":
    main()
