"""``autoperf`` / ``python -m autoperf``: run, validate, schema, and the analysis commands."""
from __future__ import annotations

import argparse
import atexit
import os
import sys

_RUN_VALUE_OPTIONS = {"--config", "--log-dir", "--disable", "--simulate"}

RUN_USAGE = ("autoperf run [--config PATH] [--log-dir DIR] [--console | --no-console] "
             "[--disable NAME] [--simulate SCENARIO] [--summary] (script.py | -m module) [args ...]")


def _run_parser():
    parser = argparse.ArgumentParser(
        prog="autoperf run", usage=RUN_USAGE,
        description="Run a Python program with autoperf instrumentation, exactly as `python` would.")
    parser.add_argument("--config", help="autoperf.yaml (default: $AUTOPERF_CONFIG, ./autoperf.yaml, "
                                         "else next to the script)")
    parser.add_argument("--log-dir", help="directory for performance_{date}.log (default: log.dir or ./logs)")
    console = parser.add_mutually_exclusive_group()
    console.add_argument("--console", dest="console", action="store_true", default=None,
                         help="show records on stderr (default: log.console; auto = when stderr is a terminal)")
    console.add_argument("--no-console", dest="console", action="store_false")
    parser.add_argument("--disable", action="append", default=[], metavar="NAME",
                        help="turn off an integration, a feature (stats, alerts, store, export) or a target (by name or "
                             "target string); repeatable")
    parser.add_argument("--simulate", metavar="SCENARIO",
                        help="run the bot against a loopback Discord playing SCENARIO (YAML)")
    parser.add_argument("--summary", action="store_true",
                        help="print a per-flow summary and the log path when the program ends")
    return parser


def _split_run_argv(argv):
    """Options before the program; the program (script or -m module) and its own arguments after."""
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "-m":
            if i + 1 >= len(argv):
                return argv[:i], None, None, []
            return argv[:i], None, argv[i + 1], argv[i + 2:]
        if tok == "--":
            if i + 1 >= len(argv):
                return argv[:i], None, None, []
            return argv[:i], argv[i + 1], None, argv[i + 2:]
        if tok in _RUN_VALUE_OPTIONS:
            i += 2
            continue
        if tok.startswith("-"):
            i += 1
            continue
        return argv[:i], tok, None, argv[i + 1:]
    return argv, None, None, []


def _unknown_disable_names(names, cfg):
    """The error for ``--disable`` names that match nothing (a typo would silently measure with the
    component on), or None."""
    from autoperf import bootstrap, integrations
    features = [name for name, _ in bootstrap.FEATURES]
    known = set(integrations.BY_NAME) | set(features)
    for spec in cfg.targets:
        known.update(n for n in (spec.name, spec.target) if n)
    bad = [n for n in names if n not in known]
    if not bad:
        return None
    return (f"autoperf: --disable {', '.join(bad)}: no integration, feature or target of that name "
            f"(integrations: {', '.join(sorted(integrations.BY_NAME))}; features: {', '.join(features)}; "
            f"targets: by name or target string, as in {cfg.path or 'the config'})")


