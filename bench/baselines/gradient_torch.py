#!/usr/bin/env python3
"""PyTorch autograd baseline for `polyengine bench gradient`: token-locus gradient vectors on the same workload.

Each vector is d(sum_d hook[row, p, d]) / d(token embedding at p) — only the token embeddings require grad, the
weights do not, so autograd forms no weight gradients; the forward stops at the hook's layer, as PolyEngine's does.
Plain torch ops written from HF semantics (torch_forward.py's building blocks), fp32, on the same safetensors weights.

  python3 gradient_torch.py --model DIR --workload W.safetensors --mode batched --threads 2 --check --json

Modes: paper   — per row one forward, then one backward per position (retain_graph), as the authors' TL recipe runs;
       batched — every (row, position) its own batch row, one forward and one backward for all of them;
       vmap    — one forward of the rows, then every seed's backward at once through autograd.grad(is_grads_batched=True)
                 (PolyEngine's shape of the work: one forward, a batched backward).
--check compares each vector with PolyEngine's (the workload's `gradients`): max |diff| / max |g| per vector.
"""
import argparse, json, math, struct, time

import torch
import torch.nn.functional as F

from torch_forward import causal_attention, ln, load, read_safetensors


def parse_hook(name):
    # blocks.L.hook_mlp_out / hook_attn_out / hook_resid_post
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or parts[2] not in ("hook_mlp_out", "hook_attn_out", "hook_resid_post"):
        raise SystemExit(f"gradient_torch.py: hook {name} is not supported (blocks.L.hook_mlp_out, hook_attn_out or hook_resid_post)")
    return int(parts[1]), parts[2]


def gpt2_to_hook(cfg, w, ids, emb, layer, point):
    """The hook's value [B, T, d] with the token embeddings `emb` [B, T, d] as the leaf."""
    p = "transformer." if "transformer.wte.weight" in w else ""
    B, T = ids.shape
    d, H = cfg["n_embd"], cfg["n_head"]
    dh, eps = d // H, cfg.get("layer_norm_epsilon", 1e-5)
    x = emb + w[p + "wpe.weight"][:T]
    for l in range(layer + 1):
        q_ = f"{p}h.{l}."
        a = ln(x, w[q_ + "ln_1.weight"], w[q_ + "ln_1.bias"], eps)
        qkv = torch.addmm(w[q_ + "attn.c_attn.bias"], a.reshape(-1, d), w[q_ + "attn.c_attn.weight"]).view(B, T, 3, H, dh)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        z = causal_attention(q, k, v, 1.0 / math.sqrt(dh)).transpose(1, 2).reshape(B * T, d)
        attn = torch.addmm(w[q_ + "attn.c_proj.bias"], z, w[q_ + "attn.c_proj.weight"]).view(B, T, d)
        if l == layer and point == "hook_attn_out":
            return attn
        x = x + attn
        m = ln(x, w[q_ + "ln_2.weight"], w[q_ + "ln_2.bias"], eps)
        u = F.gelu(torch.addmm(w[q_ + "mlp.c_fc.bias"], m.reshape(-1, d), w[q_ + "mlp.c_fc.weight"]), approximate="tanh")
        mlp = torch.addmm(w[q_ + "mlp.c_proj.bias"], u, w[q_ + "mlp.c_proj.weight"]).view(B, T, d)
        if l == layer and point == "hook_mlp_out":
            return mlp
        x = x + mlp
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--mode", choices=["paper", "batched", "vmap"], default="batched")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg, w = load(a.model)
    if not cfg["architectures"][0].startswith("GPT2"):
        raise SystemExit("gradient_torch.py: GPT-2 models only (the benchmark's shape is GPT-2-small)")
    wl = read_safetensors(a.workload)
    with open(a.workload, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hook = json.loads(f.read(n))["__metadata__"]["hook"]
    layer, point = parse_hook(hook)
    ids = wl["input_ids"].long()
    rows, pos = wl["seed_row"].long(), wl["seed_position"].long()
    wte = w.get("transformer.wte.weight", w.get("wte.weight"))
    n = len(rows)

    def run(rows, pos):
        n = len(rows)
        out = torch.empty(n, wte.shape[1])
        if a.mode == "vmap":
            emb = wte[ids].clone().requires_grad_(True)
            h = gpt2_to_hook(cfg, w, ids, emb, layer, point)
            cot = torch.zeros((n,) + tuple(h.shape))
            cot[torch.arange(n), rows, pos] = 1.0
            (g,) = torch.autograd.grad(h, emb, grad_outputs=cot, is_grads_batched=True)
            out[:] = g[torch.arange(n), rows, pos]
        elif a.mode == "batched":
            emb = wte[ids[rows]].clone().requires_grad_(True)
            h = gpt2_to_hook(cfg, w, ids[rows], emb, layer, point)
            h[torch.arange(n), pos].sum().backward()
            out[:] = emb.grad[torch.arange(n), pos]
        else:
            for r in range(ids.shape[0]):
                emb = wte[ids[r:r + 1]].clone().requires_grad_(True)
                h = gpt2_to_hook(cfg, w, ids[r:r + 1], emb, layer, point)
                mine = (rows == r).nonzero().flatten().tolist()
                for i, k in enumerate(mine):
                    emb.grad = None
                    h[0, pos[k]].sum().backward(retain_graph=i + 1 < len(mine))
                    out[k] = emb.grad[0, pos[k]]
        return out

    # As PolyEngine's bench: the first row's seeds once (warm-up), then the whole workload twice — cold, then warm.
    first = (rows == 0).nonzero().flatten()
    run(rows[first], pos[first])
    t = time.perf_counter()
    run(rows, pos)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    out = run(rows, pos)
    s = time.perf_counter() - t
    res = {"mode": a.mode, "vectors_per_second": n / s, "cold_vectors_per_second": n / cold, "vectors": n, "seconds": s, "cold_seconds": cold, "threads": a.threads}
    if a.check:
        ours = wl["gradients"]
        rel = ((out - ours).abs().max(dim=1).values / ours.abs().max(dim=1).values).max().item()
        res["max_rel_diff"] = rel
        if not rel <= 1e-4:
            raise SystemExit(f"gradient_torch.py: PolyEngine's gradients differ from autograd's by {rel:.3g} of max |g| (want <= 1e-4)")
    print(json.dumps(res) if a.json else res)


if __name__ == "__main__":
    main()
