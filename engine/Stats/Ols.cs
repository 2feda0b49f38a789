using MathNet.Numerics.Distributions;
using MathNet.Numerics.LinearAlgebra;

namespace PolyEngine.Stats;

/// <summary>One regressor's estimate: coefficient, standard error, t, two-sided p and confidence intervals at 90, 95 and
/// 99 %.</summary>
public sealed record OlsTerm(string Name, double Coefficient, double StdErr, double T, double P,
    double Ci90Low, double Ci90High, double Ci95Low, double Ci95High, double Ci99Low, double Ci99High);

/// <summary>
/// Ordinary least squares with the classical (homoscedastic) standard errors, as statsmodels' <c>OLS(...).fit()</c>:
/// β from a QR factorisation of the design X [n, p] (an intercept first when asked), σ² = RSS/(n − p), Cov(β) =
/// σ²(XᵀX)⁻¹ = σ²·R⁻¹R⁻ᵀ, t = β/SE on n − p degrees of freedom. A rank-deficient design (collinear columns, a dummy
/// that never varies) is an error that names the columns.
/// </summary>
public sealed record OlsFit(IReadOnlyList<OlsTerm> Terms, int N, int DegreesOfFreedom, double RSquared, double AdjustedRSquared, double ResidualStdErr)
{
    public OlsTerm this[string name] => Terms.FirstOrDefault(t => t.Name == name) ?? throw new KeyNotFoundException(name);

    /// <param name="names">The columns of <paramref name="x"/>.</param>
    /// <param name="x">Rows of regressors, each as long as <paramref name="names"/>.</param>
    /// <param name="intercept">Prepend a column of ones named "intercept".</param>
    public static OlsFit Fit(IReadOnlyList<string> names, IReadOnlyList<double[]> x, IReadOnlyList<double> y, bool intercept = true)
    {
        int n = y.Count, k = names.Count + (intercept ? 1 : 0);
        if (x.Count != n) throw new PolyEngineException($"OLS: {x.Count} rows of regressors but {n} responses");
        if (x.Any(r => r.Length != names.Count)) throw new PolyEngineException($"OLS: every row needs {names.Count} regressors ({string.Join(", ", names)})");
        if (n <= k) throw new PolyEngineException($"OLS: {n} rows for {k} coefficients; it needs more rows than coefficients");
        if (y.Any(v => !double.IsFinite(v)) || x.Any(r => r.Any(v => !double.IsFinite(v))))
            throw new PolyEngineException("OLS: the data hold NaN or infinity; drop those rows first");
        var all = intercept ? ["intercept", .. names] : names.ToArray();
        var X = Matrix<double>.Build.Dense(n, k, (i, j) => intercept ? (j == 0 ? 1 : x[i][j - 1]) : x[i][j]);
        var Y = Vector<double>.Build.DenseOfEnumerable(y);
        var qr = X.QR(MathNet.Numerics.LinearAlgebra.Factorization.QRMethod.Thin);
        var R = qr.R;
        double scale = Enumerable.Range(0, k).Max(j => Math.Abs(R[j, j]));
        var weak = Enumerable.Range(0, k).Where(j => Math.Abs(R[j, j]) <= 1e-10 * scale).Select(j => all[j]).ToList();
        if (weak.Count > 0)
            throw new PolyEngineException($"OLS: the regressors are collinear ({string.Join(", ", weak)} is a combination of the columns before it); drop it or a dummy level that never varies");
        var beta = qr.Solve(Y);
        var resid = Y - X * beta;
        double rss = resid.DotProduct(resid);
        int df = n - k;
        double sigma2 = rss / df;
        var rInv = R.Inverse();
        var cov = rInv * rInv.Transpose() * sigma2;
        double mean = Y.Average(), tss = Y.Sum(v => (v - mean) * (v - mean));
        // As statsmodels: R² against the mean with an intercept, against zero without.
        double centre = intercept ? tss : Y.DotProduct(Y);
        double r2 = 1 - rss / centre, adj = 1 - (1 - r2) * (n - (intercept ? 1 : 0)) / df;
        double q90 = StudentT.InvCDF(0, 1, df, 0.95), q95 = StudentT.InvCDF(0, 1, df, 0.975), q99 = StudentT.InvCDF(0, 1, df, 0.995);
        var terms = Enumerable.Range(0, k).Select(j =>
        {
            double b = beta[j], se = Math.Sqrt(cov[j, j]), t = b / se;
            return new OlsTerm(all[j], b, se, t, WelchTest.TwoSided(t, df), b - q90 * se, b + q90 * se, b - q95 * se, b + q95 * se, b - q99 * se, b + q99 * se);
        }).ToList();
        return new OlsFit(terms, n, df, r2, adj, Math.Sqrt(sigma2));
    }
}
