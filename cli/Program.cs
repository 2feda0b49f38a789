namespace PolyEngine.Cli; static class Program { static int Main(string[] args) => 0; }
