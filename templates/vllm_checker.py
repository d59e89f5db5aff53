"""Runs INSIDE the recipe's image (or a local venv), with that vLLM: parse and validate `vllm serve` argvs.

Standalone on purpose (no runrecipe import): tasks/ops/vllm_check.py hands it to the image's python with
`-c`, the argvs as JSON on stdin, and reads one JSON line marked RESULT_MARK from stdout. The parser
is built the way the `vllm` command builds it, looked up by what the installed package offers, so
releases that moved a module still work. Nothing loads a model or reaches the network.
"""
import contextlib
import importlib
import io
import json
import os
import re
import sys

RESULT_MARK = "RUNRECIPE-VLLM-CHECK "
# HF_HUB_OFFLINE stays unset: with it, building the engine arguments looks the model up in the local
# cache (and fails for weights not downloaded yet); without it nothing reads the hub at this stage,
# and the container has no network anyway
for _key, _value in {"VLLM_TARGET_DEVICE": "cpu", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                     "VLLM_LOGGING_LEVEL": "ERROR", "CUDA_VISIBLE_DEVICES": ""}.items():
    os.environ.setdefault(_key, _value)
os.environ.pop("HF_HUB_OFFLINE", None)

# names only the engine or server checks when it starts: flag -> where the installed vLLM keeps its names
ENGINE_NAMES = {
    "attention_backend": ("--attention-backend", [("vllm.v1.attention.backends.registry", "AttentionBackendEnum"),
                                                   ("vllm.attention.backends.registry", "AttentionBackendEnum"),
                                                   ("vllm.attention.backends.registry", "_Backend"),
                                                   ("vllm.platforms.interface", "_Backend")]),
    "kv_cache_dtype": ("--kv-cache-dtype", [("vllm.config.cache", "CacheDType"), ("vllm.config", "CacheDType")]),
    "load_format": ("--load-format", [("vllm.model_executor.model_loader", "_LOAD_FORMAT_TO_MODEL_LOADER"),
                                      ("vllm.model_executor.model_loader", "LoadFormats"),
                                      ("vllm.config", "LoadFormat")]),
    "tool_call_parser": ("--tool-call-parser", [("vllm.tool_parsers", "ToolParserManager"),
                                                ("vllm.entrypoints.openai.tool_parsers", "ToolParserManager")]),
    "reasoning_parser": ("--reasoning-parser", [("vllm.reasoning", "ReasoningParserManager")]),
}
PLUGIN_FLAGS = {"tool_call_parser": ("tool_parser_plugin", "import_tool_parser"),
                "reasoning_parser": ("reasoning_parser_plugin", "import_reasoning_parser")}


def first(candidates):
    """The first (module, name) the installed package has, or None."""
    for module, name in candidates:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return None


def names_of(thing):
    """Every name a registry object offers: an Enum, a Literal, a list function or a parser manager."""
    import typing

    if thing is None:
        return None
    if isinstance(thing, dict):
        return set(thing)
    if isinstance(thing, type) and hasattr(thing, "__members__"):
        return {n for n in thing.__members__}
    if typing.get_args(thing):
        return {str(a) for a in typing.get_args(thing)}
    if callable(thing) and not isinstance(thing, type):
        return set(thing())
    found = set()
    for attr in ("tool_parsers", "reasoning_parsers", "lazy_parsers", "_lazy_parsers"):
        if isinstance(getattr(thing, attr, None), dict):
            found |= set(getattr(thing, attr))
    if hasattr(thing, "list_registered"):
        found |= set(thing.list_registered())
    return found or None


