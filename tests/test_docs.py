"""Docs that cannot drift: the generated key reference is current, and every command the docs give runs.

Commands are collected from README.md, docs/*.md and the run lines in the header comments of
config.yaml and config/*.yaml. Snakemake commands run as dry runs (``-n``) in a copy of the
workflow; ``python -m genrec.*`` and ``bench/*.py`` commands parse their arguments with the
module's own ``parser()``; pytest commands collect the tests.
"""

import dataclasses
import importlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genrec.config import BEGIN, DOC_SECTIONS, END, settings_reference

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONFIGS = [REPO / "config.yaml", *sorted((REPO / "config").glob("*.yaml"))]
STARTS = ("snakemake ", ".venv/bin/snakemake ", "python -m ", ".venv/bin/python ", "pytest ", "bash scripts/")
WORKFLOW = ("Snakefile", "rules", "workflow_scripts", "config.yaml", "config", "envs", "report", "slurm")


def _commands(path: Path) -> list[str]:
    """Command lines written in a Markdown file (code blocks, indented blocks, inline code) or a config header."""
    text = path.read_text()
    if path.suffix == ".yaml":
        lines = [m.group(1) for m in re.finditer(r"^#\s+((?:\S+/)?(?:snakemake|python|bash)\b.*)$", text, re.M)]
    else:
        text = text.replace(BEGIN, "").replace(END, "")
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
        lines = [line for b in blocks for line in b.replace("\\\n", " ").splitlines()]
        lines += re.findall(r"^    (\S.*)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M)
        lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return [" ".join(line.split()) for line in lines if line.strip().startswith(STARTS)]


COMMANDS = sorted({(p.relative_to(REPO).as_posix(), c) for p in DOCS + CONFIGS for c in _commands(p)})


def test_the_docs_give_the_readme_commands():
    commands = {c for _, c in COMMANDS}
    assert "bash scripts/setup.sh && .venv/bin/snakemake --cores 2 results/summary.csv" in commands
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest -q" in commands
    assert any("--configfile config/office.yaml" in c for c in commands)


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    """The workflow files in a scratch directory, so that dry runs leave nothing in the checkout."""
    root = tmp_path_factory.mktemp("docs")
    for name in WORKFLOW:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    return root


def _words(command: str) -> list[str]:
    """The command after any ``bash scripts/setup.sh &&``, without its python interpreter."""
    words = shlex.split(command.split("&&")[-1])
    return words[1:] if words[0].endswith("python") else words


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}: {c[:60]}" for d, c in COMMANDS])
def test_documented_command_runs(doc, command, workflow_copy):
    words = _words(command)
    if "&&" in command:
        assert (REPO / shlex.split(command)[1]).is_file(), f"{doc}: {command}: no such script"
    if words[0].endswith("snakemake"):
        args = words[1:]
        if "--report" in args:  # a report needs finished results; its dry run is the run it reports on
            i = args.index("--report")
            args = args[:i] + args[i + 2 :]
        cmd = [sys.executable, "-m", "snakemake", *args, "--dry-run", "--quiet", "rules"]
        # the workflow resolves every model before planning; a hub model (config/paper_office.yaml)
        # resolves offline only when cached, so these dry runs stand where the hub can be reached
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        done = subprocess.run(cmd, cwd=workflow_copy, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, f"{doc}: {command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    elif words[:2] == ["-m", "pytest"] or words[0] == "pytest":
        args = words[2:] if words[0] == "-m" else words[1:]
        cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{doc}: {command}\n{done.stdout[-2000:]}"
    elif words[0] == "-m":
        _parser(importlib.import_module(words[1]), doc, command).parse_args(words[2:])
    else:
        script = REPO / words[0]
        spec = importlib.util.spec_from_file_location(script.stem, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _parser(module, doc, command).parse_args(words[1:])


def _parser(module, doc: str, command: str):
    assert hasattr(module, "parser"), f"{doc}: {command}: {module.__name__} has no parser() to check its arguments"
    return module.parser()


def test_settings_reference_is_current():
    text = (REPO / "docs" / "CONFIG.md").read_text()
    block = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert block == settings_reference(), "docs/CONFIG.md is stale: run python -m genrec.config docs docs/CONFIG.md"


def test_every_settings_field_is_in_the_config_doc_with_its_default():
    text = (REPO / "docs" / "CONFIG.md").read_text()
    for title, cls in DOC_SECTIONS:
        section = text[text.index(f"### `{title}`") :]
        section = section[: section.index("\n###") if "\n###" in section else None]
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            shown = "required" if f.metadata["required"] else f"`{_json(default)}`"
            assert f"| `{f.name}` | {shown} |" in section, f"{title}.{f.name} (default {default!r}) not in CONFIG.md"


def _json(value):
    import json

    return json.dumps(list(value) if isinstance(value, tuple) else value)
