namespace PolyEngine;

/// <summary>
/// A problem with the user's input (a file, a config, an id, an option). The message is one line that names
/// what is wrong, where, and how to fix it; the CLI prints it as is and exits non-zero without a stack trace.
/// </summary>
public class PolyEngineException(string message, Exception? inner = null) : Exception(message, inner);
