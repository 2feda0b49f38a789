namespace PolyEngine.Formats;

/// <summary>What a corpus needs of a tokenizer: text in, token ids out (a model's tokenizer is one). Formats reads files
/// and knows no model; the caller hands it the model's tokenizer.</summary>
public interface ITextTokenizer
{
    int[] Encode(string text);
}