def cmd_run(argv) -> int:
    options, script, module, args = _split_run_argv(argv)
    parser = _run_parser()
    opts = parser.parse_args(options)  # exits 2 with the usage on a bad option
    if script is None and module is None:
        parser.error("a script or -m module is required")

    from autoperf import bootstrap, runner
    from autoperf.config import ConfigError, find_config, load_config

    path = find_config(opts.config, script)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            sys.stderr.write(f"autoperf: {line}\n")
        sys.stderr.write("autoperf: the program was not started\n")
        return 2

    unknown = _unknown_disable_names(opts.disable, cfg)
    if unknown:
        sys.stderr.write(unknown + "\nautoperf: the program was not started\n")
        return 2

    atexit.register(_die_by_sigint_if_interrupted)   # first registered: runs after every other exit handler
    from autoperf import current
    token = current.mute()      # autoperf run's own work is no span: only the program (runner._execute) is
    try:
        log_dir = os.path.abspath(opts.log_dir or os.environ.get(bootstrap.ENV_LOG_DIR)
                                  or cfg.data.get("log", {}).get("dir") or "logs")
        # install() decides about the console from this process's environment: export to the
        # children (whose console stays off) only afterwards.
        bootstrap.install(cfg, log_dir=log_dir, console=opts.console, disable=opts.disable)
        _export_to_children(path, log_dir, opts.disable)
        if opts.summary:
            from autoperf import summary
            summary.install()

        runner.wrapped_targets = any(spec.enabled for spec in cfg.targets)
        if module is not None:
            program = lambda: runner.run_module(module, args, lambda name: bootstrap.main_specs(name))
        else:
            program = lambda: runner.run_path(script, args, bootstrap.main_specs(runner.script_module_name(script)))
        if opts.simulate:
            from autoperf import simulate
            code = simulate.run(opts.simulate, program)
        else:
            code = program()
        # No flush here: the exit handlers' final flush writes everything up to the stop, once (a flush
        # here too would drain a busy daemon thread's backlog twice before the process may exit).
        if opts.summary:
            from autoperf import summary
            summary.print_summary(bootstrap.log_path())
        return code
    finally:
        current.unmute(token)


def _die_by_sigint_if_interrupted():
    """An uncaught KeyboardInterrupt ends python by SIGINT once exit handlers ran (a shell or a
    supervisor sees the signal, not exit code 130): the same here."""
    from autoperf import runner
    if not runner.interrupted:
        return
    import signal
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def _export_to_children(config_path, log_dir, disabled):
    """Child Python processes load our sitecustomize and instrument themselves the same way."""
    from autoperf import bootstrap

    env = os.environ
    env[bootstrap.ENV_CHILD] = "1"
    if config_path is not None:
        env[bootstrap.ENV_CONFIG] = os.path.abspath(config_path)
    env[bootstrap.ENV_LOG_DIR] = log_dir
    if disabled:
        env[bootstrap.ENV_DISABLE] = ",".join(disabled)
    env.setdefault(bootstrap.ENV_CONSOLE, "0")  # one console: the parent's
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != bootstrap.BOOTSTRAP_DIR]
    env["PYTHONPATH"] = os.pathsep.join([bootstrap.BOOTSTRAP_DIR, *paths])


def cmd_schema(opts) -> int:
    import json

    from autoperf.config import json_schema
    print(json.dumps(json_schema(), indent=2))
    return 0


DESCRIPTION = ("autoperf: run a program instrumented (autoperf run), check its config, and read, report and "
               "check what it recorded.")


def build_parser():
    parser = argparse.ArgumentParser(prog="autoperf", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run a program instrumented (autoperf run --help)", add_help=False)
    from autoperf import tail, validate
    validate.register(sub)
    tail.register(sub)
    schema = sub.add_parser("schema", help="print the JSON Schema of autoperf.yaml")
    schema.set_defaults(handler=cmd_schema)
    for register in (_register_analysis, _register_store, _register_metrics_endpoint):   # each feature adds its own subcommands
        try:
            register(sub)
        except ImportError:
            continue
    return parser


def _register_analysis(sub):
    from autoperf.analysis import cli
    cli.register(sub)


def _register_store(sub):
    from autoperf.store import cli
    cli.register(sub)


def _register_metrics_endpoint(sub):
    from autoperf.export.prometheus import cli
    cli.register(sub)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        if argv[1:2] in (["-h"], ["--help"]):
            _run_parser().print_help()
            return 0
        return cmd_run(argv[1:])
    parser = build_parser()
    opts = parser.parse_args(argv)
    handler = getattr(opts, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        code = handler(opts)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``autoperf schema | head``): stop quietly. Python flushes stdout
        # again at exit, so point it at /dev/null first (the recipe of Python's signal docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
