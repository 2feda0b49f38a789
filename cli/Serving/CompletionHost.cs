using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using PolyEngine.Serving;

namespace PolyEngine.Cli.Serving;

/// <summary>
/// A <see cref="CompletionService"/> behind Kestrel: <c>POST /v1/completions</c>, <c>GET /v1/models</c>, <c>GET /health</c>.
/// Every refusal is OpenAI's JSON error object with a 4xx status — a bad body (400), a wrong or missing API key (401),
/// an unknown path (404), a wrong method (405), a body over the limit (413) — and an unexpected failure is a 500 for that
/// request only: the server stays up.
/// </summary>
public static class CompletionHost
{
    /// <summary>Builds and starts the host; the returned app's <see cref="Address"/> is where it listens (port 0: any free one).</summary>
    public static async Task<WebApplication> Start(CompletionService service, string host, int port, string? apiKey)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(o =>
        {
            o.Limits.MaxRequestBodySize = service.Limits.MaxRequestBytes;
            o.AddServerHeader = false;
            if (!IPAddress.TryParse(host, out var ip))
                ip = host == "localhost" ? IPAddress.Loopback : throw new PolyEngineException($"--host {host}: give an IP address to listen on (127.0.0.1 for loopback, 0.0.0.0 for every interface)");
            o.Listen(ip, port);
        });
        var app = builder.Build();
        byte[]? key = apiKey is null ? null : Encoding.UTF8.GetBytes("Bearer " + apiKey);
        app.Use(async (ctx, next) =>
        {
            if (key is not null && ctx.Request.Path != "/health")
            {
                var given = Encoding.UTF8.GetBytes(ctx.Request.Headers.Authorization.ToString());
                if (!CryptographicOperations.FixedTimeEquals(given, key))
                {
                    await Write(ctx, 401, CompletionService.Error(401, "missing or wrong API key; send the header 'Authorization: Bearer <key>'", null, "authentication_error"));
                    return;
                }
            }
            await next(ctx);
        });
        app.Map("/v1/completions", async ctx =>
        {
            if (!HttpMethods.IsPost(ctx.Request.Method)) { await Write(ctx, 405, CompletionService.Error(405, "use POST /v1/completions")); return; }
            byte[] body;
            try
            {
                using var ms = new MemoryStream();
                await ctx.Request.Body.CopyToAsync(ms, ctx.RequestAborted);
                body = ms.ToArray();
            }
            catch (BadHttpRequestException e) when (e.StatusCode == 413)
            {
                await Write(ctx, 413, CompletionService.Error(413, $"the body is over this server's limit of {service.Limits.MaxRequestBytes:N0} bytes; send fewer prompts per request", null, "request_too_large"));
                return;
            }
            try { await Write(ctx, 200, await service.Complete(body, ctx.RequestAborted)); }
            catch (ServingException e) { await Write(ctx, e.Status, CompletionService.Error(e)); }
            catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested) { }
            catch (Exception e)
            {
                await Write(ctx, 500, CompletionService.Error(500, $"the server failed on this request: {e.Message.Split('\n')[0]}", null, "server_error"));
            }
        });
        app.Map("/v1/models", ctx => HttpMethods.IsGet(ctx.Request.Method) ? Write(ctx, 200, service.Models()) : Write(ctx, 405, CompletionService.Error(405, "use GET /v1/models")));
        app.Map("/health", ctx => HttpMethods.IsGet(ctx.Request.Method) ? Write(ctx, 200, new JsonObject { ["status"] = "ok" }) : Write(ctx, 405, CompletionService.Error(405, "use GET /health")));
        app.MapFallback(ctx => Write(ctx, 404, CompletionService.Error(404, $"no route {ctx.Request.Method} {ctx.Request.Path}; the routes are POST /v1/completions, GET /v1/models, GET /health", null, "not_found_error")));
        await app.StartAsync();
        return app;
    }

    /// <summary>Where a started host listens, e.g. http://127.0.0.1:8000.</summary>
    public static string Address(WebApplication app) =>
        app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();

    /// <summary>JSON as OpenAI writes it: quotes and non-ASCII text as they are, not \u escapes.</summary>
    static readonly System.Text.Json.JsonSerializerOptions JsonOut = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    static Task Write(HttpContext ctx, int status, JsonObject body)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        return ctx.Response.WriteAsync(body.ToJsonString(JsonOut));
    }
}
