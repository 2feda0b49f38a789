namespace PolyEngine.Kernels.Reference;

/// <summary>Scalar reference of the activation family, in double, with an erf of its own (a series and a continued
/// fraction: independent of the Chebyshev fit the backends use).</summary>
public static class ActivationReference
{
    public static float Apply(float x, Activation activation) => (float)Value(x, activation);

    /// <summary>act(x) in double.</summary>
    public static double Value(double x, Activation activation) => activation switch
    {
        Activation.GeluTanh => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x))),
        Activation.GeluErf => 0.5 * x * (1 + Erf(x / Math.Sqrt(2.0))),
        Activation.Relu => Math.Max(x, 0),
        _ => throw new ArgumentOutOfRangeException(nameof(activation)),
    };

    /// <summary>act′(x) in double, by differentiating the definitions above.</summary>
    public static double Derivative(double x, Activation activation)
    {
        switch (activation)
        {
            case Activation.GeluTanh:
                double c = Math.Sqrt(2 / Math.PI), t = Math.Tanh(c * (x + 0.044715 * x * x * x));
                return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x);
            case Activation.GeluErf:
                return 0.5 * (1 + Erf(x / Math.Sqrt(2.0))) + x * Math.Exp(-x * x / 2) / Math.Sqrt(2 * Math.PI);
            case Activation.Relu:
                return x > 0 ? 1 : 0;
            default:
                throw new ArgumentOutOfRangeException(nameof(activation));
        }
    }

    /// <summary>erf: Maclaurin series for |x| &lt; 3, continued fraction for erfc beyond.</summary>
    public static double Erf(double x)
    {
        double ax = Math.Abs(x);
        if (ax < 3)
        {
            double sum = 0, term = ax;
            for (int n = 0; n < 200; n++)
            {
                double add = term / (2 * n + 1);
                sum += add;
                if (Math.Abs(add) < 1e-17 * Math.Abs(sum)) break;
                term *= -ax * ax / (n + 1);
            }
            double r = 2 / Math.Sqrt(Math.PI) * sum;
            return x < 0 ? -r : r;
        }
        // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))) (backward evaluation)
        double f = ax;
        for (int n = 60; n >= 1; n--) f = ax + n / 2.0 / f;
        double erfc = Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / f;
        return x < 0 ? erfc - 1 : 1 - erfc;
    }
}
