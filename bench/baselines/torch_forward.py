#!/usr/bin/env python3
"""PyTorch baseline: the same GPT-2 / GPT-NeoX forward pass as PolyEngine, on the same safetensors weights.

Plain torch ops written from HF transformers' semantics (docs/FORMATS.md §1.2, §3), eager, fp32, inference mode —
what a researcher's hooked PyTorch forward costs without TransformerLens's overhead. Debian's python3-torch
(1.13.1) with OpenBLAS (libopenblas0-pthread); see forward_vs_torch.sh.

  python3 torch_forward.py --model DIR --batch 8 --seq 128 --threads 2 --iters 5 [--json]
  python3 torch_forward.py --model DIR --check OURS.safetensors   # max |logits - ours| on OURS' input_ids
  python3 torch_forward.py --model DIR --device cuda [--compile]  # the same on a GPU, eager or torch.compile'd
"""
import argparse, json, math, os, statistics, struct, sys, time

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        if t["dtype"] == "BF16":
            u = np.frombuffer(data[b:e], dtype=np.uint16).astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(data[b:e], dtype=DTYPES[t["dtype"]])
        out[name] = torch.from_numpy(arr.reshape(t["shape"]).copy())
    return out


def load(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = {k: (v.float() if v.is_floating_point() else v) for k, v in read_safetensors(os.path.join(folder, "model.safetensors")).items()}
    return cfg, w


def ln(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def causal_attention(q, k, v, scale):
    # q, k, v: [B, H, T, dh]
    T = q.shape[-2]
    s = (q @ k.transpose(-1, -2)) * scale
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
    return torch.softmax(s, dim=-1) @ v


def gpt2_forward(cfg, w, ids):
    p = "transformer." if "transformer.wte.weight" in w else ""
    B, T = ids.shape
    d, H = cfg["n_embd"], cfg["n_head"]
    dh, eps = d // H, cfg.get("layer_norm_epsilon", 1e-5)
    x = w[p + "wte.weight"][ids] + w[p + "wpe.weight"][:T]
    for l in range(cfg["n_layer"]):
        q_ = f"{p}h.{l}."
        a = ln(x, w[q_ + "ln_1.weight"], w[q_ + "ln_1.bias"], eps)
        qkv = torch.addmm(w[q_ + "attn.c_attn.bias"], a.view(-1, d), w[q_ + "attn.c_attn.weight"]).view(B, T, 3, H, dh)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        z = causal_attention(q, k, v, 1.0 / math.sqrt(dh)).transpose(1, 2).reshape(B * T, d)
        x = x + torch.addmm(w[q_ + "attn.c_proj.bias"], z, w[q_ + "attn.c_proj.weight"]).view(B, T, d)
        m = ln(x, w[q_ + "ln_2.weight"], w[q_ + "ln_2.bias"], eps)
        u = F.gelu(torch.addmm(w[q_ + "mlp.c_fc.bias"], m.view(-1, d), w[q_ + "mlp.c_fc.weight"]), approximate="tanh")
        x = x + torch.addmm(w[q_ + "mlp.c_proj.bias"], u, w[q_ + "mlp.c_proj.weight"]).view(B, T, d)
    x = ln(x, w[p + "ln_f.weight"], w[p + "ln_f.bias"], eps)
    head = w.get("lm_head.weight", w[p + "wte.weight"])
    return x @ head.T


def neox_forward(cfg, w, ids):
    B, T = ids.shape
    d, H = cfg["hidden_size"], cfg["num_attention_heads"]
    dh, eps = d // H, cfg.get("layer_norm_eps", 1e-5)
    r = int(dh * cfg.get("rotary_pct", 0.25))
    base = cfg.get("rotary_emb_base", 10000)
    inv = 1.0 / (base ** (torch.arange(0, r, 2).float() / r))
    ang = torch.outer(torch.arange(T).float(), inv)
    emb = torch.cat((ang, ang), -1)
    cos, sin = emb.cos(), emb.sin()

    cos, sin = cos.to(ids.device), sin.to(ids.device)

    def rot(x):
        xr, xp = x[..., :r], x[..., r:]
        half = torch.cat((-xr[..., r // 2:], xr[..., : r // 2]), -1)
        return torch.cat((xr * cos + half * sin, xp), -1)

    x = w["gpt_neox.embed_in.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"gpt_neox.layers.{l}."
        a = ln(x, w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"], eps)
        qkv = F.linear(a, w[p + "attention.query_key_value.weight"], w[p + "attention.query_key_value.bias"]).view(B, T, H, 3 * dh)
        q, k, v = (qkv[..., i * dh:(i + 1) * dh].transpose(1, 2) for i in range(3))
        z = causal_attention(rot(q), rot(k), v, dh ** -0.5).transpose(1, 2).reshape(B, T, d)
        attn = F.linear(z, w[p + "attention.dense.weight"], w[p + "attention.dense.bias"])
        if cfg.get("use_parallel_residual", True):
            m = ln(x, w[p + "post_attention_layernorm.weight"], w[p + "post_attention_layernorm.bias"], eps)
        else:
            x = x + attn
            m = ln(x, w[p + "post_attention_layernorm.weight"], w[p + "post_attention_layernorm.bias"], eps)
        mlp = F.linear(F.gelu(F.linear(m, w[p + "mlp.dense_h_to_4h.weight"], w[p + "mlp.dense_h_to_4h.bias"])),
                       w[p + "mlp.dense_4h_to_h.weight"], w[p + "mlp.dense_4h_to_h.bias"])
        x = (mlp + attn + x) if cfg.get("use_parallel_residual", True) else (x + mlp)
    x = ln(x, w["gpt_neox.final_layer_norm.weight"], w["gpt_neox.final_layer_norm.bias"], eps)
    return x @ w["embed_out.weight"].T


def forward(cfg, w, ids):
    arch = cfg["architectures"][0]
    return gpt2_forward(cfg, w, ids) if arch.startswith("GPT2") else neox_forward(cfg, w, ids)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check", help="PolyEngine `run --out` file: compare logits on its input_ids")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward (PyTorch 2.x)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg, w = load(a.model)
    dev = torch.device(a.device)
    w = {k: v.to(dev) for k, v in w.items()}
    vocab = cfg["vocab_size"]
    fwd = torch.compile(forward) if a.compile else forward
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        if a.check:
            ours = read_safetensors(a.check)
            logits = fwd(cfg, w, ours["input_ids"].long().to(dev)).cpu()
            diff = (logits - ours["logits"]).abs().max().item()
            print(json.dumps({"max_abs_diff_logits": diff, "shape": list(logits.shape)}))
            return
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, vocab, (a.batch, a.seq), generator=g).to(dev)
        fwd(cfg, w, ids)  # warm-up (and compilation)
        sync()
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            fwd(cfg, w, ids)
            sync()
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    res = {"tokens_per_second": a.batch * a.seq / med, "median_seconds": med, "batch": a.batch, "seq": a.seq,
           "threads": torch.get_num_threads(), "device": a.device + (" compiled" if a.compile else ""), "torch": torch.__version__,
           "blas": os.path.realpath("/etc/alternatives/libblas.so.3-x86_64-linux-gnu")}
    print(json.dumps(res) if a.json else f"torch {res['torch']} ({res['blas']}): {res['tokens_per_second']:.1f} tokens/s (median {med*1000:.1f} ms)")


if __name__ == "__main__":
    sys.exit(main())
