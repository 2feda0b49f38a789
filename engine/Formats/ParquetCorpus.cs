using PolyEngine.Tokenization;

namespace PolyEngine.Formats;

static class ParquetCorpus
{
    public static IEnumerable<(int[] Tokens, long Document, double Start, double End)> Read(string file, ModelTokenizer? tokenizer) =>
        throw new NotImplementedException("TODO parquet corpus");
}