def build_parser():
    """`vllm serve`'s parser, as vllm's own main builds it; (parser, serve subcommand)."""
    parser_cls = first([("vllm.utils.argparse_utils", "FlexibleArgumentParser"), ("vllm.utils", "FlexibleArgumentParser")])
    serve = first([("vllm.entrypoints.cli.serve", "ServeSubcommand")])
    if parser_cls is None or serve is None:
        raise LookupError("it has no FlexibleArgumentParser or entrypoints.cli.serve.ServeSubcommand "
                          "(vLLM before 0.8 or a different build)")
    parser = parser_cls(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    cmd = serve()
    cmd.subparser_init(subparsers).set_defaults(dispatch_function=cmd.cmd)
    return parser, cmd


def flag_in(message, argv):
    """The flag an error is about: argparse names it; a bare exception is matched against the words."""
    m = re.search(r"unrecognized arguments?: (\S+)", message) or re.search(r"argument ([^:/ ]+)", message)
    if m:
        return m.group(1)
    m = re.search(r"\(parameter=(\w+)\)", message)  # vLLM's own validation errors name the field
    if m:
        return "--" + m.group(1).replace("_", "-")
    quoted = set(re.findall(r"'([^']+)'", message)) | set(re.findall(r'"([^"]+)"', message))
    for i, word in enumerate(argv):
        if word.startswith("-") and any(q in word or (i + 1 < len(argv) and q == argv[i + 1]) for q in quoted):
            return word.split("=", 1)[0]
    return None


def engine_warnings(args):
    out = []
    for attr, (flag, where) in ENGINE_NAMES.items():
        value = getattr(args, attr, None)
        if value in (None, "", "auto"):
            continue
        plugin = PLUGIN_FLAGS.get(attr)
        known = names_of(first(where))
        if known is not None and plugin and getattr(args, plugin[0], None):
            try:  # a parser plugin file registers more names, as the server does at start
                getattr(first(where), plugin[1])(getattr(args, plugin[0]))
                known = names_of(first(where))
            except Exception as exc:  # noqa: BLE001 - the plugin is the image's code
                out.append({"flag": plugin[0].replace("_", "-").join(("--", "")),
                            "message": f"the plugin could not be loaded: {type(exc).__name__}: {exc}"})
                continue
        value_text = getattr(value, "name", str(value))
        if known is not None and value_text not in known and value_text.upper() not in known:
            out.append({"flag": flag, "message": f"'{value_text}' is not a name this vLLM knows "
                        f"(it has: {', '.join(sorted(known)[:12])}{', ...' if len(known) > 12 else ''})"})
    return out


MAX_ERRORS = 20


def check_one(parser, cmd, argv):
    """One argv (the words after `vllm serve`), every refused flag of it: argparse and vLLM stop at the first
    problem, so each refused flag (with its value) is taken out and the rest asked again."""
    errors, rest = [], list(argv)
    for _ in range(MAX_ERRORS):
        result = check_once(parser, cmd, rest)
        if result["ok"]:
            return {"ok": not errors, "errors": errors, "warnings": result["warnings"]}
        found = refused(result, rest)
        errors += found
        if not found or not any(e.get("words") for e in found):
            break
        taken = [w for e in found for w in e.pop("words")]
        rest = [w for i, w in enumerate(rest) if i not in taken]
    for e in errors:
        e.pop("words", None)
    return {"ok": False, "errors": errors, "warnings": []}


def refused(result, argv):
    """The errors of one failed check, each with the argv positions (`words`) to leave out next time."""
    message = result["message"]
    if message.startswith("unrecognized arguments: "):
        words = message.split(": ", 1)[1].split()
        out, used = [], set()
        for word in words:
            at = next((i for i, w in enumerate(argv) if w == word and i not in used), None)
            if at is None:
                continue
            used.add(at)
            if word.startswith("-"):
                out.append({"stage": result["stage"], "flag": word.split("=", 1)[0],
                            "message": f"unrecognized arguments: {word}", "words": [at]})
            elif out:
                out[-1]["words"].append(at)  # an unknown option's value
        return out or [dict(result, words=[])]
    flag = result.get("flag")
    at = next((i for i, w in enumerate(argv) if flag and w.split("=", 1)[0] == flag), None)
    if at is None:
        return [dict(result, words=[])]
    words = [at] if "=" in argv[at] or at + 1 >= len(argv) or argv[at + 1].startswith("-") else [at, at + 1]
    return [dict(result, words=words)]


def check_once(parser, cmd, argv):
    """One try of an argv: parse, validate, build the engine arguments."""
    stage, err = "parse", io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(["serve", *argv])
        stage = "validate"
        with contextlib.redirect_stderr(err):
            if hasattr(cmd, "validate"):
                cmd.validate(args)
            engine_args = first([("vllm.engine.arg_utils", "AsyncEngineArgs")])
            if engine_args is not None:
                engine_args.from_cli_args(args)
    except SystemExit as exc:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        message = lines[-1] if lines else f"exit status {exc.code}"
        message = re.sub(r"^[\w .-]*: error: ", "", message)
        return {"ok": False, "stage": stage, "flag": flag_in(message, argv), "message": message}
    except Exception as exc:  # noqa: BLE001 - a bare KeyError from -cc is a rejection too
        message = f"{type(exc).__name__}: {exc}".strip()
        return {"ok": False, "stage": stage, "flag": flag_in(message, argv), "message": message}
    return {"ok": True, "warnings": engine_warnings(args)}


def version():
    try:
        from importlib.metadata import version as dist_version

        return dist_version("vllm")
    except Exception:  # noqa: BLE001 - absent or broken metadata
        return "?"


def main():
    argvs = json.load(sys.stdin)
    result = {"version": version()}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import vllm  # noqa: F401

            result["version"] = getattr(vllm, "__version__", result["version"])
            parser, cmd = build_parser()
    except Exception as exc:  # noqa: BLE001 - absent, too old or too different: say so, never fail the run
        result["cannot"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        print(RESULT_MARK + json.dumps(result), flush=True)
        return
    with contextlib.redirect_stdout(io.StringIO()):
        result["results"] = [check_one(parser, cmd, argv) for argv in argvs]
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
