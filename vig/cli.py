"""The one convention of every command line here (workflow_scripts/*.py, `python -m vig.convert`).

- Flags are spelled as in the seed model zoo, with underscores (`--device_id`, `--vig_config`); the
  dashed spellings (`--device-id`) are accepted as aliases.
- Bad input (a flag, a file, a config key or value) ends the program before any expensive work with
  one message on stderr, `<prog>: error: <what is wrong, naming the file/key/value, and what is
  expected>` (a list of problems follows on indented lines), and exit status 2 (argparse's own status
  for a bad flag). A check that ran and failed (the parity gate, an exported file that does not
  reproduce its network) prints the same form and exits 1. No traceback for either.
- Every key of the model config is also a flag, as in the seed's `src/args.py` (`--epochs 3` is
  `--set epochs=3`), so the seed's command lines run unchanged.
"""
from __future__ import annotations

import argparse
import sys
import textwrap

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class UsageError(ValueError):
    """Bad command-line input (a missing file, an impossible combination of flags)."""


def underscore_flags(argv: list[str], known: set[str]) -> list[str]:
    """`--device-id 0` / `--device-id=0` -> `--device_id ...` when `--device_id` is an option."""
    out = []
    for i, word in enumerate(argv):
        if word == "--":
            return out + argv[i:]
        flag, eq, value = word.partition("=")
        if flag.startswith("--") and "-" in flag[2:]:
            underscored = "--" + flag[2:].replace("-", "_")
            if underscored in known:
                word = underscored + eq + value
        out.append(word)
    return out


class Parser(argparse.ArgumentParser):
    """argparse with the dashed aliases of the underscore flags and the description shown as written."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("epilog", "Flags may also be spelled with dashes (--device-id = --device_id). Exit "
                                    "status 2: bad input ('PROG: error: ...'); 1: a check failed.")
        super().__init__(*args, **kwargs)

    def option_strings(self) -> set[str]:
        return {flag for action in self._actions for flag in action.option_strings}

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(underscore_flags(args, self.option_strings()), namespace)


def seed_value(raw: str) -> str:
    """The seed's list flags are comma-separated (`--beta 0.9,0.999`); make them YAML lists."""
    if "," in raw and not raw.lstrip().startswith(("[", "{")):
        return f"[{raw}]"
    return raw


class _KeyOverride(argparse.Action):
    """`--KEY VALUE` for a model-config key: appended to --set's list, so the order on the line decides."""

    def __call__(self, parser, namespace, values, option_string=None):
        overrides = list(getattr(namespace, "overrides", None) or [])
        overrides.append(f"{self.metavar}={seed_value(values)}")
        setattr(namespace, "overrides", overrides)


def add_config_key_flags(parser: Parser, keys) -> None:
    """One `--KEY VALUE` flag per model-config key the script does not already define as its own flag."""
    taken = parser.option_strings()
    free = [key for key in keys if f"--{key}" not in taken]
    group = parser.add_argument_group(
        "model config keys as flags (as the seed's src/args.py)",
        textwrap.fill("--KEY VALUE overrides one key of --vig_config, like --set KEY=VALUE (a YAML value; lists "
                      "also as the seed writes them, --beta 0.9,0.999). Keys: " + ", ".join(free), 100))
    from .config import RENAMED_KEYS

    for key in free + [old for old in RENAMED_KEYS if f"--{old}" not in taken]:  # an old name: the config error
        group.add_argument(f"--{key}", action=_KeyOverride, metavar=key, dest=f"key_{key}",
                           help=argparse.SUPPRESS)


def run_cli(main, argv=None, *, prog: str, bad_input=(), failures=()) -> int:
    """`main(argv)` -> its exit status; `bad_input` exceptions become exit 2, `failures` exit 1, both as
    one `prog: error: ...` line. UsageError and the config's ConfigError are always bad input."""
    from .config import ConfigError

    try:
        status = main(argv)
        return 0 if status is None else int(status)
    except tuple(failures) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (UsageError, ConfigError, *bad_input) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def given_keys(args) -> set[str]:
    """Model-config keys the user set: in the --vig_config YAML or on the command line (not defaults)."""
    import yaml

    from .config import parse_override

    with open(args.vig_config) as fh:
        raw = yaml.safe_load(fh) or {}
    return set(raw) | {parse_override(item)[0] for item in getattr(args, "overrides", [])}


def device_missing(target: str) -> str | None:
    """Why `target` cannot run here (None when it can; CPU always can)."""
    if target == "CPU":
        return None
    import mindspore as ms

    if ms.hal.is_available(target):
        return None
    return f"device_target {target}: this machine has no {target} device (mindspore.hal.is_available('{target}') is False)"


def stop_without_device(target: str, plan: str) -> None:
    """Print what would run on `target` and stop with why, when this machine lacks that device."""
    missing = device_missing(target)
    if missing:
        print(plan, flush=True)
        raise UsageError(f"{missing}; the plan above is what would run on a machine with one; use "
                         f"--device_target CPU to run here")
