"""README.md and every page in docs/ hold to the code, checked per file (a failure names it).

* Every `depthkd ...` / `python pipelines/<x>.py ...` command shown answers `--help` and shows only
  options its subcommand has; one that takes an experiment or sweep config validates the
  `dotted.key=value` overrides it shows against the config it names (or its default).
* Every fenced `yaml` block that is an experiment config or a sweep file validates against its
  schema; a block said to be a file of `configs/` matches that file.
* Every config key named in inline code exists in the schema; every `depthkd.` module or name
  shown exists under the import root; `depthkd promote` always names the config it judges on,
  serving never takes the tracking server's port, a SQLite store is spelled with its default home.
* README.md is at most 300 lines; every relative link points to an existing file and heading.
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
import shlex
import textwrap
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from depthkd.cli.main import build_parser
from depthkd.config.files import DEFAULT_CONFIG
from depthkd.config.loader import load_config
from depthkd.config.schema import LOSS_TERMS, ExperimentConfig, StageConfig
from tests.packaging import package_folders

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 300
OVERRIDE = re.compile(r"^([a-z_]+(?:\.[a-z_0-9]+)+)=(.*)$")
# The installed package's import root and the repository folders it maps (docs/layout.md),
# subpackages first so the longest prefix matches.
IMPORT_ROOTS = dict(sorted(package_folders(REPO).items(), key=lambda item: -len(item[0])))
FOLDER_ROOTS = tuple(IMPORT_ROOTS.values())
FILE_SUFFIXES = {
    *("txt", "py", "yaml", "yml", "json", "md", "png", "jpg", "csv", "tar", "log", "db"),
    *("pt", "pth", "onnx", "safetensors", "data", "mat", "mp4", "env", "example", "sha256"),
}
STAGE_SECTIONS = [
    name
    for name, field in ExperimentConfig.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, StageConfig)
]


def doc_id(doc: Path) -> str:
    return doc.relative_to(REPO).as_posix()


# --- reading Markdown -------------------------------------------------------------------------

FENCE = re.compile(r"^[ \t]*```([\w-]*)[ \t]*\n(.*?)^[ \t]*```", flags=re.S | re.M)


def fenced_blocks(markdown: str) -> list[tuple[str, str, str]]:
    """(language, dedented text, the paragraph just before the fence) of each fenced block."""
    blocks = []
    for match in FENCE.finditer(markdown):
        before = markdown[: match.start()].rstrip().split("\n\n")[-1]
        blocks.append((match.group(1), textwrap.dedent(match.group(2)), before))
    return blocks


def prose(markdown: str) -> str:
    """The text outside fenced blocks."""
    return FENCE.sub("", markdown)


def inline_spans(markdown: str) -> list[str]:
    """The inline code spans outside fenced blocks, line breaks inside a span joined."""
    return [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose(markdown))]


def code_snippets(markdown: str) -> list[str]:
    """The text of fenced code blocks (continuation lines joined; diagrams left out) and of inline
    code spans."""
    fenced = [text for lang, text, _ in fenced_blocks(markdown) if lang != "mermaid"]
    return [re.sub(r"\\\n\s*", " ", text) for text in fenced] + inline_spans(markdown)


@functools.cache
def pipeline_command(script: str) -> list[str]:
    """The depthkd arguments `pipelines/<script>` stands for (its shim's `main([...])`)."""
    shim = REPO / "pipelines" / script
    text = shim.read_text() if shim.is_file() else ""
    found = re.search(r"main\(\[((?:\s*\"[\w-]+\",)+)\s*\*sys\.argv", text)
    if not found:
        return [f"pipelines/{script}"]  # not a command: the test names it
    return re.findall(r'"([\w-]+)"', found.group(1))


def shown_commands(markdown: str) -> list[list[str]]:
    """Each `depthkd ...` or `python pipelines/<x>.py ...` command line, as depthkd arguments."""
    commands = []
    for snippet in code_snippets(markdown):
        for line in snippet.splitlines():
            if line.lstrip().startswith("#"):
                continue
            line = line.split("  #")[0].replace("...", "")
            for match in re.finditer(r"(?:^|[\s(=])(depthkd|python pipelines/(\w+\.py))\s", line):
                try:
                    words = shlex.split(line[match.end() :], comments=True)
                except ValueError:
                    words = line[match.end() :].split()
                if match.group(2):
                    words = [*pipeline_command(match.group(2)), *words]
                words = [w.strip("[]") for w in words if not set(w) & set("<>|")]
                commands.append(words)
    return commands


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@functools.cache
def anchors(doc: Path) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", prose(doc.read_text()), flags=re.M):
        anchor = base = slug(heading)
        n = 0
        while anchor in found:
            n += 1
            anchor = f"{base}-{n}"
        found.add(anchor)
    return found


# --- what the docs show ------------------------------------------------------------------------


@functools.cache
def parser() -> argparse.ArgumentParser:
    return build_parser()


def subcommand(parser: argparse.ArgumentParser, words: list[str]) -> tuple[list[str], object]:
    """The subcommand path at the start of `words` and its parser."""
    path = []
    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
        path.append(word)
    return path, parser


def named_blocks() -> dict[str, tuple[str, str]]:
    """`configs/<file>` → (doc, YAML text) for each `yaml` block whose lead-in names that file."""
    named = {}
    for doc in DOCS:
        for lang, text, before in fenced_blocks(doc.read_text()):
            paths = set(re.findall(r"`(configs/[\w.-]+\.yaml)`", before))
            if lang == "yaml" and len(paths) == 1:
                named[paths.pop()] = (doc_id(doc), text)
    return named


def config_kind(data: object) -> str | None:
    """'sweep', 'experiment' or None (a YAML block that is neither)."""
    if not isinstance(data, dict) or not data:
        return None
    if "space" in data:
        return "sweep"
    return "experiment" if set(data) <= set(ExperimentConfig.model_fields) else None


def check_config_text(text: str, kind: str, overrides: list[str], scratch: Path) -> None:
    """Validates an experiment config or a sweep file (a sweep's base resolved in configs/,
    where a sweep file lives, and checked at the ends of every searched range)."""
    path = scratch / "shown.yaml"
    path.write_text(text)
    if kind == "experiment":
        load_config(path, overrides)
        return
    from depthkd.tune.spec import SweepConfig
    from depthkd.tune.sweep import base_experiment

    spec = load_config(path, overrides, model=SweepConfig)
    if spec.base.config is not None and not spec.base.config.is_absolute():
        base = spec.base.model_copy(update={"config": REPO / "configs" / spec.base.config})
        spec = spec.model_copy(update={"base": base})
    base_experiment(spec)


def _submodel(annotation: object) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_mapping(annotation: object) -> bool:
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    return any(typing.get_origin(a) is dict for a in (annotation, *options))


def config_key_exists(key: str) -> bool:
    """Whether `a.b.c` names a config key (`*` matches any stage first, anything after)."""
    parts = key.split(".")
    if parts[0] == "*":
        return any(config_key_exists(key.replace("*", stage, 1)) for stage in STAGE_SECTIONS)
    model: type[BaseModel] = ExperimentConfig
    for i, part in enumerate(parts):
        if part == "*":
            return True
        field = model.model_fields.get(part)
        if field is None:
            return False
        rest = parts[i + 1 :]
        if part == "losses" and issubclass(model, StageConfig):
            return not rest or (len(rest) == 1 and rest[0] in {"*", *LOSS_TERMS[model.STAGE]})
        sub = _submodel(field.annotation)
        if sub is None:
            return not rest or (len(rest) == 1 and _is_mapping(field.annotation))
        model = sub
    return True


def shown_config_keys(markdown: str) -> list[str]:
    """Dotted config keys in inline code (`distill.optim.lr`, `data.shards=...`, `*.steps`)."""
    sections = "|".join(map(re.escape, ["*", *ExperimentConfig.model_fields]))
    pattern = re.compile(rf"^((?:{sections})(?:\.(?:[A-Za-z_]\w*|\*))+)(?:[=:].*)?$")
    keys = []
    for span in inline_spans(markdown):
        for token in span.split():
            match = pattern.match(token.strip("(),"))
            if match and match.group(1).rsplit(".", 1)[-1] not in FILE_SUFFIXES:
                keys.append(match.group(1))
    return keys


def _defines(source: str, name: str) -> bool:
    return bool(re.search(rf"^\s*(?:def|class)\s+{name}\b|^{name}\s*[:=]", source, flags=re.M))


def python_name_exists(dotted: str) -> bool:
    """Whether `depthkd.a.b[.Name[.attr]]` is a module, or a name a module defines, in the
    repository under the import root."""
    root = next(r for r in IMPORT_ROOTS if dotted == r or dotted.startswith(r + "."))
    folder = REPO / IMPORT_ROOTS[root]
    parts = dotted.removeprefix(root).lstrip(".").split(".") if dotted != root else []
    for i, part in enumerate(parts):
        if (folder / part / "__init__.py").is_file():
            folder = folder / part
            continue
        if (folder / f"{part}.py").is_file():
            names, source = parts[i + 1 :], (folder / f"{part}.py").read_text()
        else:
            names, source = parts[i:], (folder / "__init__.py").read_text()
        return len(names) <= 2 and all(_defines(source, n) for n in names)
    return (folder / "__init__.py").is_file()


def shown_python_names(markdown: str) -> list[str]:
    """`depthkd.` modules and names in inline code, and what `python` blocks import."""
    names = [
        span.split("(")[0]
        for span in inline_spans(markdown)
        if re.fullmatch(r"depthkd(?:\.[A-Za-z_]\w*)+(?:\(.*\))?", span)
    ]
    for lang, text, _ in fenced_blocks(markdown):
        if lang != "python":
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module:
                names += [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
    return names


def _commands() -> list[tuple[str, list[str]]]:
    return [(doc_id(doc), w) for doc in DOCS for w in shown_commands(doc.read_text()) if w]


def _yaml_blocks() -> list[tuple[str, str]]:
    return [
        (doc_id(doc), text)
        for doc in DOCS
        for lang, text, _ in fenced_blocks(doc.read_text())
        if lang in ("yaml", "yml")
    ]


# --- the tests ---------------------------------------------------------------------------------


def test_the_docs_show_the_commands_users_start_with() -> None:
    def paths(docs: list[Path]) -> set[str]:
        shown = (w for doc in docs for w in shown_commands(doc.read_text()))
        return {" ".join(subcommand(parser(), words)[0]) for words in shown}

    walkthrough = {"data split", "data prepare", "data upload", "data verify", "tracking-server"}
    walkthrough |= {"distill", "sweep", "promote", "export"}
    assert walkthrough <= paths([README])
    assert {"bench kd", "pseudo-label", "evaluate", "predict"} <= paths(DOCS)


@pytest.mark.parametrize(
    ("doc", "words"), _commands(), ids=[f"{d}: {' '.join(w)[:60]}" for d, w in _commands()]
)
def test_a_shown_command_exists_with_its_options(doc: str, words: list[str], tmp_path) -> None:
    shown = f"{doc}: `depthkd {' '.join(words)}`"
    path, sub = subcommand(parser(), words)
    assert path or words == ["--help"], f"{shown}: no such command"
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args([*path, "--help"])
    assert exit_info.value.code == 0
    known = {s for action in sub._actions for s in action.option_strings}
    options = {w.split("=")[0] for w in words[len(path) :] if w.startswith("--")}
    assert options <= known, f"{shown}: unknown options {options - known}"
    if path == ["promote"] and "--version" not in words:
        assert "--config" in words, f"{shown}: the gate judges on the config it is given"
    config_option = next((a for a in sub._actions if "--config" in a.option_strings), None)
    if config_option is None or not config_option.help:
        return
    kind = config_option.help.split(" YAML")[0]  # 'experiment' or 'sweep'
    overrides = [w for w in words[len(path) :] if OVERRIDE.match(w)]
    if words[-1] == "--config":
        return  # `--config ...`: the file is left out in prose
    config = words[words.index("--config") + 1] if "--config" in words else None
    if config is None:
        if kind == "experiment":
            load_config(config_option.default or DEFAULT_CONFIG, overrides)
        elif overrides:
            check_config_text(config_option.default.read_text(), "sweep", overrides, tmp_path)
        return
    if not config.startswith("configs/"):
        return  # a user's own file (`.../best.yaml`): only its overrides' form was checked
    if (REPO / config).is_file():
        check_config_text((REPO / config).read_text(), kind, overrides, tmp_path)
        return
    named = named_blocks()
    assert config in named, f"{shown}: {config} is neither in the repository nor shown in a doc"
    check_config_text(named[config][1], kind, overrides, tmp_path)


@pytest.mark.parametrize(
    ("doc", "text"), _yaml_blocks(), ids=[f"{d}: {t[:40]}" for d, t in _yaml_blocks()]
)
def test_a_shown_config_validates(doc: str, text: str, tmp_path) -> None:
    data = yaml.safe_load(text)
    kind = config_kind(data)
    if kind is not None:
        check_config_text(text, kind, [], tmp_path)
    for path, (where, shown) in named_blocks().items():
        if where == doc and shown == text and (REPO / path).is_file():
            assert data == yaml.safe_load((REPO / path).read_text()), f"{doc}: not {path} as it is"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_val_is_carved_before_train_shards_are_written(doc: Path) -> None:
    """A real dataset's train shards come from the list `depthkd data split` left after carving
    val out, never from the shipped train list (its val frames would be train frames too)."""
    carved = False
    for words in shown_commands(doc.read_text()):
        path, _ = subcommand(parser(), words)
        carved |= path == ["data", "split"]
        if path != ["data", "prepare"] or not {"kitti", "nyu"} & set(words):
            continue
        if "--split" in words and words[words.index("--split") + 1] == "train":
            shown = f"{doc_id(doc)}: `depthkd {' '.join(words)}`"
            split_file = words[words.index("--split-file") + 1] if "--split-file" in words else ""
            assert carved, f"{shown}: carve val out first (`depthkd data split`, shown before)"
            assert not split_file.endswith("_train_files_with_gt.txt"), (
                f"{shown}: the train shards must come from the carved list, not the full one"
            )


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_named_config_keys_exist(doc: Path) -> None:
    missing = [k for k in shown_config_keys(doc.read_text()) if not config_key_exists(k)]
    assert not missing, f"{doc_id(doc)}: no such config key: {', '.join(missing)}"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_python_names_use_the_depthkd_root_and_exist(doc: Path) -> None:
    text = doc.read_text()
    old = [
        token
        for span in inline_spans(text)
        for token in span.split()
        if re.fullmatch(rf"(?:{'|'.join(FOLDER_ROOTS)})(?:\.[A-Za-z_]\w*)+", token)
        and token.rsplit(".", 1)[-1] not in FILE_SUFFIXES
    ]
    names = shown_python_names(text)
    old += [n for n in names if n.split(".")[0] in FOLDER_ROOTS]
    assert not old, f"{doc_id(doc)}: import with the depthkd root: {', '.join(old)}"
    missing = [n for n in names if n.startswith("depthkd") and not python_name_exists(n)]
    assert not missing, f"{doc_id(doc)}: not in the repository: {', '.join(missing)}"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_known_mistakes_stay_fixed(doc: Path) -> None:
    text = doc.read_text()
    for lang, block, _ in fenced_blocks(text):
        if lang == "mermaid":
            continue
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if "mlflow models serve" in line and not line.lstrip().startswith("#"):
                port = re.search(r"(?:--port|-p)[ =](\d+)", line)
                assert port and port.group(1) != "5000", (
                    f"{doc_id(doc)}: `{line.strip()}` must serve on a port other than the "
                    "tracking server's 5000"
                )
    for store in re.findall(r"sqlite:///[^\s`'\"]+", text):
        assert store.startswith(("sqlite:///${DEPTHKD_HOME:-.depthkd}/", "sqlite:////")), (
            f"{doc_id(doc)}: {store} (the store is under $DEPTHKD_HOME, default ./.depthkd)"
        )


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_relative_links_point_to_existing_files(doc: Path) -> None:
    text = re.sub(r"`[^`]*`", "", prose(doc.read_text()))
    broken = []
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https://, mailto:
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        heading_missing = resolved.suffix == ".md" and anchor and anchor not in anchors(resolved)
        if not resolved.exists() or heading_missing:
            broken.append(target)
    assert not broken, f"{doc_id(doc)}: broken links: {', '.join(broken)}"


def test_the_readme_is_read_in_an_hour() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md: {lines} lines, at most {README_MAX_LINES}"


def test_the_collector_finds_commands_in_code_only() -> None:
    text = (
        "installs depthkd with dev extras\n"
        "Run `depthkd distill data.batch_size=4` or `depthkd bench kd [--seeds 3]`\n"
        "```bash\nray job submit -- python pipelines/sweep.py --config \\\n  c.yaml\n"
        "# a comment naming depthkd promote\npython pipelines/prepare_data.py --split x\n```\n"
        '```mermaid\nflowchart LR\n  A["depthkd promote"]\n```\n'
    )
    assert shown_commands(text) == [
        ["sweep", "--config", "c.yaml"],
        ["data", "prepare", "--split", "x"],
        ["distill", "data.batch_size=4"],
        ["bench", "kd", "--seeds", "3"],
    ]


def test_the_key_and_name_checks_catch_what_they_should() -> None:
    assert config_key_exists("acclimate.optim.backbone_lr_mult")
    assert config_key_exists("*.optim.lr")
    assert config_key_exists("distill.losses.pseudo_silog")
    assert config_key_exists("train.resources.depthkd_worker")
    assert not config_key_exists("acclimate.backbone_lr_mult")
    assert not config_key_exists("cross_distill.bypass_schedule")
    assert not config_key_exists("distill.losses.silog_ghost")
    assert shown_config_keys("`train.workers=8 train.use_gpu=true` `splits/train.txt`") == [
        "train.workers",
        "train.use_gpu",
    ]
    assert python_name_exists("depthkd.eval.tta.predict_with_flip")
    assert python_name_exists("depthkd.models.urcdc.CrossDistillModel.export_student")
    assert not python_name_exists("depthkd.eval.tta.no_such_function")
    assert slug("What `prepare` guarantees") == "what-prepare-guarantees"
