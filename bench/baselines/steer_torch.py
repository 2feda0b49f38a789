#!/usr/bin/env python3
"""PyTorch baselines of a steering sweep, on the workload `polyengine bench steer --write-workload DIR` wrote.

Each intervention adds scale * v/|v| to blocks.L.hook_resid_post at every position of a prompt (or from the workload's
"from" position on); each row's metrics come
from the next-token distribution P at the prompt's last position: weighted cosine sum_t P_t max_u cos(E_t, E_u) over the
targets u (unit rows of W_E), overlap sum_u P_u, and KL(P_clean || P_edited). Three procedures, same weights and threads:

  paper    one hooked forward per prompt x vector x scale, batch 1, the logits of every position as HF returns them
           (the authors' procedure); --limit N runs only the first N interventions (it is slow) and reports the rate.
  batched  per prompt, all vectors x scales as batch rows of one hooked forward, the LM head at the last position only
           (the issue's "best batched PyTorch").
  prefix   as batched, but the clean prefix (blocks 0..L) runs once per prompt and only blocks L+1.. run per row.

  python3 steer_torch.py --model DIR --workload DIR --mode batched --threads 2 [--json] [--check]

--check compares the metrics with the workload's rows.csv (PolyEngine's) and prints the max |difference| per metric.
GPT-2 only (the workload is GPT-2 small's). Debian's python3-torch (1.13.1) with OpenBLAS; see steer_vs_torch.sh.
"""
import argparse, csv, json, math, os, sys, time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_forward import causal_attention, ln, load, read_safetensors  # noqa: E402


class Gpt2:
    def __init__(self, cfg, w):
        self.p = "transformer." if "transformer.wte.weight" in w else ""
        self.w, self.cfg = w, cfg
        self.d, self.H = cfg["n_embd"], cfg["n_head"]
        self.eps = cfg.get("layer_norm_epsilon", 1e-5)
        self.head = w.get("lm_head.weight", w[self.p + "wte.weight"])

    def embed(self, ids):
        T = ids.shape[1]
        return self.w[self.p + "wte.weight"][ids] + self.w[self.p + "wpe.weight"][:T]

    def blocks(self, x, first, last):
        """Blocks first..last (inclusive) on x [B, T, d]."""
        w, p, d, H = self.w, self.p, self.d, self.H
        B, T, _ = x.shape
        dh = d // H
        for l in range(first, last + 1):
            q_ = f"{p}h.{l}."
            a = ln(x, w[q_ + "ln_1.weight"], w[q_ + "ln_1.bias"], self.eps)
            qkv = torch.addmm(w[q_ + "attn.c_attn.bias"], a.reshape(-1, d), w[q_ + "attn.c_attn.weight"]).view(B, T, 3, H, dh)
            q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
            z = causal_attention(q, k, v, 1.0 / math.sqrt(dh)).transpose(1, 2).reshape(B * T, d)
            x = x + torch.addmm(w[q_ + "attn.c_proj.bias"], z, w[q_ + "attn.c_proj.weight"]).view(B, T, d)
            m = ln(x, w[q_ + "ln_2.weight"], w[q_ + "ln_2.bias"], self.eps)
            u = F.gelu(torch.addmm(w[q_ + "mlp.c_fc.bias"], m.reshape(-1, d), w[q_ + "mlp.c_fc.weight"]), approximate="tanh")
            x = x + torch.addmm(w[q_ + "mlp.c_proj.bias"], u, w[q_ + "mlp.c_proj.weight"]).view(B, T, d)
        return x

    def logits(self, x):
        return ln(x, self.w[self.p + "ln_f.weight"], self.w[self.p + "ln_f.bias"], self.eps) @ self.head.T

    @property
    def n_layers(self):
        return self.cfg["n_layer"]


