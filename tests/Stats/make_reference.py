#!/usr/bin/env python3
"""Writes tests/fixtures/stats-reference/reference.json: seeded synthetic data and what SciPy and statsmodels compute on
it — means with SE and 95 % CIs, Welch's t-tests (scipy.stats.ttest_ind(equal_var=False)) and the paper's OLS models A and
B (statsmodels OLS, classical standard errors; B's response is the relative change, the paper's eq. 2), and
average-linkage clusters (scipy.cluster.hierarchy.linkage + fcluster). StatsTests compares engine/Stats with it.
Run (Debian python3-scipy, python3-statsmodels):  python3 tests/Stats/make_reference.py
"""
import json, os

import numpy as np
import scipy
import scipy.stats as st
import statsmodels
import statsmodels.api as sm

rng = np.random.default_rng(20261203)
out = {"generator": f"numpy {np.__version__}, scipy {scipy.__version__}, statsmodels {statsmodels.__version__}"}

x = np.round(rng.normal(0.05, 0.3, 23), 6)
n = len(x)
se = x.std(ddof=1) / np.sqrt(n)
q = st.t.ppf(0.975, n - 1)
pos = x[x > 0]
pse = pos.std(ddof=1) / np.sqrt(len(pos))
pq = st.t.ppf(0.975, len(pos) - 1)
out["mean"] = {"x": x.tolist(), "n": n, "mean": x.mean(), "sd": x.std(ddof=1), "se": se, "ci95": [x.mean() - q * se, x.mean() + q * se],
               "positive": {"n": len(pos), "mean": pos.mean(), "se": pse, "ci95": [pos.mean() - pq * pse, pos.mean() + pq * pse], "fraction": len(pos) / n}}

welch = []
for a, b in [(np.round(rng.normal(0.3, 0.2, 17), 6), np.round(rng.normal(0.1, 0.6, 25), 6)),
             (rng.integers(0, 2, 40).astype(float), (rng.random(40) < 0.2).astype(float)),
             (np.round(rng.normal(1.0, 1.0, 5), 6), np.round(rng.normal(1.2, 0.1, 9), 6))]:
    r = st.ttest_ind(a, b, equal_var=False)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    welch.append({"a": a.tolist(), "b": b.tolist(), "t": float(r.statistic), "p": float(r.pvalue), "df": float(df)})
out["welch"] = welch

m = 60
types = np.array(["att", "mlp", "res"])[rng.integers(0, 3, m)]
interference = np.round(rng.random(m), 6)
similarity = np.round(rng.random(m) * 0.8, 6)
baseline = np.round(np.abs(rng.normal(0.2, 0.1, m)) + 0.05, 6)
dummy = {t: (types == t).astype(float) for t in ["mlp", "res"]}
steered = np.round(baseline * 0.7 + 0.25 * interference - 0.1 * similarity + 0.05 * dummy["mlp"] - 0.03 * dummy["res"] + rng.normal(0, 0.05, m), 6)
out["rows"] = [{"baseline": b, "steered": s, "interference": i, "similarity": v, "type": str(t)}
               for b, s, i, v, t in zip(baseline, steered, interference, similarity, types)]


def fit(y, cols, names):
    X = sm.add_constant(np.column_stack(cols))
    r = sm.OLS(y, X).fit()
    ci = {f"ci{int(100 - a * 100)}": r.conf_int(alpha=a).tolist() for a in (0.10, 0.05, 0.01)}
    return {"names": ["intercept"] + names, "coef": r.params.tolist(), "se": r.bse.tolist(), "t": r.tvalues.tolist(), "p": r.pvalues.tolist(),
            "r2": r.rsquared, "adj_r2": r.rsquared_adj, "df": int(r.df_resid), **ci}


out["A"] = fit(steered, [interference, similarity, baseline, dummy["mlp"], dummy["res"]], ["interference", "similarity", "baseline", "type[mlp]", "type[res]"])
out["B"] = fit((steered - baseline) / np.abs(baseline), [interference, similarity, dummy["mlp"], dummy["res"]], ["interference", "similarity", "type[mlp]", "type[res]"])

# Average-linkage clusters of unit vectors on cosine distance, cut at 0.4 (scipy.cluster.hierarchy).
from scipy.cluster.hierarchy import linkage, fcluster
from scipy.spatial.distance import pdist
centres = rng.normal(0, 1, (6, 8))
members = np.concatenate([centres[i] + rng.normal(0, 0.35, (7, 8)) for i in range(6)])[rng.permutation(42)]
unit = members / np.linalg.norm(members, axis=1, keepdims=True)
unit = np.round(unit, 6).astype(np.float32)
unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
Z = linkage(pdist(unit.astype(np.float64), "cosine"), method="average")
out["clusters"] = {"unit": unit.astype(float).tolist(), "cutoff": 0.4, "labels": fcluster(Z, 0.4, criterion="distance").tolist(),
                   "heights": sorted(Z[:, 2].tolist())}

path = os.path.join(os.path.dirname(__file__), "..", "fixtures", "stats-reference", "reference.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1, default=float)
print("wrote", os.path.normpath(path))
