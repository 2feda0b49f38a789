#!/usr/bin/env bash
# Packages as a user meets them, from a scratch folder: `dotnet pack` the engine, kernels and CLI into a local feed,
# install the CLI as a .NET tool from it, run it, and build and run a console program that references the engine
# package with nothing but `using PolyEngine;` (the README's library example, on a toy model the tool wrote).
# A unique prerelease version keeps NuGet's global cache from serving an earlier pack of the same version.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d /tmp/polyengine-package-check.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
version="0.1.0-check.$(date +%s)"
feed="$scratch/feed"

echo "== dotnet pack ($version)"
dotnet pack PolyEngine.sln -c Release -p:Version="$version" -p:PackageOutputPath="$feed" --nologo -v quiet
ls "$feed"
for p in PolyEngine PolyEngine.Kernels; do
  listing=$(unzip -l "$feed/$p.$version.nupkg")
  grep -q "lib/net10.0/$p.xml" <<<"$listing" || { echo "FAIL: $p has no XML docs"; exit 1; }
  grep -q " README.md" <<<"$listing" || { echo "FAIL: $p has no README"; exit 1; }
done

echo "== dotnet tool install PolyEngine.Cli"
dotnet tool install --tool-path "$scratch/tools" PolyEngine.Cli --version "$version" --add-source "$feed"
pe="$scratch/tools/polyengine"
help=$("$pe" --help)
grep -q "polyengine \[command\] \[options\]" <<<"$help" || { echo "FAIL: help does not name the command polyengine"; exit 1; }
"$pe" toy --family gpt2 --preset tiny --seed 0 --out "$scratch/toy"
"$pe" run --model "$scratch/toy" --prompt "The dog" --top 2 | tee "$scratch/run.txt"
grep -q "bos: prepended" "$scratch/run.txt" || { echo "FAIL: run did not say which BOS applied"; exit 1; }

echo "== a console program referencing the PolyEngine package"
mkdir -p "$scratch/consumer"
cd "$scratch/consumer"
cat > consumer.csproj <<XML
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup><OutputType>Exe</OutputType><TargetFramework>net10.0</TargetFramework><Nullable>enable</Nullable><ImplicitUsings>enable</ImplicitUsings></PropertyGroup>
  <ItemGroup><PackageReference Include="PolyEngine" Version="$version" /></ItemGroup>
</Project>
XML
cat > nuget.config <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration><packageSources><add key="local" value="$feed" /></packageSources></configuration>
XML
cat > Program.cs <<'CS'
using PolyEngine;

using var model = Model.Load(args[0]);
var hooks = HookName.Select(model.Spec, "blocks.*.hook_resid_post");
RunResult r = model.Run([model.Encode("The dog"), model.Encode("A cat sat")], new RunOptions { Hooks = hooks });
Tensor logits = r.Logits!;
Tensor resid = r.Cache["blocks.1.hook_resid_post"];
var steer = HookEdit.AddVector(HookName.Parse("blocks.1.hook_resid_post"), new float[model.Spec.DModel], scale: 4f);
RunResult e = model.Run([model.Encode("The dog")], new RunOptions { Edits = [steer], TopLogits = 3, Logits = LogitsMode.None });
var (id, logit, p) = e.Top!.At(0, 0);
Console.WriteLine($"logits {logits.ShapeText} resid {resid.ShapeText} lengths {string.Join(",", r.Lengths)} W_E {model.W_E.ShapeText} top {id} p={p:F4} x={resid[0, 0, 0]:F4}");
CS
dotnet run -c Release -- "$scratch/toy" | tee "$scratch/consumer.txt"
grep -q "resid \[2, 4, " "$scratch/consumer.txt" || { echo "FAIL: the consumer program's output is not as expected"; exit 1; }
echo "package check passed"
