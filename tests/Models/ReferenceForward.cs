using PolyEngine.Kernels.Reference;
using System.Text.Json;
using PolyEngine.Formats;

namespace PolyEngine.Tests.Models;

/// <summary>
/// An independent, deliberately plain double-precision forward pass written from HF transformers' semantics, reading the
/// HF tensor names directly (Conv1D [in,out] for GPT-2, per-head interleaved fused QKV and rotate-half rotary for NeoX).
/// It shares no code with the engine's mapping or kernels; it is itself checked against the HF golden fixtures, and then
/// judges the engine on configurations HF never produced goldens for.
/// </summary>
static class ReferenceForward
{
    public sealed record Output(double[] Logits, Dictionary<string, double[]> Hooks);

    /// <summary>The forward of <paramref name="ids"/> [batch, seq]; <paramref name="embedDelta"/> [batch·seq, d_model], when
    /// given, is added to the token embeddings (hook_embed) — for finite differences in float64.</summary>
    public static Output Run(string folder, int[] ids, int batch, int seq, double[]? embedDelta = null)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "config.json")));
        var c = doc.RootElement;
        var files = Directory.GetFiles(folder, "*.safetensors").Select(SafeTensorsFile.Open).ToList();
        try
        {
            double[] W(string name)
            {
                foreach (var f in files)
                {
                    if (f.Contains(name)) return f.ReadFloat32(name).Select(x => (double)x).ToArray();
                    if (f.Contains("transformer." + name)) return f.ReadFloat32("transformer." + name).Select(x => (double)x).ToArray();
                }
                throw new KeyNotFoundException(name);
            }
            bool gpt2 = c.GetProperty("architectures")[0].GetString()!.StartsWith("GPT2");
            return gpt2 ? Gpt2(c, W, ids, batch, seq, embedDelta) : NeoX(c, W, ids, batch, seq, embedDelta);
        }
        finally { foreach (var f in files) f.Dispose(); }
    }

    static Output Gpt2(JsonElement c, Func<string, double[]> W, int[] ids, int B, int T, double[]? delta)
    {
        int d = c.GetProperty("n_embd").GetInt32(), H = c.GetProperty("n_head").GetInt32(), L = c.GetProperty("n_layer").GetInt32();
        int V = c.GetProperty("vocab_size").GetInt32();
        int m = c.TryGetProperty("n_inner", out var ni) && ni.ValueKind == JsonValueKind.Number ? ni.GetInt32() : 4 * d;
        double eps = c.GetProperty("layer_norm_epsilon").GetDouble();
        var hooks = new Dictionary<string, double[]>();
        var wte = W("wte.weight"); var wpe = W("wpe.weight");
        var x = new double[B * T * d];
        for (int r = 0; r < B * T; r++) for (int i = 0; i < d; i++) x[r * d + i] = wte[ids[r] * d + i] + (delta?[r * d + i] ?? 0) + wpe[(r % T) * d + i];
        for (int l = 0; l < L; l++)
        {
            string p = $"h.{l}.";
            hooks[$"blocks.{l}.hook_resid_pre"] = (double[])x.Clone();
            var a = LayerNorm(x, W(p + "ln_1.weight"), W(p + "ln_1.bias"), d, eps);
            var qkv = MatMulInOut(a, W(p + "attn.c_attn.weight"), W(p + "attn.c_attn.bias"), d, 3 * d);
            var z = Attention(qkv, B, T, H, d / H, (h, i) => h * (d / H) + i, d, 0, 0);
            var attn = MatMulInOut(z, W(p + "attn.c_proj.weight"), W(p + "attn.c_proj.bias"), d, d);
            hooks[$"blocks.{l}.hook_attn_out"] = attn;
            for (int i = 0; i < x.Length; i++) x[i] += attn[i];
            var n2 = LayerNorm(x, W(p + "ln_2.weight"), W(p + "ln_2.bias"), d, eps);
            var u = MatMulInOut(n2, W(p + "mlp.c_fc.weight"), W(p + "mlp.c_fc.bias"), d, m);
            for (int i = 0; i < u.Length; i++) u[i] = 0.5 * u[i] * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (u[i] + 0.044715 * u[i] * u[i] * u[i])));
            var mlp = MatMulInOut(u, W(p + "mlp.c_proj.weight"), W(p + "mlp.c_proj.bias"), m, d);
            hooks[$"blocks.{l}.hook_mlp_out"] = mlp;
            for (int i = 0; i < x.Length; i++) x[i] += mlp[i];
            hooks[$"blocks.{l}.hook_resid_post"] = (double[])x.Clone();
        }
        var f = LayerNorm(x, W("ln_f.weight"), W("ln_f.bias"), d, eps);
        return new Output(MatMulOutIn(f, wte, null, d, V), hooks);
    }

    static Output NeoX(JsonElement c, Func<string, double[]> W, int[] ids, int B, int T, double[]? delta)
    {
        int d = c.GetProperty("hidden_size").GetInt32(), H = c.GetProperty("num_attention_heads").GetInt32();
        int L = c.GetProperty("num_hidden_layers").GetInt32(), V = c.GetProperty("vocab_size").GetInt32(), m = c.GetProperty("intermediate_size").GetInt32();
        double eps = c.GetProperty("layer_norm_eps").GetDouble();
        int dh = d / H, rot = (int)(dh * c.GetProperty("rotary_pct").GetDouble());
        double rbase = c.GetProperty("rotary_emb_base").GetDouble();
        bool parallel = !c.TryGetProperty("use_parallel_residual", out var pr) || pr.GetBoolean();
        var hooks = new Dictionary<string, double[]>();
        var emb = W("gpt_neox.embed_in.weight");
        var x = new double[B * T * d];
        for (int r = 0; r < B * T; r++) for (int i = 0; i < d; i++) x[r * d + i] = emb[ids[r] * d + i] + (delta?[r * d + i] ?? 0);
        for (int l = 0; l < L; l++)
        {
            string p = $"gpt_neox.layers.{l}.";
            hooks[$"blocks.{l}.hook_resid_pre"] = (double[])x.Clone();
            var a = LayerNorm(x, W(p + "input_layernorm.weight"), W(p + "input_layernorm.bias"), d, eps);
            var qkv = MatMulOutIn(a, W(p + "attention.query_key_value.weight"), W(p + "attention.query_key_value.bias"), d, 3 * d);
            // per-head interleaved: head h owns [q(dh) | k(dh) | v(dh)] at h·3·dh
            var z = Attention(qkv, B, T, H, dh, (h, i) => h * 3 * dh + i, dh, rot, rbase);
            var attn = MatMulOutIn(z, W(p + "attention.dense.weight"), W(p + "attention.dense.bias"), d, d);
            hooks[$"blocks.{l}.hook_attn_out"] = attn;
            double[] mlpIn;
            if (parallel) mlpIn = x;
            else { mlpIn = (double[])x.Clone(); for (int i = 0; i < x.Length; i++) mlpIn[i] += attn[i]; }
            var n2 = LayerNorm(mlpIn, W(p + "post_attention_layernorm.weight"), W(p + "post_attention_layernorm.bias"), d, eps);
            var u = MatMulOutIn(n2, W(p + "mlp.dense_h_to_4h.weight"), W(p + "mlp.dense_h_to_4h.bias"), d, m);
            for (int i = 0; i < u.Length; i++) u[i] = 0.5 * u[i] * (1 + PolyEngine.Kernels.Reference.ActivationReference.Erf(u[i] / Math.Sqrt(2)));
            var mlp = MatMulOutIn(u, W(p + "mlp.dense_4h_to_h.weight"), W(p + "mlp.dense_4h_to_h.bias"), m, d);
            hooks[$"blocks.{l}.hook_mlp_out"] = mlp;
            var next = new double[x.Length];
            for (int i = 0; i < x.Length; i++) next[i] = parallel ? mlp[i] + attn[i] + x[i] : mlpIn[i] + mlp[i];
            x = next;
            hooks[$"blocks.{l}.hook_resid_post"] = (double[])x.Clone();
        }
        var f = LayerNorm(x, W("gpt_neox.final_layer_norm.weight"), W("gpt_neox.final_layer_norm.bias"), d, eps);
        return new Output(MatMulOutIn(f, W("embed_out.weight"), null, d, V), hooks);
    }

    static double[] LayerNorm(double[] x, double[] w, double[] b, int d, double eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < x.Length / d; r++)
        {
            double mean = 0, var = 0;
            for (int i = 0; i < d; i++) mean += x[r * d + i];
            mean /= d;
            for (int i = 0; i < d; i++) var += (x[r * d + i] - mean) * (x[r * d + i] - mean);
            var /= d;
            for (int i = 0; i < d; i++) y[r * d + i] = (x[r * d + i] - mean) / Math.Sqrt(var + eps) * w[i] + b[i];
        }
        return y;
    }

    static double[] MatMulInOut(double[] x, double[] w, double[]? b, int k, int n)
    {
        int rows = x.Length / k;
        var y = new double[rows * n];
        for (int r = 0; r < rows; r++)
        {
            // y[r, j] = b[j] + Σ_i x[r, i]·w[i, j], i ascending; the loops run over i outside so w is read along its rows.
            for (int j = 0; j < n; j++) y[r * n + j] = b?[j] ?? 0;
            for (int i = 0; i < k; i++)
            {
                double xi = x[r * k + i];
                for (int j = 0; j < n; j++) y[r * n + j] += xi * w[i * n + j];
            }
        }
        return y;
    }

    static double[] MatMulOutIn(double[] x, double[] w, double[]? b, int k, int n)
    {
        int rows = x.Length / k;
        var y = new double[rows * n];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < n; j++)
            {
                double s = b?[j] ?? 0;
                for (int i = 0; i < k; i++) s += x[r * k + i] * w[j * k + i];
                y[r * n + j] = s;
            }
        return y;
    }

    /// <summary>Causal attention over a [B·T, 3·d] qkv buffer: <paramref name="at"/>(head, i) is the query's column, and the
    /// key / value sit <paramref name="partStride"/> / 2·partStride further (d for GPT-2's blocks, d_head for NeoX's interleave).</summary>
    static double[] Attention(double[] qkv, int B, int T, int H, int dh, Func<int, int, int> at, int partStride, int rot, double rbase)
    {
        int d = H * dh, w = 3 * d;
        int Idx(int part, int h, int i) => at(h, i) + part * partStride;
        double[] Get(int r, int part, int h, int t)
        {
            var v = new double[dh];
            for (int i = 0; i < dh; i++) v[i] = qkv[r * w + Idx(part, h, i)];
            if (part < 2 && rot > 0)
            {
                var o = (double[])v.Clone();
                for (int j = 0; j < rot / 2; j++)
                {
                    double ang = t * (1.0 / Math.Pow(rbase, 2.0 * j / rot));
                    v[j] = o[j] * Math.Cos(ang) - o[j + rot / 2] * Math.Sin(ang);
                    v[j + rot / 2] = o[j + rot / 2] * Math.Cos(ang) + o[j] * Math.Sin(ang);
                }
            }
            return v;
        }
        var z = new double[B * T * d];
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int t = 0; t < T; t++)
                {
                    var q = Get(b * T + t, 0, h, t);
                    var s = new double[t + 1];
                    for (int u = 0; u <= t; u++)
                    {
                        var k = Get(b * T + u, 1, h, u);
                        for (int i = 0; i < dh; i++) s[u] += q[i] * k[i];
                        s[u] /= Math.Sqrt(dh);
                    }
                    double max = s.Max(), sum = 0;
                    for (int u = 0; u <= t; u++) { s[u] = Math.Exp(s[u] - max); sum += s[u]; }
                    for (int u = 0; u <= t; u++)
                    {
                        var v = Get(b * T + u, 2, h, u);
                        for (int i = 0; i < dh; i++) z[(b * T + t) * d + h * dh + i] += s[u] / sum * v[i];
                    }
                }
        return z;
    }
}