def metrics(logits, weights, targets, clean_logp):
    """logits [R, V] at the last position -> (weighted cosine, overlap, KL(clean || edited)) [R] each, in float64."""
    logp = torch.log_softmax(logits.double(), -1)
    p = logp.exp()
    wc = p @ weights
    ov = p[:, targets].sum(-1)
    kl = (clean_logp.exp() * (clean_logp - logp)).sum(-1)
    return wc, ov, kl


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workload", required=True, help="folder from `polyengine bench steer --write-workload`")
    ap.add_argument("--mode", choices=["paper", "batched", "prefix"], default="batched")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="run only the first N interventions (0: all)")
    ap.add_argument("--check", action="store_true", help="compare with the workload's rows.csv")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg, w = load(a.model)
    if not cfg["architectures"][0].startswith("GPT2"):
        sys.exit("steer_torch.py: GPT-2 models only")
    m = Gpt2(cfg, w)
    plan = json.load(open(os.path.join(a.workload, "plan.json")))
    hook = plan["hook"]
    parts = hook.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or parts[2] != "hook_resid_post":
        sys.exit(f"steer_torch.py: only blocks.L.hook_resid_post, got {hook}")
    L = int(parts[1])
    scales = torch.tensor(plan["scales"], dtype=torch.float32)
    frm = plan.get("from")  # None: every position; p >= 0: positions p..; negative: from each prompt's end
    vectors = read_safetensors(os.path.join(a.workload, "vectors.safetensors"))["vectors"].float()
    units = vectors / vectors.norm(dim=-1, keepdim=True)
    prompts = [json.loads(line) for line in open(os.path.join(a.workload, "prompts.jsonl")) if line.strip()]
    E = F.normalize(m.w[m.p + "wte.weight"], dim=-1)
    # per row: (vector, scale), vectors outer, scales inner; edits [rows, d] = scale * unit (the float32 product first)
    pairs = [(i, s) for i in range(units.shape[0]) for s in range(len(scales))]
    edits = torch.stack([scales[s] * units[i] for i, s in pairs])
    rows, done = {}, 0
    budget = a.limit if a.limit > 0 else len(prompts) * len(pairs)
    with torch.inference_mode():
        # warm-up: one clean forward of the first prompt
        m.logits(m.blocks(m.embed(torch.tensor([prompts[0]["ids"]])), 0, m.n_layers - 1))
        t0 = time.perf_counter()
        for pi, pr in enumerate(prompts):
            if done >= budget:
                break
            ids = torch.tensor([pr["ids"]])
            T = ids.shape[1]
            first = 0 if frm is None else (frm if frm >= 0 else T + frm)
            mask = (torch.arange(T) >= first).float()[None, :, None]                  # [1, T, 1]: the edited positions
            targets = sorted(set(pr["targets"]))
            weights = (E @ E[targets].T).max(-1).values.double()
            prefix = m.blocks(m.embed(ids), 0, L)                                    # [1, T, d]
            clean = m.logits(m.blocks(prefix, L + 1, m.n_layers - 1))[:, -1]        # [1, V]
            clean_logp = torch.log_softmax(clean.double(), -1)
            base = metrics(clean, weights, targets, clean_logp)
            rows[(pi, -1, 0.0)] = [x.item() for x in base]
            n = min(len(pairs), budget - done)
            if a.mode == "paper":
                for r in range(n):
                    def hooked(x, e=edits[r]):
                        return x + e * mask if frm is not None else x + e
                    x = hooked(m.blocks(m.embed(ids), 0, L))
                    logits = m.logits(m.blocks(x, L + 1, m.n_layers - 1))         # [1, T, V]: every position
                    res = metrics(logits[:, -1], weights, targets, clean_logp)
                    i, s = pairs[r]
                    rows[(pi, i, plan["scales"][s])] = [x.item() for x in res]
            else:
                e = edits[:n, None, :] if frm is None else edits[:n, None, :] * mask
                if a.mode == "prefix":
                    x = prefix.expand(n, -1, -1) + e
                else:
                    x = m.blocks(m.embed(ids.expand(n, -1)), 0, L) + e
                x = m.blocks(x, L + 1, m.n_layers - 1)
                res = metrics(m.logits(x[:, -1]), weights, targets, clean_logp)
                for r in range(n):
                    i, s = pairs[r]
                    rows[(pi, i, plan["scales"][s])] = [t[r].item() for t in res]
            done += n
        seconds = time.perf_counter() - t0
    out = {"mode": a.mode, "interventions": done, "seconds": seconds, "interventions_per_second": done / seconds,
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "blas": os.path.realpath("/etc/alternatives/libblas.so.3-x86_64-linux-gnu")}
    if a.check:
        diff = [0.0, 0.0, 0.0]
        with open(os.path.join(a.workload, "rows.csv")) as f:
            for rec in csv.DictReader(f):
                key = (int(rec["prompt"]), int(rec["vector"]), float(rec["scale"]))
                if key in rows:
                    for j, name in enumerate(["weighted_cosine", "overlap", "kl"]):
                        diff[j] = max(diff[j], abs(float(rec[name]) - rows[key][j]))
        out["max_abs_diff"] = dict(zip(["weighted_cosine", "overlap", "kl"], diff))
    print(json.dumps(out) if a.json else
          f"torch {a.mode}: {out['interventions_per_second']:.2f} interventions/s ({done} in {seconds:.2f} s)"
          + (f", max |diff| vs PolyEngine {out['max_abs_diff']}" if a.check else ""))


if __name__ == "__main__":
    sys.exit(main())
